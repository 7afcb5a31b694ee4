"""Hand-derived backpropagation through time for the built-in cells on the XLA path.

Autodiff through ``lax.scan`` keeps every intermediate of the forward loop and, in the
reverse loop, accumulates each weight gradient step by step: one small (B, H)ᵀ(B, G·H)
matmul and an add per step for the recurrent weights, and (without hoisting) another for
the input weights. Here the built-in cells' own derivations run instead
(``forward_step``, ``backward_step``, ``weight_gradients``; the contract is in
``seqlab.cells._affine.AffineInputCell``), under one ``jax.custom_vjp``:

- forward: one ``lax.scan`` (the input projection per step, or hoisted before it as one
  matmul) that keeps the carry of every step (the outputs are the hidden states anyway)
  and what each cell's backward needs beyond them (the activated gates);
- backward: a reverse-time walk in chunks of ``Static.chunk`` steps. Inside a chunk, a
  ``lax.scan`` carries only the gradient w.r.t. the carry and emits the gradients w.r.t.
  the steps' gate pre-activations; the only matmuls in it are the recurrent ones the
  chain rule needs (d_pre W_hhᵀ, with Wᵀ made once before the loop). After each chunk,
  its input and weight gradients are one matmul each over the chunk's (steps x batch)
  rows (dW_ih and dW_hh together as [x, h_prev]ᵀ d_pre where the cell allows,
  dxs = d_pre W_ihᵀ, db a sum), added to running totals. A chunk is the whole sequence
  when the projection is hoisted (one matmul each, for accelerators), else about
  ``BPTT_CHUNK_ROWS`` rows (``_policy.py``: on a CPU the chunk's gate gradients stay in
  cache instead of making a (T, B, G·H) pass over memory).

Past a sequence's length (``valid`` False) the carry is frozen, so that step's gate
gradients are zero and the gradient w.r.t. the carry passes straight through, as the
masked ``lax.scan`` of ``_reference.py`` gives by autodiff.

Only reverse mode is defined: ``jax.jvp`` / ``jax.jacfwd`` through it raise JAX's
"can't apply forward-mode autodiff (jvp) to a custom_vjp function"; use
``implementation="xla-autodiff"`` for forward mode. Reverse-over-reverse works (the
backward is plain differentiable JAX): ``jax.grad`` of a gradient norm, or
``jax.test_util.check_grads(..., order=2, modes=["rev"])``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._time import Steps, where_valid, zero_invalid
from seqlab.cells import GRU, LSTM, MGU, RNN, TrainableInitialState, hidden_of, replace_hidden
from seqlab.typing import Array, Carry, Params
from seqlab.unroll._options import Xla
from seqlab.unroll._policy import BPTT_CHUNK_ROWS
from seqlab.unroll._reference import blocked

# Exactly these classes (not subclasses, which may change the step) have the derivation.
HAND_DERIVED = (RNN, LSTM, GRU, MGU)


def unwrap(cell, params: Params):
    """The cell under any ``TrainableInitialState`` wrappers and its parameters (the
    learned initial state is already in the carry the scan passes in)."""
    while isinstance(cell, TrainableInitialState):
        cell, params = cell.cell, params["cell"]
    return cell, params


def hand_derived(cell) -> bool:
    """Whether ``cell`` (possibly wrapped in ``TrainableInitialState``) has its own backward."""
    while isinstance(cell, TrainableInitialState):
        cell = cell.cell
    return type(cell) in HAND_DERIVED


class Static(NamedTuple):
    """The recurrence's non-array settings (hashable: part of the custom_vjp's key)."""

    cell: Any
    hoist: bool  # the forward's input projection as one matmul before its loop, or per step
    chunk: int  # steps whose input-side gradients the backward computes together
    unroll: int | bool  # steps per iteration of the per-step loops
    batch_sharded: bool = False  # weight gradients contracted for a sharded batch axis


def _map(function, *trees):
    return jax.tree_util.tree_map(function, *trees)


def _segments(chunk: int, num_steps: int) -> list[tuple[int, int, int]]:
    """Time split into ``(start, number of chunks, chunk length)``: as many whole chunks as
    fit, then one shorter chunk for the rest (no padding, so no mask is needed)."""
    chunk = min(chunk, num_steps)
    whole, rest = divmod(num_steps, chunk)
    segments = [(0, whole, chunk)] if whole else []
    return segments + ([(whole * chunk, 1, rest)] if rest else [])


def _split(tree, start: int, count: int, length: int):
    """Steps ``start .. start + count·length`` of time-major leaves as (count, length, ...)."""
    if tree is None:
        return None
    return _map(
        lambda leaf: leaf[start : start + count * length].reshape(count, length, *leaf.shape[1:]),
        tree,
    )


def _forward(static: Static, params, xs, carry, valid):
    """The masked loop, keeping every step's carry and what its backward needs."""
    cell = static.cell
    inputs = cell.project_inputs(params, xs) if static.hoist else xs

    def step(carry, step_inputs):
        x, valid_t = step_inputs
        projected = x if static.hoist else cell.project_inputs(params, x)
        new_carry, saved = cell.forward_step(params, carry, projected)
        new_carry = where_valid(valid_t, new_carry, carry)
        return new_carry, (new_carry, saved)

    final_carry, (carries, saved) = jax.lax.scan(step, carry, (inputs, valid), unroll=static.unroll)
    return final_carry, carries, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(static: Static, params: Params, xs: Array, carry: Carry, valid: Array | None):
    """Run a built-in cell over time-major ``xs`` (T, B, D) from ``carry``.

    ``valid`` is None or a (T, B) bool mask; past a row's last valid step its carry stays
    frozen. Returns ``(hs, final_carry)``: the hidden state after every step (T, B, ·),
    frozen, not zeroed, past each length, and the carry after the last step.
    """
    final_carry, carries, _ = _forward(static, params, xs, carry, valid)
    return hidden_of(carries), final_carry


