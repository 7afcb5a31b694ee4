"""The plain ``lax.scan`` unroll: the reference every faster implementation is tested against.

Everything here is time-major: xs is (T, B, D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqlab._time import Steps, where_valid, zero_invalid
from seqlab.typing import Array, Carry, Params
from seqlab.unroll._options import Xla


def scan_xla(
    cell, params: Params, xs: Array, carry: Carry, steps: Steps | None, options: Xla
) -> tuple[Array, Carry]:
    """Unroll ``cell`` over time-major, forward-ordered ``xs`` with ``lax.scan``; returns
    (outputs, final carry). ``seqlab/_time.py`` gives the contract (the carry frozen past
    each length; outputs there zeroed in the loop) and ``options`` its settled hoist,
    unroll and remat.

    With ``options.remat`` (a block length) the time axis runs in blocks of that many
    steps, each under ``jax.checkpoint``: the backward pass keeps only the carries at
    block borders and recomputes each block's steps, so memory grows like T / block +
    block instead of T (``steps`` is then always given: the blocks pad the time axis).
    """
    if options.hoist:
        inputs = cell.project_inputs(params, xs)

        def step(carry, x):
            return cell.step_projected(params, carry, x)
    else:
        inputs = xs

        def step(carry, x):
            return cell.step(params, carry, x)

    if steps is None:
        final_carry, outputs = jax.lax.scan(step, carry, inputs, unroll=options.unroll)
        return outputs, final_carry

    def masked_step(carry, inputs_t):
        x, valid_t = inputs_t
        new_carry, output = step(carry, x)
        # Past a sequence's end the carry freezes, so the final carry is the one at the
        # last valid step without storing every step's carry; the output there is zeroed
        # here, inside the loop (and the remat blocks), not after it.
        return where_valid(valid_t, new_carry, carry), zero_invalid(valid_t, output)

    if options.remat is False:
        final_carry, outputs = jax.lax.scan(
            masked_step, carry, (inputs, steps.valid), unroll=options.unroll
        )
    else:
        final_carry, outputs = _blocked_scan(
            masked_step, carry, (inputs, steps.valid), options.remat, options.unroll
        )
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
