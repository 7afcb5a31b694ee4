"""``seqlab.scan``: the one public entry point for unrolling a cell over time."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from seqlab._checks import (
    check_floating,
    check_rank,
    check_same_structure,
    check_seq_lengths,
    require,
)
from seqlab._padding import zero_padding
from seqlab.cells._base import can_hoist, check_cell
from seqlab.kernels import Pallas
from seqlab.parallel import Parallel, scan_parallel
from seqlab.typing import Array, Carry, Params
from seqlab.unroll._bptt import hand_derived, scan_bptt
from seqlab.unroll._pallas import scan_pallas, unsupported_reason
from seqlab.unroll._policy import AUTO_PALLAS, hoist_small, resolve_unroll, should_hoist
from seqlab.unroll._reference import scan_xla

IMPLEMENTATIONS = (None, "xla", "xla-autodiff", "pallas", "parallel")


def resolve_implementation(
    implementation, cell=None, params=None, xs=None, carry=None, *, hoist=True, remat=False
):
    """Map ``implementation`` to ``("xla", None)``, ``("xla-autodiff", None)``,
    ``("pallas", Pallas options)`` or ``("parallel", Parallel options)``.

    ``None`` chooses by the table in ``seqlab/unroll/_policy.py`` (``AUTO_PALLAS``): the
    Pallas kernels where that table enables them for the backend and they support the
    cell, dtypes and settings; XLA otherwise. ``"pallas"`` or a ``seqlab.kernels.Pallas``
    asked for explicitly on something the kernels do not support raises ValueError with
    the reason. Without a cell (the first positional argument only) just the name is
    checked.
    """
    if implementation in (None, "xla", "xla-autodiff"):
        name, options = implementation, None
    elif implementation == "pallas" or isinstance(implementation, Pallas):
        name = "pallas"
        options = implementation if isinstance(implementation, Pallas) else Pallas()
    elif implementation == "parallel" or isinstance(implementation, Parallel):
        name = "parallel"
        options = implementation if isinstance(implementation, Parallel) else Parallel()
    else:
        raise ValueError(
            f"implementation must be one of {list(IMPLEMENTATIONS)}, a "
            f"seqlab.kernels.Pallas or a seqlab.parallel.Parallel, got {implementation!r}"
        )
    if cell is None or name in ("xla", "xla-autodiff"):
        return name or "xla", options
    if name == "parallel":
        require(
            remat is False,
            "implementation='parallel' cannot run this scan: remat does not apply (the "
            "parallel solve keeps every step's state; its backward stores only the states)",
        )
        return name, options
    reason = unsupported_reason(cell, params, xs, carry)
    if reason is None and remat is not False:
        reason = "remat does not apply: the kernels save only what their backward needs"
    if reason is None and not hoist:
        reason = "the kernels always hoist the input projection (hoist_input_projection=False)"
    if name is None:
        automatic = jax.default_backend() in AUTO_PALLAS and reason is None
        return ("pallas", Pallas()) if automatic else ("xla", None)
    require(reason is None, f"implementation='pallas' cannot run this scan: {reason}")
    return name, options


def _resolve_remat(remat: bool | int, num_steps: int) -> int | None:
    """The block length for ``remat`` (None: no rematerialization)."""
    if remat is False:
        return None
    if remat is True:
        return max(1, math.isqrt(num_steps))
    require(
        isinstance(remat, int) and remat >= 1,
        f"remat must be a bool or a positive int (the block length), got {remat!r}",
    )
    return remat


def _check_step_accepts(cell, params, carry, x_t) -> None:
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


def scan(
    cell,
    params: Params,
    xs: Array,
    carry: Carry | None = None,
    *,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    implementation: str | None = None,
    hoist_input_projection: bool | None = None,
    remat: bool | int = False,
) -> tuple[Array, Carry]:
    """Run ``cell`` over a batch of sequences.

    Args:
      cell: any object with ``init``, ``initial_carry`` and ``step`` (``seqlab.cells``).
      params: the cell's parameters, from ``cell.init``.
      xs: inputs, (B, T, D), or (T, B, D) when ``time_major``.
      carry: the initial carry; ``cell.initial_carry(params, (B,))`` when None. It must have
        that structure and those shapes.
      seq_lengths: optional int array (B,) with values in [0, T], of any integer dtype
        (upcast to int32 first: a uint8 length never wraps; concrete values that do not
        fit int32 are refused). Step t of sequence b is valid when t < seq_lengths[b];
        past it the carry stays frozen and the output is exactly zero, so the final carry
        is the carry at the last valid step. What ``xs`` holds past a length never
        matters, NaN and inf included: those inputs are replaced by zeros before any
        implementation sees them, so they reach no output and no gradient.
      reverse: run from the end of each sequence to its start. With ``seq_lengths`` each
        sequence is reversed within its own length (PyTorch packed-sequence semantics):
        the backward pass over sequence b starts at step seq_lengths[b] - 1. Outputs stay
        aligned with the inputs' time positions.
      time_major: whether xs and outputs are (T, B, ...) rather than (B, T, ...).
      unroll: passed to ``lax.scan`` (steps per loop iteration; True unrolls fully). None
        picks the measured per-backend default in ``seqlab/unroll/_policy.py`` (1 on CPU,
        8 on GPU).
      implementation: None (choose automatically, by the table in
        ``seqlab/unroll/_policy.py``), ``"xla"`` (``lax.scan``; for the built-in
        ``cells.RNN``, ``LSTM``, ``GRU`` and ``MGU``, also inside
        ``cells.TrainableInitialState``, differentiated by the cells' hand-derived
        backward: one reverse-time scan carrying only the state gradients, weight
        gradients as single matmuls after it, see ``seqlab/unroll/_bptt.py``; reverse
        mode only: ``jax.jvp`` / ``jax.jacfwd`` raise, use ``"xla-autodiff"`` for them;
        any other cell, subclasses included, gets autodiff), ``"xla-autodiff"``
        (``lax.scan`` differentiated by JAX's autodiff for every cell: the reference the
        hand-derived backward is tested against), or ``"pallas"`` / a
        ``seqlab.kernels.Pallas`` (fused kernels for ``cells.RNN``, ``LSTM`` without
        projection and ``GRU``, also inside ``cells.TrainableInitialState``, float32 or
        bfloat16; on a CPU they run in Pallas interpret mode, exact but slow). Pallas
        always hoists the input projection and ignores ``unroll``; with ``remat``,
        ``hoist_input_projection=False``, another cell or dtype it raises ValueError
        naming the reason. ``"parallel"`` / a ``seqlab.parallel.Parallel``: all steps
        at once, for any cell: one associative scan for linear-state cells
        (``cells.MinGRU``, ``MinLSTM``), Newton iterations of associative scans for the
        rest (DEER / ParaRNN; exact diagonal Jacobians for ``DiagGRU``, 2x2 blocks for
        ``DiagLSTM``, full or diagonal ones for dense cells), falling back to the
        sequential scan inside the same program when the solve has not converged;
        gradients by the adjoint recurrence, not through the iterations (see
        ``seqlab.parallel``); ignores ``unroll``, raises with ``remat``. Anything else
        raises too.
      hoist_input_projection: compute the input projection of all steps as one matmul
        before the loop (cells with ``project_inputs`` only). None picks the measured
        per-backend default in ``seqlab/unroll/_policy.py`` (for the hand-derived
        backward on a CPU: hoist only when the projected inputs have at most 2**21
        values).
      remat: rematerialize for long sequences: run time in blocks under ``jax.checkpoint``
        so the backward pass stores only the carries at block borders and recomputes the
        rest. True uses blocks of about sqrt(T) steps; an int sets the block length.
        Gradients are unchanged; memory falls from O(T) to O(T / block + block) steps'
        worth of activations at the cost of one extra forward pass.

    Returns:
      ``(outputs, final_carry)``: outputs (B, T, ...) or (T, B, ...) as the cell's
      output per step; final_carry with the structure of ``carry``.

    Composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (backpropagation through time).
    An empty batch (B = 0) or empty sequences (T = 0) give empty outputs and the initial
    carry back, in every implementation. Second-order reverse mode (``jax.grad`` of a
    gradient) works on ``"xla"`` and ``"xla-autodiff"``; on ``"parallel"`` only for the
    linear-state cells: for the others it raises ValueError naming the alternatives.
    Value checks on ``seq_lengths`` happen when the lengths are concrete; inside ``jit``
    a length above T acts as T and one below 0 as 0.
    """
    check_cell(cell)
    check_rank("xs", xs, 3, "(T, B, D)" if time_major else "(B, T, D)")
    check_floating("xs", xs)
    resolve_implementation(implementation)  # a bad name fails before anything is traced
    hoist = should_hoist(cell, hoist_input_projection)
    unroll = resolve_unroll(unroll)
    remat_block = _resolve_remat(remat, xs.shape[0] if time_major else xs.shape[1])

    xs_time_major = xs if time_major else jnp.swapaxes(xs, 0, 1)
    num_steps, batch_size = xs_time_major.shape[:2]
    if carry is None:
        carry = cell.initial_carry(params, (batch_size,))
    else:
        expected = jax.eval_shape(lambda p: cell.initial_carry(p, (batch_size,)), params)
        check_same_structure("carry", carry, expected)
    if seq_lengths is not None:
        seq_lengths = check_seq_lengths(seq_lengths, batch_size, num_steps)  # int32
        xs_time_major = zero_padding(xs_time_major, seq_lengths)  # no padding in products
    x_t = jax.ShapeDtypeStruct(xs_time_major.shape[1:], xs_time_major.dtype)
    _check_step_accepts(cell, params, carry, x_t)
    implementation, options = resolve_implementation(
        implementation,
        cell,
        params,
        xs_time_major,
        carry,
        hoist=hoist_input_projection is not False,
        remat=remat,
    )

    if num_steps == 0 or batch_size == 0:  # nothing to compute: every implementation agrees
        implementation = "xla-autodiff"
    match implementation:
        case "xla" | "xla-autodiff":
            derived = implementation == "xla" and hand_derived(cell) and num_steps > 0
            if derived and hoist_input_projection is None:
                width = jax.eval_shape(cell.project_inputs, params, x_t).shape[-1]
                hoist = hoist_small(num_steps * batch_size * width)
            unroll_xla = scan_bptt if derived else scan_xla
            outputs, final_carry = unroll_xla(
                cell,
                params,
                xs_time_major,
                carry,
                seq_lengths=seq_lengths,
                reverse=reverse,
                unroll=unroll,
                hoist=hoist,
                remat_block=remat_block,
            )
        case "parallel":
            outputs, final_carry = scan_parallel(
                cell,
                params,
                xs_time_major,
                carry,
                seq_lengths=seq_lengths,
                reverse=reverse,
                # hoisted by default: the projection then runs once, not per iteration
                hoist=can_hoist(cell) and hoist_input_projection is not False,
                options=options,
            )
        case "pallas":
            outputs, final_carry = scan_pallas(
                cell,
                params,
                xs_time_major,
                carry,
                seq_lengths=seq_lengths,
                reverse=reverse,
                options=options,
            )
    if not time_major:
        outputs = jax.tree_util.tree_map(lambda y: jnp.swapaxes(y, 0, 1), outputs)
    return outputs, final_carry
