"""The machinery every recurrence kernel shares: tiles, padding, the grid, the step barrier.

The scheme (persistent RNN, Diamos et al. 2016; the split FlashRNN and cuDNN's persistent
kernels use): one kernel launch walks the whole sequence. The grid is

    (batch blocks, hidden programs)

Program (b, p) owns ``block_batch`` rows of the batch and a contiguous run of
``block_hidden``-wide column tiles of the hidden state, in every gate. Per time step it
reads the *whole* previous hidden state of its rows (written by all programs of its batch
block at the previous step), multiplies it by its own columns of the recurrent matrix
(the reduction runs in ``block_k`` chunks), applies the gate math to its own columns and
writes its slice of the new state. The programs of a batch block then meet at a grid
barrier before the next step. The input projection of all steps is one large XLA matmul
outside the kernel, so each step's work is the recurrent matmul plus fused gate math.

State lives in a (T + 1)-long buffer (row 0 = the initial state, row t + 1 = the carry
after step t), so a step never writes where another program may still be reading: no
double buffering is needed, and one barrier per dependent phase suffices. The buffer is
also the residual the backward kernel needs, and the backward kernel is the same scheme
run from the last step to the first, with the transposed recurrent matrix.

The barrier is a per-batch-block int32 counter in global memory: each program syncs its
threads (so its stores are done), adds one with an acquire-release atomic, then polls the
counter with atomic reads (acquires) until all programs of its block have arrived. All
programs must be resident at once, so their number is capped at the device's
multiprocessor count. Loads of state written by other programs are volatile (they bypass
L1; jax 0.10.2 cannot lower the ``.cg`` cache modifier: its table lacks the dots it
checks for).

Under ``jax.vmap`` (seeds, say) Pallas would add a grid axis and multiply the programs
past what can be resident; ``resident_vmap`` runs as many copies side by side as fit and
maps over the rest.

On CPU the same kernels run in Pallas interpret mode. Interpret mode runs the programs
of a grid one after another, so there the hidden axis is a single program that loops
over all column tiles, and the barrier is a no-op; everything else (tiling, padding,
masking, gate math, the reverse-time backward) is the code that runs on the GPU. The
barrier itself is only lowered (to Triton IR, for "cuda", on a CPU machine: see
tests/test_kernels.py::TestLowering), not run, until a GPU runs benchmarks/gpu_scan.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import custom_batching, lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from seqlab._checks import require
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
        budget = tiles.max_programs or device_programs()
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
    budget = layout.tiles.max_programs or device_programs()
    return layout.batch_blocks * layout.hidden_programs <= budget


# --- padding ---------------------------------------------------------------------------


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


# --- inside kernels --------------------------------------------------------------------


class Program:
    """What one program knows about itself inside a kernel: its rows, its column tiles,
    and how to meet the other programs of its batch block."""

    def __init__(self, layout: Layout, counter_ref):
        self.layout = layout
        self.counter_ref = counter_ref
        self.block = pl.program_id(0)
        self.rank = pl.program_id(1)
        self.rows = pl.ds(
            pl.multiple_of(self.block * layout.tiles.block_batch, layout.tiles.block_batch),
            layout.tiles.block_batch,
        )
        self._arrivals = 0

    def for_own_tiles(self, body: Callable[[Array], None]) -> None:
        """Run ``body(column)`` for the first column of each tile this program owns."""
        width = self.layout.tiles.block_hidden
        per_program = self.layout.tiles_per_program
        first = self.rank * per_program

        def run(index):
            body(pl.multiple_of((first + index) * width, width))

        if per_program == 1:
            run(0)
        else:
            lax.fori_loop(0, per_program, lambda i, c: (run(i), c)[1], 0)

    def sync(self, arrival: Array | int) -> None:
        """Barrier among the programs of this batch block.

        ``arrival`` counts the barriers this program has passed including this one
        (1, 2, ...); the counter only grows, so no reset is needed between steps.
        """
        if self.layout.interpret:
            return  # programs run in order; there is nothing to wait for
        plgpu.debug_barrier()  # every thread of this program has issued its stores
        programs = self.layout.hidden_programs
        if programs == 1:
            return
        # Arrive with an acquire-release atomic, then poll with atomic reads (adding 0):
        # each poll is an acquire at GPU scope, so once the count is reached this program
        # sees every store the other programs made before they arrived.
        target = programs * arrival
        seen = plgpu.atomic_add(self.counter_ref, self.block, 1) + 1

        def poll(_):
            return plgpu.atomic_add(self.counter_ref, self.block, 0)

        lax.while_loop(lambda count: count < target, poll, seen)
        plgpu.debug_barrier()  # no thread reads shared state before the poll succeeded

    def load_shared(self, ref, index) -> Array:
        """Load state other programs wrote (bypassing L1 on the GPU)."""
        if self.layout.interpret or self.layout.hidden_programs == 1:
            return ref[index]
        return plgpu.load(ref.at[index], volatile=True)


def accumulate(
    program: Program,
    terms: Sequence[tuple[Callable, Sequence[tuple[Callable, bool, int]]]],
    num_outputs: int,
    matmul_dtype,
    precision,
) -> list[Array]:
    """Sums of small matmuls over the hidden axis, in ``block_k`` chunks.

    ``terms`` is a list of ``(lhs, products)``: ``lhs(k0)`` loads chunk k0 of a left
    operand, (block_batch, block_k), once; each ``(rhs, transpose, output)`` in
    ``products`` multiplies it by ``rhs(k0)``, (block_k, block_hidden) or its transpose
    when ``transpose``, into accumulator ``output`` (one of ``num_outputs``). Operands are
    cast to ``matmul_dtype``; accumulation is float32.
    """
    layout = program.layout
    chunk = layout.tiles.block_k
    shape = (layout.tiles.block_batch, layout.tiles.block_hidden)

    def body(index, sums):
        k0 = pl.multiple_of(index * chunk, chunk)
        sums = list(sums)
        for lhs, products in terms:
            left = lhs(k0).astype(matmul_dtype)
            for rhs, transpose, output in products:
                contract = (((1,), (1 if transpose else 0,)), ((), ()))
                sums[output] = sums[output] + lax.dot_general(
                    left,
                    rhs(k0).astype(matmul_dtype),
                    contract,
                    precision=precision,
                    preferred_element_type=jnp.float32,
                )
        return tuple(sums)

    start = tuple(jnp.zeros(shape, jnp.float32) for _ in range(num_outputs))
    return list(lax.fori_loop(0, layout.hidden_padded // chunk, body, start))


def run_steps(
    program: Program,
    num_steps: int,
    phases: Sequence[tuple[Callable, bool]],
    reverse: bool,
) -> None:
    """Walk time: at each step run every phase over this program's tiles.

    ``phases`` holds ``(phase, sync)``: ``phase(t, column)`` runs for each owned tile,
    then, when ``sync``, a barrier (needed before anything reads what the phase wrote in
    other programs' columns). ``reverse`` walks from the last step to the first. The
    barrier after the initial state is written counts as arrival 1.
    """
    per_step = sum(1 for _, sync in phases if sync)

    def step(index, carry):
        t = num_steps - 1 - index if reverse else index
        arrivals = 1 + index * per_step
        for phase, sync in phases:
            program.for_own_tiles(lambda column, phase=phase: phase(t, column))
            if sync:
                arrivals = arrivals + 1
                program.sync(arrivals)
        return carry

    lax.fori_loop(0, num_steps, step, 0)


_POISON = {"on": False}


@contextlib.contextmanager
def poisoned_outputs():
    """Within this context every kernel output starts as NaN instead of uninitialized
    memory, so a result free of NaN shows the kernels wrote every element they use (the
    padding included: an unwritten padded unit would reach every result through the
    matmuls). For checks only; it costs a fill and an aliased input per output."""
    previous, _POISON["on"] = _POISON["on"], True
    try:
        yield
    finally:
        _POISON["on"] = previous


def call(
    kernel: Callable,
    layout: Layout,
    out_shapes: Sequence[jax.ShapeDtypeStruct],
    name: str,
    *inputs: Array,
) -> list[Array]:
    """``pallas_call`` on the persistent grid. The kernel receives the inputs' refs, a
    barrier counter, then the outputs' refs; every operand is whole (no BlockSpecs: each
    program addresses the rows and columns it owns).

    Safe under ``jax.vmap``: batched copies of the kernel share one grid only as far as
    all their programs stay resident (``resident_vmap``)."""
    run = functools.partial(_pallas_call, kernel, layout, tuple(out_shapes), name)
    return list(resident_vmap(run, layout)(*inputs))


def _pallas_call(kernel, layout, out_shapes, name, *inputs) -> tuple[Array, ...]:
    out_shapes = list(out_shapes)
    counter = jnp.zeros((layout.batch_blocks,), jnp.int32)
    extra = [counter]
    if _POISON["on"]:
        extra += [jnp.full(shape.shape, jnp.nan, shape.dtype) for shape in out_shapes]
    all_shapes = out_shapes + [jax.ShapeDtypeStruct(counter.shape, counter.dtype)]
    first = len(inputs)
    aliases = {first: len(all_shapes) - 1}  # the counter, where the atomics happen
    aliases.update({first + 1 + index: index for index in range(len(extra) - 1)})

    def with_counter(*refs):
        ins = refs[:first]
        outs = refs[first + len(extra) :]
        kernel(*ins, outs[-1], *outs[:-1])

    results = pl.pallas_call(
        with_counter,
        out_shape=all_shapes,
        grid=layout.grid,
        input_output_aliases=aliases,
        interpret=layout.interpret,
        name=name,
        compiler_params=None
        if layout.interpret
        else plgpu.CompilerParams(num_warps=layout.tiles.num_warps, num_stages=1),
    )(*inputs, *extra)
    return tuple(results[:-1])


def resident_budget(layout: Layout) -> int:
    """Programs that may be resident at once: ``Tiles.max_programs`` or the SM count."""
    return layout.tiles.max_programs or device_programs()


def resident_vmap(run: Callable, layout: Layout, copies: int = 1) -> Callable:
    """``run`` (a kernel call whose grid already holds ``copies`` batched copies of
    ``layout``'s grid) with a vmap rule that keeps every grid within the resident budget.

    Pallas batches a kernel by adding a grid axis, so under ``jax.vmap`` over n seeds the
    grid holds n times the programs, and a step barrier could wait forever on programs
    that cannot start until others finish. Here a vmapped kernel runs as many copies side
    by side as fit in ``resident_budget`` (at least one) and ``lax.map``s over such groups,
    the remainder last. Nested vmaps compose: each level knows how many copies the grid
    holds already. A grid with one program per batch block has no barrier to wait on and is
    batched whole on the GPU; interpret mode applies the budget anyway, so CPU tests cover
    the grouping."""
    per_copy = layout.batch_blocks * layout.hidden_programs
    limited = layout.interpret or layout.hidden_programs > 1
    guarded = custom_batching.custom_vmap(run)

    @guarded.def_vmap
    def rule(axis_size, in_batched, *args):
        fits = max(1, resident_budget(layout) // (per_copy * copies)) if limited else axis_size
        group = min(fits, axis_size)
        axes = [0 if batched else None for batched in in_batched]

        def side_by_side(count, *batched_args):
            merged = iter(batched_args)
            full = [next(merged) if b else a for a, b in zip(args, in_batched, strict=True)]
            native = jax.vmap(run, in_axes=axes, axis_size=count)
            return resident_vmap(native, layout, copies * count)(*full)

        batched_args = [a for a, b in zip(args, in_batched, strict=True) if b]
        groups, remainder = divmod(axis_size, group)
        pieces = []
        if groups == 1:
            pieces.append(side_by_side(group, *[a[:group] for a in batched_args]))
        else:
            grouped = [
                a[: groups * group].reshape((groups, group) + a.shape[1:]) for a in batched_args
            ]
            stacked = lax.map(lambda xs: side_by_side(group, *xs), grouped)
            pieces.append([y.reshape((groups * group,) + y.shape[2:]) for y in stacked])
        if remainder:
            rest = [a[groups * group :] for a in batched_args]
            pieces.append(side_by_side(remainder, *rest))
        outputs = tuple(
            jnp.concatenate(parts) if len(parts) > 1 else parts[0]
            for parts in zip(*pieces, strict=True)
        )
        return outputs, tuple(True for _ in outputs)

    return guarded


def matmul_precision(dtype) -> lax.Precision:
    """Precision of the in-kernel matmuls: full float32 when JAX's default matmul
    precision asks for it (``jax.default_matmul_precision("highest")``), else the
    device default (TF32 for float32 on NVIDIA GPUs), as XLA's own matmuls do."""
    setting = jax.config.jax_default_matmul_precision
    if jnp.dtype(dtype) == jnp.float32 and setting in ("highest", "float32", "HIGHEST"):
        return lax.Precision.HIGHEST
    return lax.Precision.DEFAULT


def reference_matmul(lhs: Array, weights: Array) -> Array:
    """``lhs @ weights`` as the kernels compute it, for the plain references: operands in
    the weights' dtype (bfloat16 weights round the float32 state, as cuDNN and XLA do),
    accumulation in float32."""
    return jnp.dot(lhs.astype(weights.dtype), weights, preferred_element_type=jnp.float32)


BACKWARDS = ("pallas", "xla")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Static settings of one kernel call (hashable: a ``custom_vjp`` nondiff argument).

    ``backward="pallas"`` runs the fused reverse-time kernel; ``"xla"`` differentiates the
    plain reference with JAX autodiff instead (for debugging a kernel's gradients).
    """

    tiles: Tiles
    backward: str
    interpret: bool


def resolve_settings(tiles: Tiles | None, backward: str, interpret: bool | None) -> Settings:
    require(
        backward in BACKWARDS,
        f"backward must be one of {list(BACKWARDS)}, got {backward!r}",
    )
    require(
        tiles is None or isinstance(tiles, Tiles),
        f"tiles must be a seqlab.kernels.Tiles or None, got {type(tiles).__name__}",
    )
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    return Settings(tiles or Tiles(), backward, bool(interpret))


def check_lengths_dtype(seq_lengths: Array, batch: int) -> Array:
    require(
        seq_lengths.shape == (batch,) and jnp.issubdtype(seq_lengths.dtype, jnp.integer),
        f"seq_lengths must be an int array of shape ({batch},), got "
        f"{seq_lengths.dtype}{tuple(seq_lengths.shape)}",
    )
    return seq_lengths.astype(jnp.int32)
