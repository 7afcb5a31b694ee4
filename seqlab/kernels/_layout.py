"""Tiles, the padded layout of one problem, and the padding around a kernel call.

``Tiles`` are the launch settings a user may choose; ``make_layout`` turns them and a
problem's (T, B, H) into a ``Layout``: padded sizes and the (batch blocks, hidden
programs) grid of ``_program.py``'s scheme. The pad and unpad helpers move arrays between
the problem's sizes and the layout's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab._checks import as_lengths, require
from seqlab.typing import Array


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Tile sizes and launch settings of the recurrence kernels (powers of two, >= 16).

    Attributes:
      block_batch: batch rows per program (the M of every per-step matmul). None: the
        batch rounded up to a power of two, between 16 and 64, so that a batch of up to
        64 is one block and each step reads the recurrent matrix once, not once per block.
      block_hidden: hidden units per column tile (the N); a program owns one or more.
      block_k: reduction chunk of the recurrent matmul (the K per ``dot``).
      num_warps: Triton warps per program.
      max_programs: cap on programs in the grid (all must be resident at once for the
        barrier); None means the device's multiprocessor count.

    The defaults are untuned first guesses (no GPU has timed them yet; see
    ``benchmarks/gpu_scan_notes.md``).
    """

    block_batch: int | None = None
    block_hidden: int = 32
    block_k: int = 64
    num_warps: int = 4
    max_programs: int | None = None

    def __post_init__(self):
        for name in ("block_batch", "block_hidden", "block_k"):
            value = getattr(self, name)
            if name == "block_batch" and value is None:
                continue
            require(
                isinstance(value, int) and value >= 16 and value & (value - 1) == 0,
                f"Tiles.{name} must be a power of two >= 16 (Triton's dot needs it), got {value!r}",
            )
        require(
            isinstance(self.num_warps, int) and self.num_warps in (1, 2, 4, 8, 16),
            f"Tiles.num_warps must be one of 1, 2, 4, 8, 16, got {self.num_warps!r}",
        )
        require(
            self.max_programs is None
            or (isinstance(self.max_programs, int) and self.max_programs >= 1),
            f"Tiles.max_programs must be None or a positive int, got {self.max_programs!r}",
        )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class Layout:
    """Padded sizes and the grid for one problem (all static Python ints)."""

    num_steps: int
    batch: int
    hidden: int
    batch_padded: int
    hidden_padded: int
    tiles: Tiles
    hidden_programs: int
    interpret: bool

    @property
    def batch_blocks(self) -> int:
        return self.batch_padded // self.tiles.block_batch

    @property
    def column_tiles(self) -> int:
        return self.hidden_padded // self.tiles.block_hidden

    @property
    def tiles_per_program(self) -> int:
        return self.column_tiles // self.hidden_programs

    @property
    def grid(self) -> tuple[int, int]:
        return (self.batch_blocks, self.hidden_programs)


def program_budget(tiles) -> int:
    """Programs that may be resident at once: ``Tiles.max_programs`` or the SM count."""
    return tiles.max_programs or device_programs()


def device_programs() -> int:
    """How many programs can be resident at once on the default device (its SM count)."""
    device = jax.devices()[0]
    return int(getattr(device, "core_count", 0) or 32)


def make_layout(num_steps: int, batch: int, hidden: int, tiles: Tiles, interpret: bool) -> Layout:
    """Pad B and H to whole tiles and choose how many programs share the hidden axis."""
    if tiles.block_batch is None:
        rows = min(64, max(16, 1 << max(0, batch - 1).bit_length()))
        tiles = dataclasses.replace(tiles, block_batch=rows)
    hidden_padded = _round_up(hidden, max(tiles.block_hidden, tiles.block_k))
    batch_padded = _round_up(batch, tiles.block_batch)
    column_tiles = hidden_padded // tiles.block_hidden
    if interpret:
        programs = 1  # interpret mode runs programs one after another: no barrier possible
    else:
        budget = program_budget(tiles)
        per_block = max(1, budget // (batch_padded // tiles.block_batch))
        programs = max(
            d for d in range(1, column_tiles + 1) if column_tiles % d == 0 and d <= per_block
        )
    return Layout(num_steps, batch, hidden, batch_padded, hidden_padded, tiles, programs, interpret)


def resident_programs_ok(layout: Layout) -> bool:
    """Whether the barrier is safe: one program per batch block needs none, else every
    program of the grid must fit on the device at once (``make_layout`` ensures it)."""
    if layout.interpret or layout.hidden_programs == 1:
        return True
    budget = program_budget(layout.tiles)
    return layout.batch_blocks * layout.hidden_programs <= budget


def pad_gates(array: Array, num_gates: int, hidden: int, hidden_padded: int) -> Array:
    """Pad the last axis, made of ``num_gates`` blocks of ``hidden``, block by block."""
    if hidden == hidden_padded:
        return array
    blocks = array.reshape(array.shape[:-1] + (num_gates, hidden))
    widths = [(0, 0)] * (blocks.ndim - 1) + [(0, hidden_padded - hidden)]
    return jnp.pad(blocks, widths).reshape(array.shape[:-1] + (num_gates * hidden_padded,))


def unpad_gates(array: Array, num_gates: int, hidden: int, hidden_padded: int) -> Array:
    """Inverse of ``pad_gates``."""
    if hidden == hidden_padded:
        return array
    blocks = array.reshape(array.shape[:-1] + (num_gates, hidden_padded))
    return blocks[..., :hidden].reshape(array.shape[:-1] + (num_gates * hidden,))


def pad_sequence(array: Array, layout: Layout, num_gates: int) -> Array:
    """(T, B, G*H) or (B, G*H) -> padded batch and gate blocks."""
    array = pad_gates(array, num_gates, layout.hidden, layout.hidden_padded)
    return pad_axis(array, array.ndim - 2, layout.batch_padded)


def pad_weights(w_hh: Array, layout: Layout, num_gates: int) -> Array:
    """(H, G*H) -> (Hp, G*Hp); the padded rows are zero, so padded units never feed back."""
    w_hh = pad_gates(w_hh, num_gates, layout.hidden, layout.hidden_padded)
    return pad_axis(w_hh, 0, layout.hidden_padded)


def unpad_states(layout: Layout, state: Array, dtype) -> Array:
    """A (T + 1, Bp, Hp) state buffer -> the carry after every step, (T, B, H), in dtype."""
    return state[1:, : layout.batch, : layout.hidden].astype(dtype)


def pad_axis(array: Array, axis: int, size: int) -> Array:
    """Zero-pad ``axis`` of ``array`` up to ``size``."""
    if array.shape[axis] == size:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, size - array.shape[axis])
    return jnp.pad(array, widths)


def check_lengths_dtype(seq_lengths: Array, batch: int) -> Array:
    """(B,) integer lengths as int32 (``seqlab._checks.as_lengths``: values that do not fit
    int32 are refused when concrete, never wrapped)."""
    require(
        seq_lengths.shape == (batch,) and jnp.issubdtype(seq_lengths.dtype, jnp.integer),
        f"seq_lengths must be an int array of shape ({batch},), got "
        f"{seq_lengths.dtype}{tuple(seq_lengths.shape)}",
    )
    return as_lengths(seq_lengths)
