"""The Elman recurrent cell."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab._checks import check_one_of
from seqlab.cells._affine import AffineInputCell, affine_gradients

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "identity": lambda z: z}

# φ' read off the activation's output h = φ(a), so a backward pass needs only the states:
# 1 - h² for tanh, [h > 0] for relu (0 at a = 0, as jax.nn.relu's own gradient), 1.
ACTIVATION_GRADIENTS = {
    "tanh": lambda h: 1 - h * h,
    "relu": lambda h: (h > 0).astype(h.dtype),
    "identity": jnp.ones_like,
}


@dataclasses.dataclass(frozen=True)
class RNN(AffineInputCell):
    """Elman cell (Elman 1990): ``h_t = φ(x_t W_ih + b + h_{t-1} W_hh)``.

    Args:
      hidden_size: H.
      activation: φ, one of ``"tanh"``, ``"relu"``, ``"identity"`` (the linear RNN, for
        analysis: its state Jacobian is exactly ``W_hhᵀ`` at every step).
      use_bias, kernel_init, recurrent_init: as for every built-in cell.

    Parameters: ``w_ih`` (D, H), ``w_hh`` (H, H), ``b`` (H,). Carry and output: h, (*batch, H).
    Equals ``torch.nn.RNN`` with ``b = b_ih + b_hh``.
    """

    activation: str = "tanh"

    def __post_init__(self):
        super().__post_init__()
        check_one_of("activation", self.activation, sorted(ACTIVATIONS))

    def step_projected(self, params, carry, projected):
        h, _ = self.forward_step(params, carry, projected)
        return h, h

    # The hand-derived backward (seqlab/unroll/_bptt.py explains the three methods).

    def forward_step(self, params, carry, projected):
        return ACTIVATIONS[self.activation](projected + carry @ params["w_hh"]), ()

    def backward_weights(self, params):
        return {"w_hh_t": params["w_hh"].T}

    def backward_step(self, weights, d_carry, saved, carry_prev, carry):
        del saved, carry_prev
        d_pre = d_carry * ACTIVATION_GRADIENTS[self.activation](carry)
        return d_pre, (), d_pre @ weights["w_hh_t"]

    def weight_gradients(
        self, params, xs, carries_prev, carries, saved, d_pre, d_recurrent, *, sharded=False
    ):
        del carries, saved, d_recurrent
        return affine_gradients(params, xs, d_pre, carries_prev, sharded=sharded)
