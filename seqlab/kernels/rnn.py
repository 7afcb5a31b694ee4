"""Fused Elman (vanilla) RNN recurrence: forward kernel, reverse-time backward, reference.

After the hoisted input projection (``projected = x W_ih + b``)::

    h_t = φ(projected_t + h_{t-1} W_hh)        φ in {tanh, relu, identity}

frozen past ``seq_lengths``. φ' is read off the saved output (1 - h² for tanh, h > 0 for
relu), so the forward kernel saves nothing beyond the states it returns. See
``_program.py`` for the grid, tiles and barrier.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from seqlab._checks import as_lengths, check_one_of
from seqlab._time import zero_padding
from seqlab.cells._rnn import ACTIVATION_GRADIENTS, ACTIVATIONS
from seqlab.kernels import _launch, _layout, _program
from seqlab.kernels._options import Pallas, resolve_options
from seqlab.kernels._program import Product, Term
from seqlab.kernels._vjp import fused
from seqlab.typing import Array

f32 = jnp.float32


def _forward_kernel(
    lengths_ref, x_ref, w_ref, h0_ref, counter_ref, hs_ref, *, layout, precision, activation
):
    program = _program.Program(layout, counter_ref)
    rows, width, chunk = program.rows, layout.tiles.block_hidden, layout.tiles.block_k
    lengths = lengths_ref[rows]
    function = ACTIVATIONS[activation]

    def initial(column):
        cols = pl.ds(column, width)
        hs_ref[0, rows, cols] = h0_ref[rows, cols].astype(f32)

    program.for_own_tiles(initial)
    program.sync(1)

    def step(t, column):
        cols = pl.ds(column, width)
        terms = [
            Term(
                lambda k0: program.load_shared(hs_ref, (t, rows, pl.ds(k0, chunk))),
                [Product(lambda k0: w_ref[pl.ds(k0, chunk), cols], output=0)],
            )
        ]
        (pre,) = _program.accumulate(program, terms, 1, w_ref.dtype, precision)
        h = function(pre + x_ref[t, rows, cols].astype(f32))
        valid = (t < lengths)[:, None]
        hs_ref[t + 1, rows, cols] = jnp.where(valid, h, hs_ref[t, rows, cols])

    _program.run_steps(program, layout.num_steps, [(step, True)], reverse=False)


def _backward_kernel(
    lengths_ref,
    hs_ref,
    w_ref,
    dhs_ref,
    counter_ref,
    dpre_ref,
    dh_ref,
    *,
    layout,
    precision,
    activation,
):
    program = _program.Program(layout, counter_ref)
    rows, width = program.rows, layout.tiles.block_hidden
    lengths = lengths_ref[rows]
    derivative = ACTIVATION_GRADIENTS[activation]

    def initial(column):
        dh_ref[rows, pl.ds(column, width)] = jnp.zeros((layout.tiles.block_batch, width), f32)

    program.for_own_tiles(initial)
    program.sync(1)

    def local_phase(t, column):
        cols = pl.ds(column, width)
        dh = dhs_ref[t, rows, cols] + dh_ref[rows, cols]
        valid = (t < lengths)[:, None]
        dpre_ref[t, rows, cols] = jnp.where(valid, dh * derivative(hs_ref[t + 1, rows, cols]), 0.0)
        dh_ref[rows, cols] = jnp.where(valid, 0.0, dh)

    def recurrent_phase(t, column):
        cols = pl.ds(column, width)
        dh_prev = _program.gate_gradients_back(program, dpre_ref, w_ref, t, cols, (0,), precision)
        dh_ref[rows, cols] = dh_ref[rows, cols] + dh_prev

    _program.run_steps(
        program,
        layout.num_steps,
        [(local_phase, True), (recurrent_phase, False)],
        reverse=True,
    )


@dataclasses.dataclass(frozen=True)
class _Elman:
    """The Elman recurrence for ``_vjp.fused``: arrays (projected, w_hh, h0)."""

    activation: str
    num_gates: int = 1

    def forward(self, layout, arrays, lengths, options, save):
        projected, w_hh, h0 = arrays
        padded = (
            _layout.pad_axis(lengths, 0, layout.batch_padded),
            _layout.pad_sequence(projected, layout, 1),
            _layout.pad_weights(w_hh, layout, 1),
            _layout.pad_sequence(h0, layout, 1),
        )
        state = jax.ShapeDtypeStruct(
            (layout.num_steps + 1, layout.batch_padded, layout.hidden_padded), f32
        )
        kernel = functools.partial(
            _forward_kernel,
            layout=layout,
            activation=self.activation,
            precision=_program.matmul_precision(w_hh.dtype),
        )
        (hs,) = _launch.call(
            kernel, layout, [state], "seqlab_rnn_forward", *padded, poison=options.poison
        )
        outputs = _layout.unpad_states(layout, hs, projected.dtype)
        return outputs, ((padded[0], padded[2], hs) if save else None)

    def backward(self, layout, options, residuals, d_hs):
        lengths, w_hh, hs = residuals
        batch, hidden = layout.batch_padded, layout.hidden_padded
        out_shapes = [
            jax.ShapeDtypeStruct((layout.num_steps, batch, hidden), f32),
            jax.ShapeDtypeStruct((batch, hidden), f32),
        ]
        kernel = functools.partial(
            _backward_kernel,
            layout=layout,
            activation=self.activation,
            precision=_program.matmul_precision(w_hh.dtype),
        )
        dpre, dh0 = _launch.call(
            kernel,
            layout,
            out_shapes,
            "seqlab_rnn_backward",
            lengths,
            hs,
            w_hh,
            _layout.pad_sequence(d_hs.astype(f32), layout, 1),
            poison=options.poison,
        )
        h, b = layout.hidden, layout.batch
        d_w_hh = jnp.einsum("tbr,tbg->rg", hs[:-1], dpre)[:h, :h]
        return dpre[:, :b, :h].astype(d_hs.dtype), d_w_hh.astype(w_hh.dtype), dh0[:b, :h]

    def reference(self, projected, w_hh, h0, lengths):
        return rnn_recurrence_reference(projected, w_hh, h0, lengths, activation=self.activation)


def rnn_recurrence(
    projected: Array,
    w_hh: Array,
    h0: Array,
    seq_lengths: Array,
    *,
    activation: str = "tanh",
    options: Pallas | None = None,
) -> Array:
    """The Elman recurrence after the input projection, one fused kernel each way.

    Args:
      projected: (T, B, H), ``x_t W_ih + b`` for every step (time-major).
      w_hh: (H, H). h0: (B, H). seq_lengths: (B,) ints in [0, T].
      activation: ``"tanh"``, ``"relu"`` or ``"identity"`` (as ``seqlab.cells.RNN``).
      options: as for ``lstm_recurrence``.

    Returns:
      hs: (T, B, H), the hidden state after every step (frozen past a row's length).
    """
    check_one_of("activation", activation, sorted(ACTIVATIONS))
    options = resolve_options(options)
    seq_lengths = _layout.check_lengths_dtype(seq_lengths, projected.shape[1])
    projected = zero_padding(projected, seq_lengths)  # padding reaches no gradient
    return fused(_Elman(activation), (projected, w_hh, h0.astype(f32)), seq_lengths, options)


def rnn_recurrence_reference(projected, w_hh, h0, seq_lengths, *, activation="tanh"):
    """``rnn_recurrence`` as a plain ``lax.scan``: float32 state and accumulation, matmul
    operands in ``w_hh``'s dtype (``__program.reference_matmul``)."""
    seq_lengths = as_lengths(seq_lengths)
    projected = zero_padding(projected, seq_lengths)
    function = ACTIVATIONS[activation]
    matmul = _program.reference_matmul

    def step(h, inputs):
        x, t = inputs
        h_new = function(x.astype(f32) + matmul(h, w_hh))
        h = jnp.where((t < seq_lengths)[:, None], h_new, h)
        return h, h

    _, hs = jax.lax.scan(step, h0.astype(f32), (projected, jnp.arange(projected.shape[0])))
    return hs.astype(projected.dtype)
