"""The Elman recurrent cell."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab._checks import check_one_of
from seqlab.cells._affine import AffineInputCell

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "identity": lambda z: z}


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
        h = ACTIVATIONS[self.activation](projected + carry @ params["w_hh"])
        return h, h
