"""Long short-term memory (Hochreiter & Schmidhuber 1997), with an optional projection."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqlab._checks import require
from seqlab.cells._affine import AffineInputCell, split_gates
from seqlab.typing import Array


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
        i, f, g, o = split_gates(projected + carry.h @ params["w_hh"], 4)
        gates = {
            "input": jax.nn.sigmoid(i),
            "forget": jax.nn.sigmoid(f),
            "output": jax.nn.sigmoid(o),
        }
        return gates, jnp.tanh(g)

    def step_projected(self, params, carry, projected):
        gates, candidate = self.gate_values(params, carry, projected)
        c = gates["forget"] * carry.c + gates["input"] * candidate
        h = gates["output"] * jnp.tanh(c)
        if self.proj_size:
            h = h @ params["w_hr"]
        return LSTMState(h, c), h
