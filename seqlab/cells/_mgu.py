"""Minimal gated unit (Zhou, Wu, Zhang & Zhou 2016, arXiv 1603.09420)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab.cells._affine import AffineInputCell, split_gates


@dataclasses.dataclass(frozen=True)
class MGU(AffineInputCell):
    """MGU cell: a GRU whose single forget gate also plays the reset gate::

        f   = σ(x W_if + b_f + h W_hf)
        h̃   = tanh(x W_in + b_n + (f * h) W_hn)
        h_t = (1 - f) * h_{t-1} + f * h̃

    as in Zhou et al. 2016, eq. (6)–(8). (Flax's ``MGUCell`` uses the opposite convention,
    ``h_t = (1 - f) * h̃ + f * h_{t-1}``, and puts f outside the recurrent matmul.)

    Parameters: ``w_ih`` (D, 2H), ``w_hh`` (H, 2H), ``b`` (2H,), gate order f, n.
    Carry and output: h, (*batch, H).
    """

    num_gates = 2

    def gate_values(self, params, carry, projected):
        """The sigmoid gate ``{"forget"}`` and the tanh candidate h̃."""
        hidden = self.hidden_size
        x_f, x_n = split_gates(projected, 2)
        w_hh = params["w_hh"]
        f = jax.nn.sigmoid(x_f + carry @ w_hh[:, :hidden])
        return {"forget": f}, jnp.tanh(x_n + (f * carry) @ w_hh[:, hidden:])

    def step_projected(self, params, carry, projected):
        gates, candidate = self.gate_values(params, carry, projected)
        f = gates["forget"]
        h = (1 - f) * carry + f * candidate
        return h, h
