"""Convolutional recurrent cells: the state is a feature map, the gates are convolutions.

ConvLSTM is Shi et al. 2015 (arXiv 1506.04214, eq. 3); ConvGRU is the GRU of Cho et al.
2014 with its matrix products replaced by convolutions (Ballas et al. 2016). Inputs at
each step are (*batch, *spatial, C_in) and the state (*batch, *spatial, H): 1-D
(``spatial_shape=(L,)``) or 2-D (``(height, width)``) maps, channels last. Both are
ordinary cells (``seqlab.scan``, ``RNNLayer``, ``seq_lengths``, ``remat`` and
``seqlab.analysis`` work on them unchanged) and are differentiated by autodiff. Both
offer the input convolution of all steps as one convolution before the loop
(``project_inputs``), like the input projection of the affine cells.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

from seqlab._checks import require
from seqlab._convolution import convolve as _lax_convolve
from seqlab._convolution import convolve_by_taps
from seqlab.cells._affine import add_bias
from seqlab.cells._base import check_hidden_size, check_input_size
from seqlab.cells._lstm import LSTMState
from seqlab.typing import Array, Carry, Params, PRNGKey, Shape

# Backends on which the cells convolve by stacking shifted copies and one matmul
# (``seqlab._convolution.convolve_by_taps``): on XLA's CPU backend a convolution's
# gradients inside a rolled scan loop ran 16x slower than unrolled, and this form 5x
# faster than lax's convolution there (measured in its docstring). Elsewhere (cuDNN on a
# GPU) lax's convolution. Both give the same numbers (tests/test_conv_cells.py).
BY_TAPS_BACKENDS = ("cpu",)


def convolve(x: Array, kernel: Array) -> Array:
    """The cells' stride-1, centered convolution, by the measured method for the backend."""
    if jax.default_backend() in BY_TAPS_BACKENDS:
        return convolve_by_taps(x, kernel)
    return _lax_convolve(x, kernel)


def _ints(value):
    """NumPy integers (alone or in a list or tuple) as Python ints; anything else as is,
    for the checks to name."""

    def one(item):
        is_integer = isinstance(item, numbers.Integral) and not isinstance(item, bool)
        return int(item) if is_integer else item

    return type(value)(map(one, value)) if isinstance(value, list | tuple) else one(value)


def _conv_init(key: PRNGKey, kernel_shape: tuple[int, ...]) -> Array:
    """LeCun normal over the kernel's fan-in (taps x input channels), Flax's Conv default."""
    fan_in = math.prod(kernel_shape[:-1])
    return jax.random.normal(key, kernel_shape, jnp.float32) / math.sqrt(fan_in)


@dataclasses.dataclass(frozen=True)
class _ConvCell:
    """What ConvLSTM and ConvGRU share: the sizes, the parameter layout, the input side.

    Args:
      hidden_size: H, the channels of the state map.
      spatial_shape: the input frames' spatial size, e.g. (32, 32) or (64,): the state map
        has this size (the gate convolutions keep it: stride 1, centered padding).
      kernel_size: one int (the same on every spatial axis) or one per axis.
    """

    hidden_size: int
    spatial_shape: tuple[int, ...] = ()
    kernel_size: int | tuple[int, ...] = 3

    num_gates = 0  # set by each cell
    jacobian_structure = "dense"

    def __post_init__(self):
        check_hidden_size("hidden_size", self.hidden_size)
        spatial = _ints(self.spatial_shape)
        require(
            isinstance(spatial, list | tuple)
            and 1 <= len(spatial) <= 3
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in spatial),
            f"{type(self).__name__} needs spatial_shape, the positive spatial size of its input "
            f"frames, e.g. (32, 32) or (64,) (1 to 3 axes); got {spatial!r}",
        )
        object.__setattr__(self, "spatial_shape", tuple(spatial))
        kernel = _ints(self.kernel_size)
        kernel = (kernel,) * len(spatial) if isinstance(kernel, int) else kernel
        require(
            isinstance(kernel, list | tuple)
            and len(kernel) == len(spatial)
            and all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in kernel),
            f"kernel_size must be a positive int or one per spatial axis ({len(spatial)}), got "
            f"{self.kernel_size!r}",
        )
        object.__setattr__(self, "kernel_size", tuple(kernel))

    def _init_convolutions(self, key: PRNGKey, input_size: int) -> dict:
        check_input_size(input_size)
        k_x, k_h = jax.random.split(key)
        width = self.num_gates * self.hidden_size
        return {
            "w_x": _conv_init(k_x, (*self.kernel_size, input_size, width)),
            "w_h": _conv_init(k_h, (*self.kernel_size, self.hidden_size, width)),
        }

    def input_size(self, params: Params) -> int:
        return int(params["w_x"].shape[-2])

    def _state(self, params: Params, batch_shape: Shape) -> Array:
        dtype = params["w_h"].dtype
        return jnp.zeros((*batch_shape, *self.spatial_shape, self.hidden_size), dtype)

    def _check_frame(self, x: Array) -> None:
        spatial = tuple(x.shape[-len(self.spatial_shape) - 1 : -1])
        require(
            spatial == self.spatial_shape,
            f"{type(self).__name__} was built for frames of spatial shape {self.spatial_shape}; "
            f"got inputs of shape {tuple(x.shape)} (spatial {spatial})",
        )

    def project_inputs(self, params: Params, xs: Array) -> Array:
        """The input convolution plus bias, for inputs with any leading axes."""
        self._check_frame(xs)
        return add_bias(convolve(xs, params["w_x"]), params["b"])

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        return self.step_projected(params, carry, self.project_inputs(params, x))


