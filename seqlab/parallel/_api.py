"""``scan_parallel`` (what ``seqlab.scan(..., implementation="parallel")`` runs) and
``convergence`` (the solve's record, for analysis)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import as_lengths, require
from seqlab._time import Steps, in_order, normalize, run_in_time, steps_of, zero_padding
from seqlab.cells import can_hoist, jacobian_structure
from seqlab.parallel._options import Parallel
from seqlab.parallel._solve import (
    Packing,
    Static,
    check_structure,
    newton,
    recurrence,
    relative_residual,
    step_function,
)
from seqlab.typing import Array, Carry, Params


def _widened(tree):
    """Floating leaves narrower than float32 (bfloat16, float16) as float32."""

    def widen(leaf):
        dtype = jnp.dtype(leaf.dtype)
        if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
            return leaf.astype(jnp.float32)
        return leaf

    return jax.tree_util.tree_map(widen, tree)


def _cast_like(tree, like):
    return jax.tree_util.tree_map(lambda leaf, want: leaf.astype(want.dtype), tree, like)


def _problem(cell, params, xs, carry, options):
    """(static, inputs, packed start) for the solver, from time-major, forward-ordered
    ``xs`` and settled ``options`` (``hoist`` a bool)."""
    structure = jacobian_structure(cell)
    packing = Packing.of(carry, 1)
    check_structure(structure, packing)
    static = Static(cell, options.hoist, packing, options, structure)
    inputs = cell.project_inputs(params, xs) if options.hoist else xs
    return static, inputs, packing.pack(carry)


def settle_parallel(cell, options: Parallel, hoist: bool | None = None) -> Parallel:
    """``options`` with ``hoist`` decided (``hoist`` given, else ``options.hoist``): None
    hoists when the cell can (the projection then runs once, not per iteration); True on
    a cell without ``project_inputs`` raises ValueError, as ``seqlab.scan`` does."""
    hoist = options.hoist if hoist is None else hoist
    require(
        hoist is not True or can_hoist(cell),
        f"hoist_input_projection=True needs a cell with project_inputs and step_projected; "
        f"{type(cell).__name__} has none",
    )
    return dataclasses.replace(options, hoist=can_hoist(cell) and hoist is not False)


def run_parallel(
    cell, params: Params, xs: Array, carry: Carry, steps: Steps | None, options: Parallel
):
    """The parallel solve under ``seqlab/_time.py``'s contract (time-major, forward-ordered
    ``xs``, T >= 1, the carry frozen past each length): (outputs, final carry).

    The solve runs in float32 at least: bfloat16 or float16 parameters, inputs and carries
    are widened for it (Newton's stopping rule cannot be met in bfloat16, whose 64·eps is
    0.5) and its outputs and final carry are rounded back to the dtypes the cell's own
    step gives.
    """
    wanted = jax.eval_shape(cell.step, params, carry, xs[0])  # (carry, output) dtypes
    params, xs, carry = _widened((params, xs, carry))
    static, inputs, start = _problem(cell, params, xs, carry, settle_parallel(cell, options))
    states, outputs = recurrence(static, params, inputs, start, _valid(steps))
    final_carry = static.packing.unpack(states[-1])
    return _cast_like(outputs, wanted[1]), _cast_like(final_carry, wanted[0])


def _valid(steps: Steps | None):
    return None if steps is None else steps.valid


def scan_parallel(
    cell,
    params: Params,
    xs: Array,
    carry: Carry,
    *,
    seq_lengths: Array | None,
    reverse: bool,
    hoist: bool,
    options: Parallel,
):
    """Unroll ``cell`` over time-major ``xs`` (T >= 1) by the parallel solve; returns
    (outputs, final carry) exactly as ``seqlab.scan(..., time_major=True,
    implementation=options)`` does, with its rules for lengths (any integer dtype, clamped
    to [0, T]) and padding (zeroed before the solve), through the same
    ``seqlab/_time.py``.
    """
    if seq_lengths is not None:  # a public function: the front door's rules hold here too
        seq_lengths = jnp.clip(as_lengths(seq_lengths), 0, xs.shape[0])
        xs = zero_padding(xs, seq_lengths)
    return run_in_time(
        run_parallel,
        cell,
        params,
        xs,
        carry,
        seq_lengths=seq_lengths,
        reverse=reverse,
        # run_parallel settles hoisting (and refuses True for a cell that cannot hoist)
        options=dataclasses.replace(options, hoist=bool(hoist)),  # None: not hoisted
    )


@dataclasses.dataclass(frozen=True)
class Convergence:
    """The record of one parallel solve (``seqlab.parallel.convergence``).

    Attributes:
      iterations: Newton iterations (linear solves) done; 1 for linear-diagonal cells.
      converged: whether every sequence met the tolerance (if not, ``seqlab.scan`` runs
        the sequential scan instead).
      residuals: the largest relative residual over the batch after each iteration
        (length ``iterations``; see ``Parallel`` for the definition).
      initial_residual: the same before the first iteration (from the start trajectory,
        every state equal to the initial carry).
      tolerance: the tolerance in force.
      jacobian: the Jacobians used: ``"elementwise"``, ``"block"`` or ``"dense"``.
      structure: the cell's declared ``jacobian_structure``.
    """

    iterations: int
    converged: bool
    residuals: np.ndarray
    initial_residual: float
    tolerance: float
    jacobian: str
    structure: str


def _record(static, params, inputs, start, valid):
    solution = newton(static, params, inputs, start, valid)
    f_all = step_function(static, params, inputs, valid)[0]
    num_steps = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    states0 = jnp.broadcast_to(start[None], (num_steps, *start.shape))
    args = (states0, inputs) if valid is None else (states0, inputs, valid)
    initial = jnp.max(relative_residual(states0, f_all(*args)[0]))  # s_{t-1} = start too
    return solution.iterations, solution.converged, solution.residuals, initial


_record_cached = jax.jit(_record, static_argnums=(0,))


def _solve_record(static, params, inputs, start, valid):
    try:
        hash(static)
    except TypeError:  # an unhashable cell (a mutable dataclass), as ``seqlab.scan`` takes:
        # jitted over a closure, compiled on every call
        return jax.jit(functools.partial(_record, static))(params, inputs, start, valid)
    return _record_cached(static, params, inputs, start, valid)


def convergence(
    cell,
    params: Params,
    xs: Array,
    carry: Carry | None = None,
    *,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    options: Parallel | None = None,
    hoist_input_projection: bool | None = None,
) -> Convergence:
    """Run the parallel solve of ``seqlab.scan(cell, params, xs, carry, ...,
    implementation=options)`` without its fallback and return its record.

    Arguments as for ``seqlab.scan``; ``options`` a ``Parallel`` (default ``Parallel()``).
    The solve runs jitted; the record's numbers are concrete Python/NumPy values.
    """
    options = Parallel() if options is None else options
    if not isinstance(options, Parallel):
        raise ValueError(f"options must be a seqlab.parallel.Parallel, got {options!r}")
    if hoist_input_projection is not None:
        require(
            options.hoist is None or options.hoist == hoist_input_projection,
            f"hoist_input_projection={hoist_input_projection!r} and the options object's "
            f"{options.hoist!r} disagree; give it once",
        )
        options = dataclasses.replace(options, hoist=hoist_input_projection)
    xs, carry, seq_lengths = normalize(
        cell, params, xs, carry, seq_lengths=seq_lengths, time_major=time_major
    )
    num_steps, batch_size = xs.shape[:2]
    if num_steps == 0 or batch_size == 0:
        raise ValueError(
            "convergence needs at least one time step and one sequence, got "
            f"T = {num_steps}, B = {batch_size}"
        )
    steps = steps_of(seq_lengths, num_steps)
    params, xs, carry = _widened((params, xs, carry))
    static, inputs, start = _problem(
        cell, params, in_order(xs, steps, reverse), carry, settle_parallel(cell, options)
    )
    iterations, converged, residuals, initial = jax.device_get(
        _solve_record(static, params, inputs, start, _valid(steps))
    )
    iterations = int(iterations)
    return Convergence(
        iterations=iterations,
        converged=bool(converged),
        residuals=np.asarray(residuals[:iterations], np.float64),
        initial_residual=float(initial),
        tolerance=options.tolerance_for(static.packing.dtype),
        jacobian=static.forward_form.kind,
        structure=static.structure,
    )
