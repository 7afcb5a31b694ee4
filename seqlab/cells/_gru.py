"""Gated recurrent unit (Cho et al. 2014), in both published placements of the reset gate."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab._checks import check_one_of
from seqlab.cells._affine import AffineInputCell, add_bias, split_gates

GRU_VARIANTS = ("cudnn", "original")


@dataclasses.dataclass(frozen=True)
class GRU(AffineInputCell):
    """GRU cell, gate order r, z, n as in PyTorch::

        r = σ(x W_ir + b_r + h W_hr)          z = σ(x W_iz + b_z + h W_hz)
        variant="cudnn":    n = tanh(x W_in + b_n + r * (h W_hn + b_hn))     (cuDNN, PyTorch, Flax)
        variant="original": n = tanh(x W_in + b_n + (r * h) W_hn)            (Cho et al. 2014)
        h_t = (1 - z) * n + z * h_{t-1}

    Parameters: ``w_ih`` (D, 3H), ``w_hh`` (H, 3H), ``b`` (3H,), and for the cuDNN variant
    ``b_hn`` (H,), the bias inside the reset product. PyTorch's two bias vectors map to
    ``b = b_ih + [b_hr, b_hz, 0]`` and ``b_hn``. Carry and output: h, (*batch, H).
    """

    variant: str = "cudnn"

    num_gates = 3

    def __post_init__(self):
        super().__post_init__()
        check_one_of("variant", self.variant, GRU_VARIANTS)

    def _extra_params(self, key):
        if self.variant == "cudnn" and self.use_bias:
            return {"b_hn": jnp.zeros((self.hidden_size,), jnp.float32)}
        return {}

    def gate_values(self, params, carry, projected):
        """The sigmoid gates ``{"reset", "update"}`` and the tanh candidate n."""
        hidden = self.hidden_size
        x_r, x_z, x_n = split_gates(projected, 3)
        w_hh = params["w_hh"]
        if self.variant == "cudnn":
            h_r, h_z, h_n = split_gates(carry @ w_hh, 3)
            if self.use_bias:
                h_n = add_bias(h_n, params["b_hn"])
            r = jax.nn.sigmoid(x_r + h_r)
            z = jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + r * h_n)
        else:
            h_r, h_z = split_gates(carry @ w_hh[:, : 2 * hidden], 2)
            r = jax.nn.sigmoid(x_r + h_r)
            z = jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + (r * carry) @ w_hh[:, 2 * hidden :])
        return {"reset": r, "update": z}, n

    def step_projected(self, params, carry, projected):
        gates, candidate = self.gate_values(params, carry, projected)
        z = gates["update"]
        h = (1 - z) * candidate + z * carry
        return h, h