@dataclasses.dataclass(frozen=True)
class ConvLSTM(_ConvCell):
    """Convolutional LSTM (Shi et al. 2015), gate order i, f, g, o as in ``LSTM``::

        i = σ(W_xi * x_t + W_hi * h_{t-1} [+ w_ci ⊙ c_{t-1}] + b_i)
        f = σ(W_xf * x_t + W_hf * h_{t-1} [+ w_cf ⊙ c_{t-1}] + b_f)
        g = tanh(W_xg * x_t + W_hg * h_{t-1} + b_g)
        c_t = f ⊙ c_{t-1} + i ⊙ g
        o = σ(W_xo * x_t + W_ho * h_{t-1} [+ w_co ⊙ c_t] + b_o)
        h_t = o ⊙ tanh(c_t)

    ``*`` is a stride-1 convolution with centered zero padding (the map keeps its size),
    ``⊙`` elementwise; the bracketed peephole terms (per position and channel, as in the
    paper) only with ``peephole=True``.

    Args (beyond ``hidden_size``, ``spatial_shape``, ``kernel_size``):
      peephole: add the paper's Hadamard peephole connections.
      forget_bias: the value the forget-gate bias is initialized to.

    Parameters: ``w_x`` (*k, C_in, 4H), ``w_h`` (*k, H, 4H), ``b`` (4H,), and with
    peepholes ``w_ci``, ``w_cf``, ``w_co`` (*spatial, H), initialized to zero. Carry:
    ``LSTMState(h, c)``, each (*batch, *spatial, H). Output: h.
    """

    peephole: bool = False
    forget_bias: float = 1.0

    num_gates = 4

    def init(self, key: PRNGKey, input_size: int) -> Params:
        params = self._init_convolutions(key, input_size)
        hidden = self.hidden_size
        params["b"] = (
            jnp.zeros((4 * hidden,), jnp.float32).at[hidden : 2 * hidden].set(self.forget_bias)
        )
        if self.peephole:
            for name in ("w_ci", "w_cf", "w_co"):
                params[name] = jnp.zeros((*self.spatial_shape, hidden), jnp.float32)
        return params

    def initial_carry(self, params: Params, batch_shape: Shape) -> LSTMState:
        state = self._state(params, batch_shape)
        return LSTMState(h=state, c=state)

    @staticmethod
    def _peephole(weights: Array, c: Array) -> Array:
        """``weights ⊙ c`` for weights (*spatial, H) and c (*batch, *spatial, H)."""
        return weights.reshape((1,) * (c.ndim - weights.ndim) + weights.shape) * c

    def step_projected(self, params, carry, projected):
        pre = projected + convolve(carry.h, params["w_h"])
        i, f, g, o = jnp.split(pre, 4, axis=-1)
        if self.peephole:
            i = i + self._peephole(params["w_ci"], carry.c)
            f = f + self._peephole(params["w_cf"], carry.c)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        if self.peephole:
            o = o + self._peephole(params["w_co"], c)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return LSTMState(h, c), h


@dataclasses.dataclass(frozen=True)
class ConvGRU(_ConvCell):
    """Convolutional GRU (Cho et al. 2014's gates as convolutions; Ballas et al. 2016),
    gate order r, z, n as in ``GRU``::

        r = σ(W_xr * x_t + W_hr * h_{t-1} + b_r)
        z = σ(W_xz * x_t + W_hz * h_{t-1} + b_z)
        n = tanh(W_xn * x_t + W_hn * (r ⊙ h_{t-1}) + b_n)
        h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    (the reset gate applied before the candidate's convolution, as in Cho et al.).
    Parameters: ``w_x`` (*k, C_in, 3H), ``w_h`` (*k, H, 3H), ``b`` (3H,). Carry: h
    (*batch, *spatial, H), which is also the output.
    """

    num_gates = 3

    def init(self, key: PRNGKey, input_size: int) -> Params:
        params = self._init_convolutions(key, input_size)
        params["b"] = jnp.zeros((3 * self.hidden_size,), jnp.float32)
        return params

    def initial_carry(self, params: Params, batch_shape: Shape) -> Array:
        return self._state(params, batch_shape)

    def step_projected(self, params, h, projected):
        hidden = self.hidden_size
        x_r, x_z, x_n = jnp.split(projected, 3, axis=-1)
        h_rz = convolve(h, params["w_h"][..., : 2 * hidden])
        r = jax.nn.sigmoid(x_r + h_rz[..., :hidden])
        z = jax.nn.sigmoid(x_z + h_rz[..., hidden:])
        n = jnp.tanh(x_n + convolve(r * h, params["w_h"][..., 2 * hidden :]))
        h = (1.0 - z) * n + z * h
        return h, h
