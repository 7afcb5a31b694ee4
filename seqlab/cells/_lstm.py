"""Long short-term memory (Hochreiter & Schmidhuber 1997), with an optional projection."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqlab._checks import require
from seqlab.cells._affine import (
    AffineInputCell,
    affine_gradients,
    contract_time_batch,
    sigmoid_gradient,
    split_gates,
    tanh_gradient,
)
from seqlab.typing import Array


def lstm_update(i, f, g, o, c_prev):
    """The LSTM's pointwise step from the four gate pre-activations (each (..., H)).

    Returns ``((i, f, g, o) activated, c, h)``. Shared by ``LSTM``, the hand-derived backward
    and the Pallas kernels (``seqlab.kernels.lstm``), so the math is written once.
    """
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c_prev + i * g
    return (i, f, g, o), c, o * jnp.tanh(c)


def lstm_update_backward(dh, dc, gates, c, c_prev):
    """Backward of ``lstm_update``: ``dh`` and ``dc`` are the gradients w.r.t. its h and
    c, ``gates`` its activated (i, f, g, o). Returns the four pre-activation gradients
    and the gradient w.r.t. ``c_prev``."""
    i, f, g, o = gates
    tanh_c = jnp.tanh(c)
    dc_total = dc + dh * o * tanh_gradient(tanh_c)
    d_pre = (
        dc_total * g * sigmoid_gradient(i),
        dc_total * c_prev * sigmoid_gradient(f),
        dc_total * i * tanh_gradient(g),
        dh * tanh_c * sigmoid_gradient(o),
    )
    return d_pre, dc_total * f


class LSTMState(NamedTuple):
    """LSTM carry: ``h`` (*batch, P or H), the output; ``c`` (*batch, H), the cell state."""

    h: Array
    c: Array


@dataclasses.dataclass(frozen=True)
class LSTM(AffineInputCell):
    """LSTM cell with forget gate (Gers et al. 2000), gate order i, f, g, o as in PyTorch::

        i, f, g, o = σ(·), σ(·), tanh(·), σ(·)  of  x_t W_ih + b + h_{t-1} W_hh
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)            (then h_t = h_t W_hr when proj_size > 0)

    Args:
      hidden_size: H, the size of the cell state.
      forget_bias: the value the forget-gate bias is *initialized* to (Jozefowicz et al.
        2015 recommend 1). It is a parameter like any other, not a constant added at run
        time, so converted PyTorch/Flax parameters keep their meaning.
      proj_size: P; when positive, h is projected to P features (PyTorch's ``proj_size``,
        Sak et al. 2014) and the recurrent matmul takes the projected h.

    Parameters: ``w_ih`` (D, 4H), ``w_hh`` (R, 4H) with R = P or H, ``b`` (4H,), and
    ``w_hr`` (H, P) when projecting. Carry: ``LSTMState(h, c)``. Output: h.
    """

    forget_bias: float = 1.0
    proj_size: int = 0

    num_gates = 4

    def __post_init__(self):
        super().__post_init__()
        require(
            isinstance(self.proj_size, int) and 0 <= self.proj_size,
            f"proj_size must be a non-negative int, got {self.proj_size!r}",
        )
        require(
            self.proj_size < self.hidden_size,
            f"proj_size must be smaller than hidden_size ({self.hidden_size}), "
            f"got {self.proj_size}",
        )

    @property
    def recurrent_size(self) -> int:
        return self.proj_size or self.hidden_size

    def _bias_init(self):
        hidden = self.hidden_size
        bias = jnp.zeros((4 * hidden,), jnp.float32)
        return bias.at[hidden : 2 * hidden].set(self.forget_bias)

    def _extra_params(self, key):
        if not self.proj_size:
            return {}
        return {"w_hr": self.kernel_init(key, (self.hidden_size, self.proj_size), jnp.float32)}

    def initial_carry(self, params, batch_shape):
        dtype = params["w_hh"].dtype
        return LSTMState(
            h=jnp.zeros((*batch_shape, self.recurrent_size), dtype),
            c=jnp.zeros((*batch_shape, self.hidden_size), dtype),
        )

    def gate_values(self, params, carry, projected):
        """The sigmoid gates ``{"input", "forget", "output"}`` and the tanh candidate g."""
        (i, f, g, o), _, _ = lstm_update(*self._pre_activations(params, carry, projected), carry.c)
        return {"input": i, "forget": f, "output": o}, g

    def _pre_activations(self, params, carry, projected):
        return split_gates(projected + carry.h @ params["w_hh"], 4)

    def step_projected(self, params, carry, projected):
        new_carry, _ = self.forward_step(params, carry, projected)
        return new_carry, new_carry.h

    # The hand-derived backward (see AffineInputCell). Saved: the activated gates.

    def forward_step(self, params, carry, projected):
        gates, c, h = lstm_update(*self._pre_activations(params, carry, projected), carry.c)
        if self.proj_size:
            h = h @ params["w_hr"]
        return LSTMState(h, c), gates

    def backward_weights(self, params):
        weights = {"w_hh_t": params["w_hh"].T}
        if self.proj_size:
            weights["w_hr_t"] = params["w_hr"].T
        return weights

    def backward_step(self, weights, d_carry, saved, carry_prev, carry):
        dh = d_carry.h @ weights["w_hr_t"] if self.proj_size else d_carry.h
        d_pre, dc_prev = lstm_update_backward(dh, d_carry.c, saved, carry.c, carry_prev.c)
        d_pre = jnp.concatenate(d_pre, axis=-1)
        # With a projection, dW_hr = Σ_t (o_t tanh c_t)ᵀ dh_t needs dh_t of every step.
        d_recurrent = d_carry.h if self.proj_size else ()
        return d_pre, d_recurrent, LSTMState(d_pre @ weights["w_hh_t"], dc_prev)

    def weight_gradients(
        self, params, xs, carries_prev, carries, saved, d_pre, d_recurrent, *, sharded=False
    ):
        gradients = affine_gradients(params, xs, d_pre, carries_prev.h, sharded=sharded)
        if self.proj_size:
            unprojected = saved[3] * jnp.tanh(carries.c)
            gradients["w_hr"] = contract_time_batch(unprojected, d_recurrent, sharded=sharded)
        return gradients
