"""Gated recurrent unit (Cho et al. 2014), in both published placements of the reset gate."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab._checks import check_one_of
from seqlab.cells._affine import (
    AffineInputCell,
    add_bias,
    affine_gradients,
    contract_time_batch,
    sigmoid_gradient,
    split_gates,
    tanh_gradient,
)

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
        _, (r, z, n, *_) = self.forward_step(params, carry, projected)
        return {"reset": r, "update": z}, n

    def step_projected(self, params, carry, projected):
        h, _ = self.forward_step(params, carry, projected)
        return h, h

    # The hand-derived backward (see AffineInputCell). Saved: r, z, n, and h W_hn + b_hn
    # for the cudnn variant (the factor r multiplies).

    def forward_step(self, params, carry, projected):
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
            saved = (r, z, n, h_n)
        else:
            h_r, h_z = split_gates(carry @ w_hh[:, : 2 * hidden], 2)
            r = jax.nn.sigmoid(x_r + h_r)
            z = jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + (r * carry) @ w_hh[:, 2 * hidden :])
            saved = (r, z, n)
        return gru_update(z, n, carry), saved

    def backward_weights(self, params):
        w_hh, hidden = params["w_hh"], self.hidden_size
        if self.variant == "cudnn":
            return {"w_hh_t": w_hh.T}
        return {"w_rz_t": w_hh[:, : 2 * hidden].T, "w_n_t": w_hh[:, 2 * hidden :].T}

    def backward_step(self, weights, d_carry, saved, carry_prev, carry):
        del carry
        r, z, n = saved[:3]
        d_n, d_z, dh_prev = gru_update_backward(d_carry, z, n, carry_prev)
        if self.variant == "cudnn":
            d_r = reset_backward(d_n, saved[3], r)
            d_recurrent = jnp.concatenate([d_r, d_z, d_n * r], axis=-1)
            dh_prev = dh_prev + d_recurrent @ weights["w_hh_t"]
            return jnp.concatenate([d_r, d_z, d_n], axis=-1), d_recurrent, dh_prev
        d_rh = d_n @ weights["w_n_t"]  # through (r * h) W_hn
        d_r = reset_backward(d_rh, carry_prev, r)
        d_rz = jnp.concatenate([d_r, d_z], axis=-1)
        dh_prev = dh_prev + d_rh * r + d_rz @ weights["w_rz_t"]
        return jnp.concatenate([d_rz, d_n], axis=-1), (), dh_prev

    def weight_gradients(
        self, params, xs, carries_prev, carries, saved, d_pre, d_recurrent, *, sharded=False
    ):
        del carries
        hidden = self.hidden_size
        gradients = affine_gradients(params, xs, d_pre, sharded=sharded)
        if self.variant == "cudnn":
            gradients["w_hh"] = contract_time_batch(carries_prev, d_recurrent, sharded=sharded)
            if self.use_bias:
                gradients["b_hn"] = jnp.sum(d_recurrent[..., 2 * hidden :], axis=(0, 1))
            return gradients
        d_w_rz = contract_time_batch(carries_prev, d_pre[..., : 2 * hidden], sharded=sharded)
        d_w_n = contract_time_batch(
            saved[0] * carries_prev, d_pre[..., 2 * hidden :], sharded=sharded
        )
        gradients["w_hh"] = jnp.concatenate([d_w_rz, d_w_n], axis=-1)
        return gradients


def gru_update(z, n, h_prev):
    """The GRU's (and MGU's) interpolation ``h = (1 - z) * n + z * h_prev``."""
    return (1 - z) * n + z * h_prev


def gru_update_backward(dh, z, n, h_prev):
    """Backward of ``gru_update`` with n = tanh(·) and z = σ(·): the gradients w.r.t. the
    tanh's and the sigmoid's arguments, and the direct part of the gradient w.r.t. h_prev.
    Shared with the Pallas GRU kernel."""
    d_n = dh * (1 - z) * tanh_gradient(n)
    d_z = dh * (h_prev - n) * sigmoid_gradient(z)
    return d_n, d_z, dh * z


def reset_backward(d_product, other, r):
    """The gradient w.r.t. the pre-activation of a gate r = σ(·) that enters as
    ``r * other``, given the gradient ``d_product`` w.r.t. that product."""
    return d_product * other * sigmoid_gradient(r)
