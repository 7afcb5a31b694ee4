"""Fused LSTM recurrence: a forward kernel, a reverse-time backward kernel, the reference.

The recurrence starts after the hoisted input projection (``projected = x W_ih + b``)::

    i, f, g, o = σ, σ, tanh, σ  of  projected_t + h_{t-1} W_hh        (gate order i, f, g, o)
    c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)

and past ``seq_lengths[b]`` the carry of row b stays frozen. See ``_program.py`` for the
grid, tiles and the step barrier. The forward kernel saves the four gate activations and
every c_t for the backward kernel (cuDNN's reserve space holds the same); the backward
kernel never recomputes a recurrent matmul forward, it runs one transposed matmul per step.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from seqlab._checks import as_lengths
from seqlab._time import zero_padding
from seqlab.cells._lstm import lstm_update, lstm_update_backward
from seqlab.kernels import _launch, _layout, _program
from seqlab.kernels._options import Pallas, resolve_options
from seqlab.kernels._program import Product, Term
from seqlab.kernels._vjp import fused
from seqlab.typing import Array

NUM_GATES = 4
f32 = jnp.float32


def _forward_kernel(
    lengths_ref,
    x_ref,
    w_ref,
    h0_ref,
    c0_ref,
    counter_ref,
    hs_ref,
    cs_ref,
    *saved,
    layout,
    precision,
):
    program = _program.Program(layout, counter_ref)
    rows, width, chunk = program.rows, layout.tiles.block_hidden, layout.tiles.block_k
    hidden = layout.hidden_padded
    lengths = lengths_ref[rows]

    def initial(column):
        cols = pl.ds(column, width)
        hs_ref[0, rows, cols] = h0_ref[rows, cols].astype(f32)
        cs_ref[0, rows, cols] = c0_ref[rows, cols].astype(f32)

    program.for_own_tiles(initial)
    program.sync(1)

    def step(t, column):
        cols = pl.ds(column, width)
        gate_cols = [pl.ds(gate * hidden + column, width) for gate in range(NUM_GATES)]
        terms = [
            Term(
                lambda k0: program.load_shared(hs_ref, (t, rows, pl.ds(k0, chunk))),
                [
                    Product(lambda k0, c=c: w_ref[pl.ds(k0, chunk), c], output=gate)
                    for gate, c in enumerate(gate_cols)
                ],
            )
        ]
        pre = _program.accumulate(program, terms, NUM_GATES, w_ref.dtype, precision)
        pre = [p + x_ref[t, rows, c].astype(f32) for p, c in zip(pre, gate_cols, strict=True)]
        c_prev, h_prev = cs_ref[t, rows, cols], hs_ref[t, rows, cols]
        (i, f, g, o), c, h = lstm_update(*pre, c_prev)
        valid = (t < lengths)[:, None]
        cs_ref[t + 1, rows, cols] = jnp.where(valid, c, c_prev)
        hs_ref[t + 1, rows, cols] = jnp.where(valid, h, h_prev)
        if saved:
            for value, c in zip((i, f, g, o), gate_cols, strict=True):
                saved[0][t, rows, c] = value

    _program.run_steps(program, layout.num_steps, [(step, True)], reverse=False)


def _backward_kernel(
    lengths_ref,
    gates_ref,
    cs_ref,
    w_ref,
    dhs_ref,
    dcs_ref,
    counter_ref,
    dpre_ref,
    dh_ref,
    dc_ref,
    *,
    layout,
    precision,
):
    """Reverse time. ``dh_ref``/``dc_ref`` carry the gradient w.r.t. the carry from step to
    step (each program only its own columns) and end as the gradient of the initial carry."""
    program = _program.Program(layout, counter_ref)
    rows, width = program.rows, layout.tiles.block_hidden
    hidden = layout.hidden_padded
    lengths = lengths_ref[rows]
    zeros = jnp.zeros((layout.tiles.block_batch, width), f32)

    def initial(column):
        dh_ref[rows, pl.ds(column, width)] = zeros
        dc_ref[rows, pl.ds(column, width)] = zeros

    program.for_own_tiles(initial)
    program.sync(1)

    def gates_phase(t, column):
        cols = pl.ds(column, width)
        gate_cols = [pl.ds(gate * hidden + column, width) for gate in range(NUM_GATES)]
        dh = dhs_ref[t, rows, cols] + dh_ref[rows, cols]
        dc = dcs_ref[t, rows, cols] + dc_ref[rows, cols]
        gates = tuple(gates_ref[t, rows, c] for c in gate_cols)
        c, c_prev = cs_ref[t + 1, rows, cols], cs_ref[t, rows, cols]
        dpre, dc_prev = lstm_update_backward(dh, dc, gates, c, c_prev)
        valid = (t < lengths)[:, None]
        for value, c_ in zip(dpre, gate_cols, strict=True):
            dpre_ref[t, rows, c_] = jnp.where(valid, value, 0.0)
        dc_ref[rows, cols] = jnp.where(valid, dc_prev, dc)
        dh_ref[rows, cols] = jnp.where(valid, 0.0, dh)  # frozen steps pass dh straight on

    def recurrent_phase(t, column):
        cols = pl.ds(column, width)
        gates = range(NUM_GATES)
        dh_prev = _program.gate_gradients_back(program, dpre_ref, w_ref, t, cols, gates, precision)
        dh_ref[rows, cols] = dh_ref[rows, cols] + dh_prev

    # The recurrent phase needs no barrier after it: the next (earlier) step writes other
    # rows of dpre and only this program's columns of dh and dc.
    _program.run_steps(
        program,
        layout.num_steps,
        [(gates_phase, True), (recurrent_phase, False)],
        reverse=True,
    )


def _pad_inputs(layout, projected, w_hh, h0, c0, lengths):
    return (
        _layout.pad_axis(lengths, 0, layout.batch_padded),  # padded rows have length 0
        _layout.pad_sequence(projected, layout, NUM_GATES),
        _layout.pad_weights(w_hh, layout, NUM_GATES),
        _layout.pad_sequence(h0, layout, 1),
        _layout.pad_sequence(c0, layout, 1),
    )


@dataclasses.dataclass(frozen=True)
class _Lstm:
    """The LSTM recurrence for ``_vjp.fused``: arrays (projected, w_hh, h0, c0)."""

    num_gates: int = NUM_GATES

    def forward(self, layout, arrays, lengths, options, save):
        projected, w_hh, h0, c0 = arrays
        padded = _pad_inputs(layout, projected, w_hh, h0, c0, lengths)
        steps, batch, hidden = layout.num_steps, layout.batch_padded, layout.hidden_padded
        state = jax.ShapeDtypeStruct((steps + 1, batch, hidden), f32)
        out_shapes = [state, state]
        if save:
            out_shapes.append(jax.ShapeDtypeStruct((steps, batch, NUM_GATES * hidden), f32))
        kernel = functools.partial(
            _forward_kernel, layout=layout, precision=_program.matmul_precision(w_hh.dtype)
        )
        hs, cs, *gates = _launch.call(
            kernel, layout, out_shapes, "seqlab_lstm_forward", *padded, poison=options.poison
        )
        dtype = projected.dtype
        outputs = _layout.unpad_states(layout, hs, dtype), _layout.unpad_states(layout, cs, dtype)
        return outputs, ((padded[2], padded[0], hs, cs, gates[0]) if save else None)

    def backward(self, layout, options, residuals, cotangents):
        w_hh, lengths, hs, cs, gates = residuals
        num_steps, batch, hidden = layout.num_steps, layout.batch_padded, layout.hidden_padded

        def pad_cotangent(d):
            return _layout.pad_axis(_layout.pad_axis(d.astype(f32), 2, hidden), 1, batch)

        dhs, dcs = (pad_cotangent(d) for d in cotangents)
        out_shapes = [
            jax.ShapeDtypeStruct((num_steps, batch, NUM_GATES * hidden), f32),
            jax.ShapeDtypeStruct((batch, hidden), f32),
            jax.ShapeDtypeStruct((batch, hidden), f32),
        ]
        precision = _program.matmul_precision(w_hh.dtype)
        kernel = functools.partial(_backward_kernel, layout=layout, precision=precision)
        dpre, dh0, dc0 = _launch.call(
            kernel,
            layout,
            out_shapes,
            "seqlab_lstm_backward",
            lengths,
            gates,
            cs,
            w_hh,
            dhs,
            dcs,
            poison=options.poison,
        )
        d_w_hh = jnp.einsum("tbr,tbg->rg", hs[:-1], dpre)
        h, b = layout.hidden, layout.batch
        d_projected = _layout.unpad_gates(dpre[:, :b], NUM_GATES, h, hidden)
        d_w_hh = _layout.unpad_gates(d_w_hh[:h], NUM_GATES, h, hidden)
        # h0 and c0 enter as float32 (see lstm_recurrence); the rest keep their dtypes.
        return (
            d_projected.astype(cotangents[0].dtype),
            d_w_hh.astype(w_hh.dtype),
            dh0[:b, :h],
            dc0[:b, :h],
        )

    def reference(self, projected, w_hh, h0, c0, lengths):
        return lstm_recurrence_reference(projected, w_hh, h0, c0, lengths)


def lstm_recurrence(
    projected: Array,
    w_hh: Array,
    h0: Array,
    c0: Array,
    seq_lengths: Array,
    *,
    options: Pallas | None = None,
) -> tuple[Array, Array]:
    """The LSTM recurrence after the input projection, as one fused kernel each way.

    Args:
      projected: (T, B, 4H), ``x_t W_ih + b`` for every step (time-major), float32 or
        bfloat16.
      w_hh: (H, 4H) recurrent weights, gate blocks i, f, g, o (``seqlab.cells.LSTM``).
      h0, c0: (B, H) initial carry.
      seq_lengths: (B,) ints in [0, T]; past its length a row's carry stays frozen.
      options: a ``seqlab.kernels.Pallas`` (``Pallas()`` when None): tiles, the
        backward (``"pallas"``, the fused reverse-time kernel, or ``"xla"``, autodiff of
        ``lstm_recurrence_reference``), interpret mode, poisoned outputs.

    Returns:
      ``(hs, cs)``: (T, B, H) each, the carry after every step (frozen past a row's
      length, not zeroed), in ``projected``'s dtype. State and accumulation are float32.
    """
    options = resolve_options(options)
    seq_lengths = _layout.check_lengths_dtype(seq_lengths, projected.shape[1])
    projected = zero_padding(projected, seq_lengths)  # padding reaches no gradient
    # The state is float32 inside; entering as float32 lets autodiff cast its gradient back.
    arrays = (projected, w_hh, h0.astype(f32), c0.astype(f32))
    return fused(_Lstm(), arrays, seq_lengths, options)


def lstm_recurrence_reference(projected, w_hh, h0, c0, seq_lengths):
    """``lstm_recurrence`` as a plain ``lax.scan``: float32 state and accumulation, matmul
    operands in ``w_hh``'s dtype (``__program.reference_matmul``)."""
    seq_lengths = as_lengths(seq_lengths)
    projected = zero_padding(projected, seq_lengths)
    num_steps = projected.shape[0]

    def step(carry, inputs):
        h, c = carry
        x, t = inputs
        pre = x.astype(f32) + _program.reference_matmul(h, w_hh)
        _, c_new, h_new = lstm_update(*jnp.split(pre, NUM_GATES, axis=-1), c)
        valid = (t < seq_lengths)[:, None]
        h, c = jnp.where(valid, h_new, h), jnp.where(valid, c_new, c)
        return (h, c), (h, c)

    _, (hs, cs) = jax.lax.scan(
        step, (h0.astype(f32), c0.astype(f32)), (projected, jnp.arange(num_steps))
    )
    return hs.astype(projected.dtype), cs.astype(projected.dtype)
