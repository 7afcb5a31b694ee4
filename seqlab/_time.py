"""Time, once for every implementation of ``seqlab.scan``: layout, lengths, padding,
direction and the valid-step mask.

``normalize`` checks a scan's arguments and returns its inputs time-major with the padding
zeroed; ``run_in_time`` then reverses within each length (``reverse``), builds the
(T, B) ``valid`` mask, calls the implementation, zeroes the outputs past each length and
reverses them back. An implementation is one function of one shape::

    run(cell, params, xs, carry, steps, options) -> (outputs, final_carry)

over time-major, forward-ordered ``xs`` (T, B, D) whose padding is zero; ``steps`` is
None (every step valid) or ``Steps(valid, lengths)``, and past a sequence's last valid
step the implementation must keep its carry frozen (its outputs there may be anything:
they are zeroed here, unless it says it zeroes them itself). ``seqlab.scan``
(``seqlab/unroll/_scan.py``) and ``seqlab.parallel.convergence`` both enter through
``normalize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqlab._checks import (
    as_lengths,
    check_floating,
    check_rank,
    check_same_structure,
    check_seq_lengths,
    require,
)
from seqlab.cells import check_cell, input_layout
from seqlab.typing import Array, Carry, Params


class Steps(NamedTuple):
    """Which steps of a time-major batch are valid: ``valid`` (T, B) bool, True where
    t < ``lengths[b]``; ``lengths`` (B,) int32 in [0, T]."""

    valid: Array
    lengths: Array


def valid_steps(seq_lengths: Array, num_steps: int) -> Array:
    """(T, B) bool, time-major: step t of sequence b is valid when t < seq_lengths[b].

    ``seq_lengths`` must already be int32 (``seqlab._checks.check_seq_lengths``): a time
    index in a narrower dtype would wrap."""
    return jnp.arange(num_steps, dtype=jnp.int32)[:, None] < seq_lengths[None, :]


def steps_of(seq_lengths: Array | None, num_steps: int) -> Steps | None:
    """``Steps`` for lengths of any integer dtype (int32 first, clamped to [0, T])."""
    if seq_lengths is None:
        return None
    lengths = jnp.clip(as_lengths(seq_lengths), 0, num_steps)
    return Steps(valid_steps(lengths, num_steps), lengths)


def per_batch(mask: Array, leaf: Array) -> Array:
    """A mask of shape (*lead,) reshaped to broadcast against ``leaf`` (*lead, ...)."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def where_valid(valid: Array | None, new, old):
    """``new`` where ``valid``, ``old`` elsewhere, leaf by leaf (``new`` when no mask).

    ``valid`` is (B,) for one step's carries or (T, B) for time-major arrays."""
    if valid is None:
        return new
    return jax.tree_util.tree_map(lambda n, o: jnp.where(per_batch(valid, n), n, o), new, old)


def zero_invalid(valid: Array | None, tree):
    """``tree`` with every entry past its sequence's length set to 0 (``where``, so that
    neither NaN nor inf there reaches a product or a gradient)."""
    if valid is None:
        return tree
    return jax.tree_util.tree_map(
        lambda leaf: jnp.where(per_batch(valid, leaf), leaf, jnp.zeros_like(leaf)), tree
    )


def zero_padding(xs: Array, seq_lengths: Array | None) -> Array:
    """Time-major ``xs`` (T, B, ...) with every step past its sequence's length set to 0.

    Outputs past a length are zero and carries frozen whatever the padding holds, but a
    gradient is a product: NaN or inf in the padding times a zero cotangent is NaN (the
    input-weight gradient ``xsᵀ · d_pre``, autodiff's ``where``). Zeroing the inputs with
    ``where`` (whose gradient is exactly zero at padded steps) keeps padding content out
    of every forward and backward computation, in every implementation.
    """
    if seq_lengths is None:
        return xs
    return zero_invalid(valid_steps(seq_lengths, xs.shape[0]), xs)


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


def in_order(tree, steps: Steps | None, reverse: bool):
    """A time-major pytree in solving order: as is, or reversed (within each length when
    ``steps`` is given). Its own inverse: the same call puts outputs back."""
    if not reverse:
        return tree
    if steps is None:
        return jax.tree_util.tree_map(lambda leaf: jnp.flip(leaf, 0), tree)
    return reverse_within_lengths(tree, steps.lengths)


