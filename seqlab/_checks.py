"""Input validation that turns shape and value mistakes into ValueErrors.

Shape assertions go through chex, whose AssertionError messages are good; we re-raise
them as ValueError with the argument's name so that callers see one exception type.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import numpy as np


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)


def check_one_of(name: str, value, allowed) -> None:
    """``value`` must be one of ``allowed`` (a table's keys, or a tuple of choices)."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def check_positive(name: str, value) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def check_non_negative(name: str, value) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _as_value_error(name: str, check: Callable[[], None]) -> None:
    try:
        check()
    except AssertionError as error:
        raise ValueError(f"{name}: {error}") from None


def check_rank(name: str, array, rank: int, meaning: str) -> None:
    """``array`` must have ``rank`` dimensions; ``meaning`` names them, e.g. '(B, T, D)'."""
    if not hasattr(array, "shape"):
        raise ValueError(f"{name} must be an array of shape {meaning}, got {type(array).__name__}")
    _as_value_error(
        name,
        lambda: chex.assert_rank(
            array, rank, custom_message=f"expected shape {meaning}, got {tuple(array.shape)}"
        ),
    )


def check_floating(name: str, array) -> None:
    if not jax.numpy.issubdtype(array.dtype, jax.numpy.floating):
        raise ValueError(f"{name} must have a floating dtype, got {array.dtype}")


def check_integer(name: str, array) -> None:
    if not jax.numpy.issubdtype(array.dtype, jax.numpy.integer):
        raise ValueError(f"{name} must have an integer dtype, got {array.dtype}")


def is_concrete(array) -> bool:
    """True when ``array``'s values are known now (not a tracer inside jit/vmap/grad)."""
    try:
        np.asarray(array)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    return True


INT32_MAX = int(np.iinfo(np.int32).max)


def as_lengths(seq_lengths, name: str = "seq_lengths") -> jax.Array:
    """``seq_lengths`` as an int32 array, whatever integer dtype it arrived in.

    Lengths of a narrow dtype (uint8, int8, int16) would wrap when compared against a time
    index of their own dtype (a uint8 length of 100 against T = 300 valid for 88 steps), so
    every consumer gets int32. Concrete values are checked before the cast: a value that
    does not fit int32 (an int64 ``2**40``, which the cast would wrap to 0) is refused.
    """
    if not is_concrete(seq_lengths):  # traced: the dtype is all that can be checked
        check_integer(name, seq_lengths)
        seq_lengths = jax.numpy.asarray(seq_lengths)
        info = jax.numpy.iinfo(seq_lengths.dtype)
        if info.max > INT32_MAX:  # saturate, never wrap: above T acts as T, as documented
            seq_lengths = jax.numpy.minimum(seq_lengths, INT32_MAX)
        if info.min < -INT32_MAX - 1:
            seq_lengths = jax.numpy.maximum(seq_lengths, -INT32_MAX - 1)
        return seq_lengths.astype(jax.numpy.int32)
    values = np.asarray(seq_lengths)
    if values.dtype == object or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {values.dtype}")
    if values.size and (int(values.max()) > INT32_MAX or int(values.min()) < -INT32_MAX - 1):
        index = int(np.argmax((values > INT32_MAX) | (values < -INT32_MAX - 1)))
        raise ValueError(
            f"{name} must fit int32 (at most {INT32_MAX}); "
            f"{name}[{index}] = {int(values.reshape(-1)[index])}"
        )
    return jax.numpy.asarray(values.astype(np.int32))


def check_seq_lengths(seq_lengths, batch_size: int, max_length: int) -> jax.Array:
    """Validate ``seq_lengths``: integers of shape (B,) within [0, T]; returns int32.

    Whatever integer dtype they arrive in, the lengths are upcast to int32 first
    (``as_lengths``). The range is checked whenever the values are concrete. Inside
    ``jit`` they are traced and cannot be checked; there they are clamped: a length above
    T acts as T and one below 0 as 0, for every implementation and both directions (the
    returned lengths are the clamped ones; a reverse scan indexes with them).
    """
    seq_lengths = as_lengths(seq_lengths)
    require(
        seq_lengths.shape == (batch_size,),
        f"seq_lengths must have shape (B,) = ({batch_size},), got {tuple(seq_lengths.shape)}",
    )
    if is_concrete(seq_lengths):
        values = np.asarray(seq_lengths)
        bad = (values < 0) | (values > max_length)
        if bad.any():
            index = int(np.argmax(bad))
            raise ValueError(
                f"seq_lengths must lie in [0, T] = [0, {max_length}]; "
                f"seq_lengths[{index}] = {int(values[index])}"
            )
    return jax.numpy.clip(seq_lengths, 0, max_length)


def check_same_structure(name: str, got, expected) -> None:
    """``got`` must have the tree structure and leaf shapes of ``expected``."""
    got_structure = jax.tree_util.tree_structure(got)
    expected_structure = jax.tree_util.tree_structure(expected)
    require(
        got_structure == expected_structure,
        f"{name} has the wrong structure: expected {expected_structure}, got {got_structure}",
    )
    for (path, leaf), want in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(expected), strict=True
    ):
        require(
            hasattr(leaf, "shape") and tuple(leaf.shape) == tuple(want.shape),
            f"{name}{jax.tree_util.keystr(path)} must have shape {tuple(want.shape)}, "
            f"got {tuple(getattr(leaf, 'shape', ()))}",
        )
