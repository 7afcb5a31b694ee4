"""The plain ``lax.scan`` unroll: the reference every faster implementation is tested against.

Everything here is time-major: xs is (T, B, D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqlab._checks import as_lengths
from seqlab._padding import valid_steps
from seqlab.typing import Array, Carry, Params


def _per_batch(mask: Array, leaf: Array) -> Array:
    """Reshape a (B,) mask to broadcast against ``leaf`` of shape (B, ...)."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def reverse_within_lengths(tree, seq_lengths: Array):
    """Reverse each sequence of a time-major pytree within its own length.

    Entry (t, b) with t < seq_lengths[b] moves to (seq_lengths[b] - 1 - t, b); padded
    entries stay where they are. The map is its own inverse. Lengths are clamped to
    [0, T] (traced lengths cannot be checked), so no index ever leaves the array.
    """
    num_steps = jax.tree_util.tree_leaves(tree)[0].shape[0]
    seq_lengths = jnp.clip(as_lengths(seq_lengths), 0, num_steps)
    time = jnp.arange(num_steps, dtype=jnp.int32)[:, None]
    index = jnp.where(time < seq_lengths[None, :], seq_lengths[None, :] - 1 - time, time)

    def gather(leaf):
        leaf_index = index.reshape(index.shape + (1,) * (leaf.ndim - 2))
        return jnp.take_along_axis(leaf, leaf_index, axis=0)

    return jax.tree_util.tree_map(gather, tree)


def scan_xla(
    cell,
    params: Params,
    xs: Array,
    carry: Carry,
    *,
    seq_lengths: Array | None,
    reverse: bool,
    unroll: int | bool,
    hoist: bool,
    remat_block: int | None = None,
) -> tuple[Array, Carry]:
    """Unroll ``cell`` over time-major ``xs`` with ``lax.scan``; returns (outputs, final carry).

    With ``remat_block`` the time axis runs in blocks of that many steps, each under
    ``jax.checkpoint``: the backward pass keeps only the carries at block borders and
    recomputes each block's steps, so memory grows like T / block + block instead of T.
    """
    if hoist:
        inputs = cell.project_inputs(params, xs)

        def step(carry, x):
            return cell.step_projected(params, carry, x)
    else:
        inputs = xs

        def step(carry, x):
            return cell.step(params, carry, x)

    num_steps, batch_size = xs.shape[:2]
    if seq_lengths is None and remat_block is None:
        final_carry, outputs = jax.lax.scan(step, carry, inputs, reverse=reverse, unroll=unroll)
        return outputs, final_carry
    if seq_lengths is None:  # blocks pad the time axis; masking keeps the padding inert
        seq_lengths = jnp.full((batch_size,), num_steps, jnp.int32)

    if reverse:
        inputs = reverse_within_lengths(inputs, seq_lengths)
    valid = valid_steps(seq_lengths, num_steps)

    def masked_step(carry, inputs_t):
        x, valid_t = inputs_t
        new_carry, output = step(carry, x)
        # Past a sequence's end the carry freezes, so the final carry is the one at the
        # last valid step without storing every step's carry.
        new_carry = jax.tree_util.tree_map(
            lambda new, old: jnp.where(_per_batch(valid_t, new), new, old), new_carry, carry
        )
        output = jax.tree_util.tree_map(
            lambda y: jnp.where(_per_batch(valid_t, y), y, jnp.zeros_like(y)), output
        )
        return new_carry, output

    if remat_block is None:
        final_carry, outputs = jax.lax.scan(masked_step, carry, (inputs, valid), unroll=unroll)
    else:
        final_carry, outputs = _blocked_scan(
            masked_step, carry, (inputs, valid), remat_block, unroll
        )
    if reverse:
        outputs = reverse_within_lengths(outputs, seq_lengths)
    return outputs, final_carry


def _blocked_scan(body, carry, inputs, block: int, unroll):
    """``lax.scan(body, carry, inputs)`` in blocks of ``block`` steps, each rematerialized.

    The time axis is padded with zeros up to a multiple of ``block``; ``body`` must leave
    the carry unchanged on padded steps (the masked step does: their ``valid`` is False).
    """
    return blocked(lambda c, b: jax.lax.scan(body, c, b, unroll=unroll), carry, inputs, block)


def blocked(run_block, carry, inputs, block: int):
    """Run time-major ``inputs`` through ``run_block(carry, block_inputs) -> (carry,
    outputs)`` in blocks of ``block`` steps, each under ``jax.checkpoint``.

    The time axis is padded with zeros up to a multiple of ``block``; ``run_block`` must
    leave the carry unchanged on padded steps (a False ``valid`` mask does that).
    """
    num_steps = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    num_blocks = -(-num_steps // block)
    padding = num_blocks * block - num_steps

    def to_blocks(leaf):
        leaf = jnp.pad(leaf, [(0, padding)] + [(0, 0)] * (leaf.ndim - 1))
        return leaf.reshape((num_blocks, block, *leaf.shape[1:]))

    final_carry, outputs = jax.lax.scan(
        jax.checkpoint(run_block), carry, jax.tree_util.tree_map(to_blocks, inputs)
    )
    outputs = jax.tree_util.tree_map(
        lambda leaf: leaf.reshape((num_blocks * block, *leaf.shape[2:]))[:num_steps], outputs
    )
    return final_carry, outputs
