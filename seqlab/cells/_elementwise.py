"""Cells whose state Jacobian is diagonal, built for parallel-in-time solves.

``MinGRU`` and ``MinLSTM`` (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs
all we needed?") compute their gates from the input alone, so the state update is linear,
``h_t = a_t ⊙ h_{t-1} + b_t``, and one associative scan solves all steps at once.

``DiagGRU`` and ``DiagLSTM`` (the ParaGRU and ParaLSTM of Danieli et al., ICLR 2026) keep
the GRU's and LSTM's nonlinearities but make every recurrent weight a vector that
multiplies elementwise: ∂h_t/∂h_{t-1} is diagonal (for the LSTM's (h, c), a 2x2 block of
diagonals), so Newton's method on the whole trajectory costs elementwise work only
(``seqlab.parallel``).

Each cell declares ``jacobian_structure`` (see ``seqlab.cells.jacobian_structure``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab._checks import require
from seqlab.cells._affine import AffineInputCell, add_bias, split_gates
from seqlab.cells._base import check_input_size, gate_blocks_init
from seqlab.cells._lstm import LSTMState
from seqlab.typing import Array, Carry, Params, PRNGKey, Shape


def scale(z: Array, weights: Array) -> Array:
    """``z * weights`` for (..., H) by (H,), the rank broadcast spelled out."""
    return z * weights.reshape((1,) * (z.ndim - 1) + weights.shape)


@dataclasses.dataclass(frozen=True)
class _InputGatedCell(AffineInputCell):
    """Shared init for cells without a recurrent matrix: ``w_ih`` (D, G*H), ``b`` (G*H,)
    and, for the Diag cells, the recurrent diagonals ``a_hh``."""

    num_recurrent_diagonals = 0

    def init(self, key: PRNGKey, input_size: int) -> Params:
        """Parameters for inputs of size ``input_size`` (a dict of float32 arrays)."""
        check_input_size(input_size)
        k_ih, k_hh = jax.random.split(key)
        gates, hidden = self.num_gates, self.hidden_size
        params = {"w_ih": gate_blocks_init(self.kernel_init, k_ih, input_size, hidden, gates)}
        if self.use_bias:
            params["b"] = self._bias_init()
        if self.num_recurrent_diagonals:
            size = self.num_recurrent_diagonals * hidden
            params["a_hh"] = jax.random.uniform(k_hh, (size,), jnp.float32, -1.0, 1.0)
        return params

    def initial_carry(self, params: Params, batch_shape: Shape) -> Carry:
        return jnp.zeros((*batch_shape, self.hidden_size), params["w_ih"].dtype)

    @staticmethod
    def recurrent_diagonals(params: Params) -> Array:
        """The recurrent weights as used, ``tanh(a_hh)``: each in (-1, 1)."""
        return jnp.tanh(params["a_hh"])


@dataclasses.dataclass(frozen=True)
class MinGRU(_InputGatedCell):
    """minGRU (Feng et al. 2024)::

        z = σ(x W_z + b_z)        h̃ = x W_h + b_h
        h_t = (1 - z) ⊙ h_{t-1} + z ⊙ h̃

    Parameters ``w_ih`` (D, 2H) and ``b`` (2H,), gate order z, h̃. Carry and output: h,
    (*batch, H). Linear in h (``jacobian_structure = "linear-diagonal"``): the parallel
    scan is one associative scan, exact.
    """

    num_gates = 2
    jacobian_structure = "linear-diagonal"

    def step_projected(self, params, carry, projected):
        x_z, candidate = split_gates(projected, 2)
        z = jax.nn.sigmoid(x_z)
        h = (1 - z) * carry + z * candidate
        return h, h


@dataclasses.dataclass(frozen=True)
class MinLSTM(_InputGatedCell):
    """minLSTM (Feng et al. 2024), with its normalized gates::

        f = σ(x W_f + b_f)   i = σ(x W_i + b_i)   h̃ = x W_h + b_h
        h_t = f / (f + i) ⊙ h_{t-1} + i / (f + i) ⊙ h̃

    Parameters ``w_ih`` (D, 3H) and ``b`` (3H,), gate order f, i, h̃; the forget bias
    starts at ``forget_bias`` (1.0). Carry and output: h, (*batch, H).
    ``jacobian_structure = "linear-diagonal"``.
    """

    forget_bias: float = 1.0

    num_gates = 3
    jacobian_structure = "linear-diagonal"

    def _bias_init(self):
        bias = jnp.zeros((3 * self.hidden_size,), jnp.float32)
        return bias.at[: self.hidden_size].set(self.forget_bias)

    def step_projected(self, params, carry, projected):
        x_f, x_i, candidate = split_gates(projected, 3)
        f, i = jax.nn.sigmoid(x_f), jax.nn.sigmoid(x_i)
        h = (f * carry + i * candidate) / (f + i)
        return h, h


@dataclasses.dataclass(frozen=True)
class DiagGRU(_InputGatedCell):
    """GRU with diagonal recurrent weights (ParaGRU), gate order r, z, n::

        r = σ(x W_r + b_r + w_r ⊙ h)        z = σ(x W_z + b_z + w_z ⊙ h)
        n = tanh(x W_n + b_n + r ⊙ (w_n ⊙ h + b_hn))
        h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    Parameters ``w_ih`` (D, 3H), ``b`` (3H,), ``b_hn`` (H,) and ``a_hh`` (3H,): the
    recurrent weights are ``(w_r, w_z, w_n) = tanh(a_hh)``, kept in (-1, 1) so that the
    recurrence stays near or below unit gain; ``a_hh`` starts uniform in [-1, 1]. This
    bounds the weights, not the Jacobian: a trained cell can still expand (then the
    parallel solve falls back to the sequential scan). Carry and output: h, (*batch, H).
    ``jacobian_structure = "diagonal"``.

    ``max_timescale``: None (the default) starts the update-gate bias at 0, as GRU does;
    a number τ_max starts unit i's update bias at log(τ_i − 1) with τ_i spaced
    geometrically from 2 to τ_max over the units, so that z = 1 − 1/τ_i and the units
    remember over 2 to τ_max steps from the start (a deterministic form of the chrono
    initialization of Tallec & Ollivier 2018), for tasks with long delays.
    """

    max_timescale: float | None = None

    num_gates = 3
    num_recurrent_diagonals = 3
    jacobian_structure = "diagonal"

    def __post_init__(self):
        super().__post_init__()
        require(
            self.max_timescale is None
            or (isinstance(self.max_timescale, int | float) and self.max_timescale > 2),
            f"max_timescale must be None or a number above 2, got {self.max_timescale!r}",
        )

    def init(self, key: PRNGKey, input_size: int) -> Params:
        params = super().init(key, input_size)
        if self.use_bias:
            params["b_hn"] = jnp.zeros((self.hidden_size,), jnp.float32)
            if self.max_timescale is not None:
                hidden = self.hidden_size
                timescales = jnp.geomspace(2.0, self.max_timescale, hidden, dtype=jnp.float32)
                params["b"] = params["b"].at[hidden : 2 * hidden].set(jnp.log(timescales - 1))
        return params

    def step_projected(self, params, carry, projected):
        x_r, x_z, x_n = split_gates(projected, 3)
        w_r, w_z, w_n = split_gates(self.recurrent_diagonals(params), 3)
        r = jax.nn.sigmoid(x_r + scale(carry, w_r))
        z = jax.nn.sigmoid(x_z + scale(carry, w_z))
        h_n = scale(carry, w_n)
        if self.use_bias:
            h_n = add_bias(h_n, params["b_hn"])
        n = jnp.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * carry
        return h, h


@dataclasses.dataclass(frozen=True)
class DiagLSTM(_InputGatedCell):
    """LSTM with diagonal recurrent weights (ParaLSTM), gate order i, f, g, o::

        i = σ(x W_i + b_i + w_i ⊙ h)   f = σ(x W_f + b_f + w_f ⊙ h)
        g = tanh(x W_g + b_g + w_g ⊙ h)   o = σ(x W_o + b_o + w_o ⊙ h)
        c_t = f ⊙ c_{t-1} + i ⊙ g        h_t = o ⊙ tanh(c_t)

    Parameters ``w_ih`` (D, 4H), ``b`` (4H,) (forget bias starting at ``forget_bias``,
    1.0) and ``a_hh`` (4H,), the recurrent weights being ``tanh(a_hh)`` as for
    ``DiagGRU``. Carry ``LSTMState(h, c)``, output h. The state Jacobian is a 2x2 block of
    diagonals over (h, c): ``jacobian_structure = "block-diagonal"``.
    """

    forget_bias: float = 1.0

    num_gates = 4
    num_recurrent_diagonals = 4
    jacobian_structure = "block-diagonal"

    def _bias_init(self):
        hidden = self.hidden_size
        bias = jnp.zeros((4 * hidden,), jnp.float32)
        return bias.at[hidden : 2 * hidden].set(self.forget_bias)

    def initial_carry(self, params: Params, batch_shape: Shape) -> Carry:
        zeros = jnp.zeros((*batch_shape, self.hidden_size), params["w_ih"].dtype)
        return LSTMState(h=zeros, c=zeros)

    def step_projected(self, params, carry, projected):
        h_prev, c_prev = carry
        diagonals = split_gates(self.recurrent_diagonals(params), 4)
        x_i, x_f, x_g, x_o = (
            x + scale(h_prev, w) for x, w in zip(split_gates(projected, 4), diagonals, strict=True)
        )
        i, f, o = jax.nn.sigmoid(x_i), jax.nn.sigmoid(x_f), jax.nn.sigmoid(x_o)
        c = f * c_prev + i * jnp.tanh(x_g)
        h = o * jnp.tanh(c)
        return LSTMState(h=h, c=c), h