def check_step_accepts(cell, params, carry, x_t) -> None:
    """Trace one step abstractly so that size mistakes surface as a clear ValueError."""
    input_size = getattr(cell, "input_size", None)
    expected = input_size(params) if callable(input_size) else None
    if expected is not None:
        require(
            x_t.shape[-1] == expected,
            f"xs must have feature size D = {expected} (the size the cell was initialized "
            f"for), got {x_t.shape[-1]}",
        )
    try:
        new_carry, _ = jax.eval_shape(cell.step, params, carry, x_t)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"cell.step rejected a carry and an input of shape {tuple(x_t.shape)}: {error}"
        ) from None
    check_same_structure("the carry returned by cell.step", new_carry, carry)
    for (path, given), returned in zip(
        jax.tree_util.tree_leaves_with_path(carry),
        jax.tree_util.tree_leaves(new_carry),
        strict=True,
    ):
        require(
            jnp.dtype(given.dtype) == jnp.dtype(returned.dtype),
            f"carry{jax.tree_util.keystr(path)} must have dtype {jnp.dtype(returned.dtype)} "
            f"(what cell.step returns for it), got {jnp.dtype(given.dtype)}",
        )


class Normalized(NamedTuple):
    """A scan's inputs after ``normalize``: ``xs`` time-major (T, B, D) with the padding
    zeroed, the initial ``carry``, and ``seq_lengths`` as int32 (or None)."""

    xs: Array
    carry: Carry
    seq_lengths: Array | None


def normalize(
    cell,
    params: Params,
    xs: Array,
    carry: Carry | None,
    *,
    seq_lengths: Array | None,
    time_major: bool,
    check_settings: Callable[[], None] | None = None,
) -> Normalized:
    """Check a scan's arguments and bring them to one form (see ``Normalized``); every
    mistake is a ValueError naming what was expected and what arrived.
    ``check_settings`` runs after the cell and ``xs`` are checked, before the carry and
    the lengths (the order of ``seqlab.scan``'s errors)."""
    check_cell(cell)
    check_rank("xs", xs, *input_layout(cell, time_major))
    check_floating("xs", xs)
    if check_settings is not None:
        check_settings()
    xs = xs if time_major else jnp.swapaxes(xs, 0, 1)
    num_steps, batch_size = xs.shape[:2]
    if carry is None:
        carry = cell.initial_carry(params, (batch_size,))
    else:
        expected = jax.eval_shape(lambda p: cell.initial_carry(p, (batch_size,)), params)
        check_same_structure("carry", carry, expected)
    if seq_lengths is not None:
        seq_lengths = check_seq_lengths(seq_lengths, batch_size, num_steps)  # int32
        xs = zero_padding(xs, seq_lengths)  # no padding in any product
    check_step_accepts(cell, params, carry, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
    return Normalized(xs, carry, seq_lengths)


Run = Callable[[Any, Params, Array, Carry, "Steps | None", Any], tuple[Any, Carry]]


def run_in_time(
    run: Run,
    cell,
    params: Params,
    xs: Array,
    carry: Carry,
    *,
    seq_lengths: Array | None,
    reverse: bool,
    options,
    with_steps: bool = False,
    outputs_zeroed: bool = False,
) -> tuple[Any, Carry]:
    """``run`` over normalized, time-major ``xs``: direction and masking around it.

    ``with_steps`` gives ``run`` a ``Steps`` even without lengths (every step valid), for
    implementations that pad the time axis (rematerialized blocks). ``outputs_zeroed``:
    ``run`` zeroes its outputs past each length itself (inside its loop, where that saves
    memory), so they are not zeroed again here."""
    num_steps, batch_size = xs.shape[:2]
    if seq_lengths is None and with_steps:
        seq_lengths = jnp.full((batch_size,), num_steps, jnp.int32)
    steps = steps_of(seq_lengths, num_steps)
    outputs, final_carry = run(cell, params, in_order(xs, steps, reverse), carry, steps, options)
    if not outputs_zeroed:
        outputs = zero_invalid(None if steps is None else steps.valid, outputs)
    return in_order(outputs, steps, reverse), final_carry
