"""``seqlab.scan``: the one public entry point for unrolling a cell over time."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from seqlab._checks import require
from seqlab._time import normalize, run_in_time
from seqlab.kernels import Pallas
from seqlab.parallel import Parallel, run_parallel, settle_parallel
from seqlab.typing import Array, Carry, Params
from seqlab.unroll._bptt import hand_derived, scan_bptt
from seqlab.unroll._options import Xla
from seqlab.unroll._pallas import scan_pallas, unsupported_reason
from seqlab.unroll._policy import AUTO_PALLAS, hoist_small, resolve_unroll, should_hoist
from seqlab.unroll._reference import scan_xla

IMPLEMENTATIONS = (None, "xla", "xla-autodiff", "pallas", "parallel")
# the options object each name stands for
NAMED = {
    "xla": Xla(),
    "xla-autodiff": Xla(backward="autodiff"),
    "pallas": Pallas(),
    "parallel": Parallel(),
}
OPTIONS = (Xla, Pallas, Parallel)
# what an empty batch or empty sequences run, whatever was asked for (after its checks)
EMPTY = Xla(unroll=1, hoist=False, remat=False, backward="autodiff")


def resolve_implementation(
    implementation, cell=None, params=None, xs=None, carry=None, *, hoist=True, remat=False
):
    """Map ``implementation`` to ``(name, options object)``: ``("xla", Xla())``,
    ``("xla-autodiff", Xla(backward="autodiff"))``, ``("pallas", Pallas options)`` or
    ``("parallel", Parallel options)``; an options object maps to itself and its name.

    ``None`` chooses by the table in ``seqlab/unroll/_policy.py`` (``AUTO_PALLAS``): the
    Pallas kernels where that table enables them for the backend and they support the
    cell, dtypes and settings; XLA otherwise. ``"pallas"`` or a ``seqlab.kernels.Pallas``
    asked for explicitly on something the kernels do not support raises ValueError with
    the reason. Without a cell (the first positional argument only) just the name is
    checked.
    """
    if isinstance(implementation, OPTIONS):
        options = implementation
    elif implementation is None or (isinstance(implementation, str) and implementation in NAMED):
        options = NAMED.get(implementation)
    else:
        raise ValueError(
            f"implementation must be one of {list(IMPLEMENTATIONS)} or an options object "
            "(seqlab.unroll.Xla, seqlab.kernels.Pallas, seqlab.parallel.Parallel), got "
            f"{implementation!r}"
        )
    if isinstance(options, Xla):
        return options.name, options
    if cell is None:
        return ("xla", Xla()) if options is None else (options.name, options)
    if isinstance(options, Parallel):
        require(
            remat is False,
            "implementation='parallel' cannot run this scan: remat does not apply (the "
            "parallel solve keeps every step's state; its backward stores only the states)",
        )
        return "parallel", options
    reason = unsupported_reason(cell, params, xs, carry)
    if reason is None and remat is not False:
        reason = "remat does not apply: the kernels save only what their backward needs"
    if reason is None and not hoist:
        reason = "the kernels always hoist the input projection (hoist_input_projection=False)"
    if options is None:
        automatic = jax.default_backend() in AUTO_PALLAS and reason is None
        return ("pallas", Pallas()) if automatic else ("xla", Xla())
    require(reason is None, f"implementation='pallas' cannot run this scan: {reason}")
    return "pallas", options


def _resolve_remat(remat: bool | int, num_steps: int) -> int | bool:
    """The block length for ``remat`` (False: no rematerialization)."""
    if remat is False:
        return False
    if remat is True:
        return max(1, math.isqrt(num_steps))
    return remat


def _agree(name: str, given, default, field):
    """A setting given both to ``scan`` and in an options object: one value, or refuse."""
    if given is default or (given == field and type(given) is type(field)):  # True != 1
        return field
    require(
        field == default,
        f"{name}={given!r} and the options object's {field!r} disagree; give it once",
    )
    return given


def _settle(options, cell, params, xs, *, unroll, hoist, remat):
    """Every hoist, unroll and remat decision for one scan, made here and written into
    the options object the implementation receives (the static key of its program):
    ``(run, settled options, whether it needs a Steps mask without lengths, whether it
    zeroes the outputs past each length itself)``. The ``lax.scan`` implementations zero
    them inside their loops or remat blocks: zeroing after the blocks kept one more
    (T, B, H) array alive ("zeroing inside remat blocks" in ``_policy.py``)."""
    num_steps, batch_size = xs.shape[:2]
    if isinstance(options, Xla):
        unroll = resolve_unroll(_agree("unroll", unroll, None, options.unroll))
        asked = _agree("hoist_input_projection", hoist, None, options.hoist)
        remat = _resolve_remat(_agree("remat", remat, False, options.remat), num_steps)
        derived = options.backward == "derived" and hand_derived(cell)
        hoisted = should_hoist(cell, asked)
        if derived and asked is None:
            x_t = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
            width = jax.eval_shape(cell.project_inputs, params, x_t).shape[-1]
            hoisted = hoist_small(num_steps * batch_size * width)
        settled = dataclasses.replace(options, unroll=unroll, hoist=hoisted, remat=remat)
        return (scan_bptt if derived else scan_xla), settled, remat is not False, True
    if isinstance(options, Parallel):
        asked = _agree("hoist_input_projection", hoist, None, options.hoist)
        return run_parallel, settle_parallel(cell, options, asked), False, False
    return scan_pallas, options, False, False


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
    implementation: str | Xla | Pallas | Parallel | None = None,
    hoist_input_projection: bool | None = None,
    remat: bool | int = False,
) -> tuple[Array, Carry]:
    """Run ``cell`` over a batch of sequences.

    Args:
      cell: any object with ``init``, ``initial_carry`` and ``step`` (``seqlab.cells``).
      params: the cell's parameters, from ``cell.init``.
      xs: inputs, (B, T, D), or (T, B, D) when ``time_major``; (B, T, *spatial, C) for a
        cell with a spatial state (``seqlab.cells.ConvLSTM``, ``cells.spatial_shape``).
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
      implementation: a name or an options object (frozen and hashable: the static key
        of the program it builds; ``resolve_implementation`` maps names to objects):

        - None: chosen by ``AUTO_PALLAS`` in ``seqlab/unroll/_policy.py`` (the fused
          kernels where that table enables them and they support the scan; else "xla").
        - ``"xla"`` = ``seqlab.unroll.Xla()``: ``lax.scan``; the built-in ``RNN``,
          ``LSTM``, ``GRU`` and ``MGU`` (also in ``TrainableInitialState``) differentiated
          by their hand-derived backward (``seqlab/unroll/_bptt.py``; reverse mode only),
          any other cell by autodiff. ``"xla-autodiff"`` = ``Xla(backward="autodiff")``:
          autodiff for every cell (forward mode too).
        - ``"pallas"`` = ``seqlab.kernels.Pallas()``: the fused kernels (``RNN``,
          ``LSTM`` without projection, ``GRU``; float32 or bfloat16; interpret mode on a
          CPU). They always hoist and ignore ``unroll``; with ``remat``,
          ``hoist_input_projection=False`` or anything else they do not cover they raise
          ValueError naming the reason.
        - ``"parallel"`` = ``seqlab.parallel.Parallel()``: all steps at once (an
          associative scan, or Newton iterations of them with a fallback to the
          sequential scan; see ``seqlab.parallel``). Ignores ``unroll``; raises with
          ``remat``.

        ``unroll``, ``hoist_input_projection`` and ``remat`` given here and in an
        ``Xla`` object must agree (or be given once).
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

    def check_settings():  # after the cell and xs are checked, before carry and lengths
        resolve_implementation(implementation)  # a bad name fails before anything is traced
        Xla(unroll=unroll, hoist=hoist_input_projection, remat=remat)  # the settings' types
        should_hoist(cell, hoist_input_projection)  # True for a cell that cannot hoist fails

    xs, carry, seq_lengths = normalize(
        cell,
        params,
        xs,
        carry,
        seq_lengths=seq_lengths,
        time_major=time_major,
        check_settings=check_settings,
    )
    name, options = resolve_implementation(
        implementation,
        cell,
        params,
        xs,
        carry,
        hoist=hoist_input_projection is not False,
        remat=remat,
    )
    run, options, with_steps, zeroed = _settle(
        options, cell, params, xs, unroll=unroll, hoist=hoist_input_projection, remat=remat
    )
    if xs.shape[0] == 0 or xs.shape[1] == 0:  # nothing to compute: every implementation agrees
        run, options, with_steps, zeroed = scan_xla, EMPTY, False, True
    outputs, final_carry = run_in_time(
        run,
        cell,
        params,
        xs,
        carry,
        seq_lengths=seq_lengths,
        reverse=reverse,
        options=options,
        with_steps=with_steps,
        outputs_zeroed=zeroed,
    )
    if not time_major:
        outputs = jax.tree_util.tree_map(lambda y: jnp.swapaxes(y, 0, 1), outputs)
    return outputs, final_carry
