"""The plain ``lax.scan`` unroll: the reference every faster implementation is tested against.

Everything here is time-major: xs is (T, B, D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqlab.typing import Array, Carry, Params


def _per_batch(mask: Array, leaf: Array) -> Array:
    """Reshape a (B,) mask to broadcast against ``leaf`` of shape (B, ...)."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def reverse_within_lengths(tree, seq_lengths: Array):
    """Reverse each sequence of a time-major pytree within its own length.

    Entry (t, b) with t < seq_lengths[b] moves to (seq_lengths[b] - 1 - t, b); padded
    entries stay where they are. The map is its own inverse.
    """
    num_steps = jax.tree_util.tree_leaves(tree)[0].shape[0]
    time = jnp.arange(num_steps)[:, None]
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
) -> tuple[Array, Carry]:
    """Unroll ``cell`` over time-major ``xs`` with ``lax.scan``; returns (outputs, final carry)."""
    if hoist:
        inputs = cell.project_inputs(params, xs)

        def step(carry, x):
            return cell.step_projected(params, carry, x)
    else:
        inputs = xs

        def step(carry, x):
            return cell.step(params, carry, x)

    if seq_lengths is None:
        final_carry, outputs = jax.lax.scan(step, carry, inputs, reverse=reverse, unroll=unroll)
        return outputs, final_carry

    if reverse:
        inputs = reverse_within_lengths(inputs, seq_lengths)
    num_steps = xs.shape[0]
    valid = jnp.arange(num_steps)[:, None] < seq_lengths[None, :]  # (T, B)

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

    final_carry, outputs = jax.lax.scan(masked_step, carry, (inputs, valid), unroll=unroll)
    if reverse:
        outputs = reverse_within_lengths(outputs, seq_lengths)
    return outputs, final_carry
