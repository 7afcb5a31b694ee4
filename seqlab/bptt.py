"""Backpropagation through time: truncated BPTT over long streams, and gradient clipping.

Full BPTT needs nothing from here: it is ``jax.grad`` through ``seqlab.scan`` (add
``remat=True`` to ``seqlab.scan`` or ``RNNLayer`` for long sequences).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from seqlab._checks import require
from seqlab.typing import Array, Carry, Params


def clipping(
    optimizer: optax.GradientTransformation,
    *,
    max_norm: float | None = None,
    max_value: float | None = None,
) -> optax.GradientTransformation:
    """``optimizer`` preceded by gradient clipping (optax).

    ``max_value`` clips every gradient entry to [-max_value, max_value] first; ``max_norm``
    then rescales the whole gradient when its global norm exceeds it (Pascanu et al. 2013).
    Report ``optax.tree.norm(grads)`` before the update as the pre-clip norm (as
    ``truncated_bptt`` does).
    """
    transforms = []
    if max_value is not None:
        require(max_value > 0, f"max_value must be positive, got {max_value}")
        transforms.append(optax.clip(max_value))
    if max_norm is not None:
        require(max_norm > 0, f"max_norm must be positive, got {max_norm}")
        transforms.append(optax.clip_by_global_norm(max_norm))
    return optax.chain(*transforms, optimizer)


class TBPTTResult(NamedTuple):
    """What ``truncated_bptt`` returns: per-chunk losses and pre-clip gradient norms."""

    params: Params
    opt_state: Any
    carry: Carry
    losses: Array  # (num_chunks,)
    grad_norms: Array  # (num_chunks,), global norm before clipping


def truncated_bptt(
    chunk_loss: Callable[[Params, Carry, Any], tuple[Array, Carry]],
    params: Params,
    opt_state: Any,
    optimizer: optax.GradientTransformation,
    carry: Carry,
    stream: Any,
    *,
    chunk_length: int,
) -> TBPTTResult:
    """Train over a long stream in chunks of ``chunk_length`` steps (Williams & Peng 1990).

    Each chunk gets one gradient step on ``chunk_loss(params, carry, chunk)``; the carry
    flows on from chunk to chunk with its gradient stopped at the border, so the gradient
    reaches back at most ``chunk_length`` steps while the state sees the whole stream. The
    final carry is returned: pass it to the next call to stay stateful across batches.

    Args:
      chunk_loss: ``(params, carry, chunk) -> (loss, final_carry)``, e.g. a layer's
        ``apply`` followed by a loss; ``chunk`` has the structure of ``stream`` with a
        time axis of ``chunk_length``.
      params, opt_state, optimizer: an optax optimizer and its state.
      carry: the state at the start of the stream.
      stream: a pytree of batch-major arrays (B, T, ...), e.g. ``(inputs, targets)``;
        T must be a multiple of ``chunk_length``.

    Runs as one ``lax.scan`` over chunks (jit it for speed).
    """
    leaves = jax.tree_util.tree_leaves(stream)
    require(leaves, "stream must hold at least one array")
    for leaf in leaves:
        require(
            getattr(leaf, "ndim", 0) >= 2,
            f"stream arrays must be (B, T, ...), got shape {getattr(leaf, 'shape', None)}",
        )
    num_steps = leaves[0].shape[1]
    require(
        isinstance(chunk_length, int) and chunk_length >= 1 and num_steps % chunk_length == 0,
        f"chunk_length must be a positive int dividing T = {num_steps}, got {chunk_length!r}",
    )
    num_chunks = num_steps // chunk_length

    def to_chunks(leaf):  # (B, T, ...) -> (num_chunks, B, chunk_length, ...)
        leaf = leaf.reshape((leaf.shape[0], num_chunks, chunk_length, *leaf.shape[2:]))
        return jnp.swapaxes(leaf, 0, 1)

    def one_chunk(state, chunk):
        params, opt_state, carry = state
        carry = jax.lax.stop_gradient(carry)
        (loss, new_carry), grads = jax.value_and_grad(chunk_loss, has_aux=True)(
            params, carry, chunk
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, new_carry), (loss, optax.tree.norm(grads))

    (params, opt_state, carry), (losses, norms) = jax.lax.scan(
        one_chunk, (params, opt_state, carry), jax.tree_util.tree_map(to_chunks, stream)
    )
    return TBPTTResult(params, opt_state, carry, losses, norms)
