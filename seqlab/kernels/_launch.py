"""Launching a recurrence kernel: the ``pallas_call`` on the persistent grid, and the
``custom_vmap`` rule that keeps a vmapped grid within the programs that can be resident.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import custom_batching, lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from seqlab.kernels._layout import Layout, program_budget
from seqlab.typing import Array


def call(
    kernel: Callable,
    layout: Layout,
    out_shapes: Sequence[jax.ShapeDtypeStruct],
    name: str,
    *inputs: Array,
    poison: bool = False,
) -> list[Array]:
    """``pallas_call`` on the persistent grid. The kernel receives the inputs' refs, a
    barrier counter, then the outputs' refs; every operand is whole (no BlockSpecs: each
    program addresses the rows and columns it owns). ``poison`` starts every output as
    NaN instead of uninitialized memory (``Pallas.poison``).

    Safe under ``jax.vmap``: batched copies of the kernel share one grid only as far as
    all their programs stay resident (``resident_vmap``)."""
    run = functools.partial(_pallas_call, kernel, layout, tuple(out_shapes), name, poison)
    return list(resident_vmap(run, layout)(*inputs))


def _pallas_call(kernel, layout, out_shapes, name, poison, *inputs) -> tuple[Array, ...]:
    out_shapes = list(out_shapes)
    counter = jnp.zeros((layout.batch_blocks,), jnp.int32)
    extra = [counter]
    if poison:
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
    return program_budget(layout.tiles)


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