def _recurrence_fwd(static, params, xs, carry, valid):
    final_carry, carries, saved = _forward(static, params, xs, carry, valid)
    return (hidden_of(carries), final_carry), (params, xs, carry, valid, carries, saved)


def _backward_chunk(static: Static, params, weights, d_carry, inputs):
    """One chunk backward, last step first: the steps carry only the gradient w.r.t. the
    carry; the chunk's weight gradients and input gradients are then single matmuls."""
    cell = static.cell
    xs, valid, d_hs, carries, saved, carry_before = inputs
    carries_prev = jax.tree_util.tree_map(
        lambda first, leaf: jnp.concatenate([first[None], leaf[:-1]], axis=0),
        carry_before,
        carries,
    )

    def step(d_carry, step_inputs):
        d_h, saved_t, prev_t, carry_t, valid_t = step_inputs
        d_carry = replace_hidden(d_carry, hidden_of(d_carry) + d_h)
        d_pre, d_recurrent, d_prev = cell.backward_step(weights, d_carry, saved_t, prev_t, carry_t)
        d_pre = zero_invalid(valid_t, d_pre)
        d_recurrent = zero_invalid(valid_t, d_recurrent)
        # A frozen step passes the gradient w.r.t. the carry straight on.
        return where_valid(valid_t, d_prev, d_carry), (d_pre, d_recurrent)

    d_carry, (d_pre, d_recurrent) = jax.lax.scan(
        step,
        d_carry,
        (d_hs, saved, carries_prev, carries, valid),
        reverse=True,
        unroll=static.unroll,
    )
    dtype = jnp.result_type(*(params[name] for name in ("w_ih", "b") if name in params), xs)
    d_pre = d_pre.astype(dtype)  # the projection's dtype (bfloat16 xs: float32)
    gradients = cell.weight_gradients(
        params, xs, carries_prev, carries, saved, d_pre, d_recurrent, sharded=static.batch_sharded
    )
    d_xs = (d_pre @ params["w_ih"].T.astype(dtype)).astype(xs.dtype)
    return d_carry, gradients, d_xs


