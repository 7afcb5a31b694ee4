"""Spectral norms of state-to-state Jacobians over long spans, without underflow."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from seqlab._checks import check_one_of, check_rank
from seqlab.analysis._grad_norms import _check_layer
from seqlab.cells import input_layout
from seqlab.layers import RNNLayer
from seqlab.typing import Array, Params


def _carries_over_time(cell, params, xs_time_major):
    """Every step's input carry s_{t-1} and output carry s_t: each (T, B, ...)."""

    def step(carry, x):
        new_carry, _ = cell.step(params, carry, x)
        return new_carry, (carry, new_carry)

    batch_size = xs_time_major.shape[1]
    _, (before, after) = jax.lax.scan(
        step, cell.initial_carry(params, (batch_size,)), xs_time_major
    )
    return before, after


def _step_jacobians(cell, params, xs_time_major):
    """J_t = ∂s_t/∂s_{t-1} for every t and sequence, flattened: (T, B, S, S)."""
    before, _ = _carries_over_time(cell, params, xs_time_major)

    def jacobian_one(carry, x):  # one sequence, one step; carry leaves without batch dims
        flat, unravel = ravel_pytree(carry)

        def next_state(flat):
            new_carry, _ = cell.step(params, unravel(flat), x)
            return ravel_pytree(new_carry)[0]

        return jax.jacfwd(next_state)(flat)

    return jax.vmap(jax.vmap(jacobian_one))(before, xs_time_major)


@jax.jit
def _log_span_norms(jacobians: Array) -> Array:
    """log ‖J_{T-1} ⋯ J_{t+1}‖₂ for t = 0..T-1 (the empty product, t = T-1, is I).

    The running product is renormalized at every step and its scale kept as a log, so spans
    whose norm is far below the dtype's smallest number (0.9^999 ≈ 1.7e-46) stay exact up
    to rounding.
    """
    num_steps, batch_size, size, _ = jacobians.shape
    eye = jnp.broadcast_to(jnp.eye(size, dtype=jacobians.dtype), (batch_size, size, size))

    def back_step(state, jacobian_next):
        product, log_scale = state
        product = product @ jacobian_next  # ∂s_{T-1}/∂s_t = (∂s_{T-1}/∂s_{t+1}) J_{t+1}
        scale = jnp.max(jnp.abs(product), axis=(-2, -1))
        safe = jnp.where(scale > 0, scale, jnp.ones_like(scale))
        product = product / safe[:, None, None]
        log_scale = log_scale + jnp.log(safe)
        log_norm = jnp.log(jnp.linalg.norm(product, ord=2, axis=(-2, -1))) + log_scale
        return (product, log_scale), log_norm

    start = (eye, jnp.zeros((batch_size,), jacobians.dtype))
    # J_{t+1} for t = T-2 down to 0
    _, log_norms = jax.lax.scan(back_step, start, jacobians[1:], reverse=True)
    last = jnp.zeros((1, batch_size), jacobians.dtype)  # log ‖I‖ = 0
    return jnp.concatenate([log_norms, last], axis=0)  # (T, B)


def jacobian_norms(
    layer: RNNLayer, params: Params, xs: Array, *, direction: str = "forward", log: bool = False
) -> np.ndarray:
    """Entry [b, t] is ‖∂s_{T-1}/∂s_t‖₂ for the top layer, s its full recurrent state.

    s is h for RNN, GRU and MGU and (h, c) for LSTM (any cell's carry, flattened). The
    lower layers are run first and their outputs held fixed. Per-step Jacobians come from
    forward-mode autodiff of the cell's step; their products are accumulated from t = T-1
    backwards with renormalization at every step and the scale carried as a logarithm (in
    the parameters' dtype), so the result stays accurate far below the dtype's range; the
    final norms are formed in float64.

    Args:
      layer: an RNNLayer; xs in its layout, without padding (no ``seq_lengths``).
      direction: ``"forward"``, or ``"backward"`` for a bidirectional top layer, whose
        steps run from T-1 to 0: entry [b, t] is then ‖∂s_0/∂s_t‖₂ (t is the position).
      log: return natural logarithms instead (no underflow even in float64).

    Returns:
      float64 NumPy array (B, T). Cost: B·T Jacobians of size S x S and their products,
      O(B·T·S³): meant for analysis sizes (S up to a few hundred).
    """
    _check_layer(layer)
    check_rank("xs", xs, *input_layout(layer.cells[0], layer.time_major))
    check_one_of("direction", direction, layer.directions)
    xs_time_major = xs if layer.time_major else jnp.swapaxes(xs, 0, 1)
    if layer.num_layers > 1:
        lower = dataclasses.replace(
            layer, cell=layer.cells[:-1], num_layers=layer.num_layers - 1, time_major=True
        )
        xs_time_major, _ = lower.apply(params[:-1], xs_time_major)
    cell = layer.cells[-1]
    if direction == "backward":
        xs_time_major = xs_time_major[::-1]
    jacobians = _step_jacobians(cell, params[-1][direction], xs_time_major)
    log_norms = np.asarray(_log_span_norms(jacobians), np.float64)  # (T, B)
    if direction == "backward":
        log_norms = log_norms[::-1]
    log_norms = log_norms.T
    return log_norms if log else np.exp(log_norms)
