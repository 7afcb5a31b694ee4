"""Small pieces shared by the architectures: a dense map, picking the last valid output,
and losses averaged over valid steps only."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqlab._checks import as_lengths, check_rank, require
from seqlab._time import valid_steps
from seqlab.typing import Array, Params, PRNGKey


def dense_init(key: PRNGKey, input_size: int, output_size: int) -> Params:
    """``{"w": (input_size, output_size) LeCun-normal, "b": zeros}``."""
    return {
        "w": jax.nn.initializers.lecun_normal()(key, (input_size, output_size), jnp.float32),
        "b": jnp.zeros((output_size,), jnp.float32),
    }


def dense_apply(params: Params, x: Array) -> Array:
    """``x @ w + b`` for any leading dimensions."""
    bias = params["b"]
    return x @ params["w"] + bias.reshape((1,) * (x.ndim - 1) + bias.shape)


def last_valid_outputs(
    outputs: Array, seq_lengths: Array | None, *, bidirectional: bool = False
) -> Array:
    """The summary of each sequence: (B, T, F) -> (B, F).

    Forward features come from step ``seq_lengths[b] - 1`` (the last valid step); when
    ``bidirectional``, the second half of the features (the backward direction) comes
    from step 0, where the backward run ends. A sequence of length 0 gives zeros.
    """
    check_rank("outputs", outputs, 3, "(B, T, F)")
    batch_size, num_steps, features = outputs.shape
    lengths = (
        jnp.full((batch_size,), num_steps, jnp.int32)
        if seq_lengths is None
        else jnp.clip(as_lengths(seq_lengths), 0, num_steps)  # as seqlab.scan clamps them
    )
    last = jnp.clip(lengths - 1, 0, None)
    forward = jnp.take_along_axis(outputs, last[:, None, None], axis=1)[:, 0]
    forward = jnp.where((lengths > 0)[:, None], forward, jnp.zeros_like(forward))
    if not bidirectional:
        return forward
    require(features % 2 == 0, f"bidirectional outputs need an even feature size, got {features}")
    half = features // 2
    if num_steps == 0:  # no step 0 to read the backward direction at: zeros, as forward
        return jnp.zeros_like(forward)
    return jnp.concatenate([forward[:, :half], outputs[:, 0, half:]], axis=-1)


def valid_mask(seq_lengths: Array | None, batch_size: int, num_steps: int) -> Array:
    """(B, T) boolean: step t of sequence b is valid when t < seq_lengths[b]."""
    if seq_lengths is None:
        return jnp.ones((batch_size, num_steps), bool)
    return valid_steps(as_lengths(seq_lengths), num_steps).T


def masked_reduce(per_step: Array, seq_lengths: Array | None, reduction: str = "mean") -> Array:
    """Reduce per-step values (B, T) over valid steps only.

    ``reduction="mean"`` divides the sum over valid steps by the number of valid steps in
    the batch (every valid step weighs the same); ``"sum"`` returns the sum.
    """
    check_rank("per_step", per_step, 2, "(B, T)")
    require(reduction in ("mean", "sum"), f"reduction must be 'mean' or 'sum', got {reduction!r}")
    mask = valid_mask(seq_lengths, *per_step.shape)
    total = jnp.sum(jnp.where(mask, per_step, jnp.zeros_like(per_step)))
    if reduction == "sum":
        return total
    return total / jnp.maximum(jnp.sum(mask), 1).astype(per_step.dtype)


def sequence_cross_entropy(
    logits: Array, labels: Array, seq_lengths: Array | None = None, reduction: str = "mean"
) -> Array:
    """Softmax cross-entropy of per-step logits (B, T, V) against int labels (B, T),
    reduced over valid steps with ``masked_reduce``."""
    check_rank("logits", logits, 3, "(B, T, V)")
    check_rank("labels", labels, 2, "(B, T)")
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    per_step = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return masked_reduce(per_step, seq_lengths, reduction)