def _recurrence_bwd(static, residuals, cotangents):
    params, xs, carry, valid, carries, saved = residuals
    d_hs, d_carry = cotangents
    weights = static.cell.backward_weights(params)
    gradients = jax.tree_util.tree_map(jnp.zeros_like, params)
    segments = _segments(static.chunk, xs.shape[0])
    d_xs = [None] * len(segments)
    for index in reversed(range(len(segments))):
        start, count, length = segments[index]
        # The carry before each chunk: the initial carry, or the previous chunk's last.
        previous = np.maximum(start + length * np.arange(count) - 1, 0)
        before = _map(lambda leaf, index=previous: leaf[index], carries)
        if start == 0:
            before = _map(lambda c0, leaf: leaf.at[0].set(c0), carry, before)

        def chunk(state, inputs):
            d_carry, gradients = state
            d_carry, chunk_gradients, d_xs = _backward_chunk(
                static, params, weights, d_carry, inputs
            )
            gradients = {
                name: gradients[name] + chunk_gradients[name].astype(gradients[name].dtype)
                for name in gradients
            }
            return (d_carry, gradients), d_xs

        split = functools.partial(_split, start=start, count=count, length=length)
        (d_carry, gradients), d_xs[index] = jax.lax.scan(
            chunk,
            (d_carry, gradients),
            (split(xs), split(valid), split(d_hs), split(carries), split(saved), before),
            reverse=True,
        )
    d_xs = [part.reshape(-1, *part.shape[2:]) for part in d_xs]
    d_xs = d_xs[0] if len(d_xs) == 1 else jnp.concatenate(d_xs, axis=0)
    d_carry = jax.tree_util.tree_map(lambda d, c: d.astype(c.dtype), d_carry, carry)
    return gradients, d_xs, d_carry, None


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def chunk_length(rows: int, batch_size: int, num_steps: int) -> int:
    """Steps per chunk: about ``rows`` rows (steps x batch) per matmul, at least one step
    and at most the whole sequence."""
    return max(1, min(num_steps, rows // batch_size))


def scan_bptt(
    cell, params: Params, xs: Array, carry: Carry, steps: Steps | None, options: Xla
) -> tuple[Array, Carry]:
    """``scan_xla``'s contract (``seqlab/_time.py``: time-major, forward-ordered, the carry
    frozen past each length) for a cell that ``hand_derived`` accepts, differentiated by
    the cells' own backward.

    With ``options.remat`` (a block length) each block of that many steps runs under
    ``jax.checkpoint``: the backward pass keeps the carries at block borders and re-runs
    one block's forward (saving its gates) just before that block's backward.
    """
    cell, params = unwrap(cell, params)
    num_steps, batch_size = xs.shape[:2]
    hoist = options.hoist
    chunk = num_steps if hoist else chunk_length(BPTT_CHUNK_ROWS, batch_size, num_steps)
    static = Static(cell, hoist, chunk, options.unroll, options.batch_sharded)
    if steps is None:
        hs, final_carry = recurrence(static, params, xs, carry, None)
        return hs, final_carry

    def run(carry, inputs):
        xs, valid = inputs
        hs, final_carry = recurrence(static, params, xs, carry, valid)
        return final_carry, zero_invalid(valid, hs)

    if options.remat is False:
        final_carry, outputs = run(carry, (xs, steps.valid))
    else:
        # Outputs are zeroed block by block, not only after the blocks (why: "zeroing
        # inside remat blocks" in seqlab/unroll/_policy.py's implementation choices).
        static = static._replace(chunk=min(static.chunk, options.remat))
        final_carry, outputs = blocked(run, carry, (xs, steps.valid), options.remat)
    return outputs, final_carry
