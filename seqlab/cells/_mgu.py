"""Minimal gated unit (Zhou, Wu, Zhang & Zhou 2016, arXiv 1603.09420)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab.cells._affine import (
    AffineInputCell,
    affine_gradients,
    contract_time_batch,
    sigmoid_gradient,
    split_gates,
    tanh_gradient,
)


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
        _, (f, n) = self.forward_step(params, carry, projected)
        return {"forget": f}, n

    def step_projected(self, params, carry, projected):
        h, _ = self.forward_step(params, carry, projected)
        return h, h

    # The hand-derived backward (see AffineInputCell). Saved: f and h̃.

    def forward_step(self, params, carry, projected):
        hidden = self.hidden_size
        x_f, x_n = split_gates(projected, 2)
        w_hh = params["w_hh"]
        f = jax.nn.sigmoid(x_f + carry @ w_hh[:, :hidden])
        n = jnp.tanh(x_n + (f * carry) @ w_hh[:, hidden:])
        return (1 - f) * carry + f * n, (f, n)

    def backward_weights(self, params):
        w_hh, hidden = params["w_hh"], self.hidden_size
        return {"w_f_t": w_hh[:, :hidden].T, "w_n_t": w_hh[:, hidden:].T}

    def backward_step(self, weights, d_carry, saved, carry_prev, carry):
        del carry
        f, n = saved
        d_n = d_carry * f * tanh_gradient(n)
        d_fh = d_n @ weights["w_n_t"]  # through (f * h) W_hn
        d_f = (d_carry * (n - carry_prev) + d_fh * carry_prev) * sigmoid_gradient(f)
        dh_prev = d_carry * (1 - f) + d_fh * f + d_f @ weights["w_f_t"]
        return jnp.concatenate([d_f, d_n], axis=-1), (), dh_prev

    def weight_gradients(
        self, params, xs, carries_prev, carries, saved, d_pre, d_recurrent, *, sharded=False
    ):
        del carries, d_recurrent
        hidden = self.hidden_size
        gradients = affine_gradients(params, xs, d_pre, sharded=sharded)
        d_w_f = contract_time_batch(carries_prev, d_pre[..., :hidden], sharded=sharded)
        d_w_n = contract_time_batch(saved[0] * carries_prev, d_pre[..., hidden:], sharded=sharded)
        gradients["w_hh"] = jnp.concatenate([d_w_f, d_w_n], axis=-1)
        return gradients
