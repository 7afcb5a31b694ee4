"""Fused GRU recurrence, both reset-gate placements: forward, reverse-time backward, reference.

After the hoisted input projection (``projected = x W_ih + b``, gate blocks r, z, n)::

    r = σ(x_r + h W_hr)          z = σ(x_z + h W_hz)
    variant "cudnn":     n = tanh(x_n + r * (h W_hn + b_hn))
    variant "original":  n = tanh(x_n + (r * h) W_hn)
    h_t = (1 - z) * n + z * h_{t-1}

frozen past ``seq_lengths``. The cuDNN variant needs one barrier per step each way (all
three recurrent products use h_{t-1}); the original variant needs two, because (r * h)
must be complete across all columns before its product with W_hn. The forward kernel
saves r, z, n (and h W_hn + b_hn, or r * h) for the backward kernel.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from seqlab._checks import as_lengths, check_one_of
from seqlab._time import zero_padding
from seqlab.cells._gru import gru_update, gru_update_backward, reset_backward
from seqlab.kernels import _launch, _layout, _program
from seqlab.kernels._options import Pallas, resolve_options
from seqlab.kernels._program import Product, Term
from seqlab.kernels._vjp import fused
from seqlab.typing import Array

NUM_GATES = 3
VARIANTS = ("cudnn", "original")
f32 = jnp.float32


def _gate_columns(layout, column, gates):
    return [
        pl.ds(gate * layout.hidden_padded + column, layout.tiles.block_hidden) for gate in gates
    ]


def _forward_kernel(
    lengths_ref,
    x_ref,
    w_ref,
    b_hn_ref,
    h0_ref,
    counter_ref,
    hs_ref,
    saved_ref,
    rh_ref,
    *,
    layout,
    precision,
    variant,
):
    """``saved_ref`` (T, B, 4H): r, z, n, and h W_hn + b_hn (cudnn; unused for original,
    whose r * h goes to ``rh_ref`` (T, B, H) instead)."""
    program = _program.Program(layout, counter_ref)
    rows, width, chunk = program.rows, layout.tiles.block_hidden, layout.tiles.block_k
    lengths = lengths_ref[rows]

    def initial(column):
        cols = pl.ds(column, width)
        hs_ref[0, rows, cols] = h0_ref[rows, cols].astype(f32)

    program.for_own_tiles(initial)
    program.sync(1)

    def h_chunk(t):
        return lambda k0: program.load_shared(hs_ref, (t, rows, pl.ds(k0, chunk)))

    def finish(t, column, n, z):
        cols = pl.ds(column, width)
        h_prev = hs_ref[t, rows, cols]
        h = gru_update(z, n, h_prev)
        valid = (t < lengths)[:, None]
        hs_ref[t + 1, rows, cols] = jnp.where(valid, h, h_prev)

    def cudnn_step(t, column):
        gate_cols = _gate_columns(layout, column, range(3))
        terms = [
            Term(
                h_chunk(t),
                [
                    Product(lambda k0, c=c: w_ref[pl.ds(k0, chunk), c], output=gate)
                    for gate, c in enumerate(gate_cols)
                ],
            )
        ]
        h_r, h_z, h_n = _program.accumulate(program, terms, 3, w_ref.dtype, precision)
        x_r, x_z, x_n = (x_ref[t, rows, c].astype(f32) for c in gate_cols)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        h_n = h_n + b_hn_ref[0, pl.ds(column, width)].astype(f32)[None, :]
        n = jnp.tanh(x_n + r * h_n)
        for value, c in zip((r, z, n, h_n), _gate_columns(layout, column, range(4)), strict=True):
            saved_ref[t, rows, c] = value
        finish(t, column, n, z)

    def original_gates(t, column):
        cols = pl.ds(column, width)
        gate_cols = _gate_columns(layout, column, range(2))
        terms = [
            Term(
                h_chunk(t),
                [
                    Product(lambda k0, c=c: w_ref[pl.ds(k0, chunk), c], output=gate)
                    for gate, c in enumerate(gate_cols)
                ],
            )
        ]
        h_r, h_z = _program.accumulate(program, terms, 2, w_ref.dtype, precision)
        r = jax.nn.sigmoid(x_ref[t, rows, gate_cols[0]].astype(f32) + h_r)
        z = jax.nn.sigmoid(x_ref[t, rows, gate_cols[1]].astype(f32) + h_z)
        saved_ref[t, rows, gate_cols[0]] = r
        saved_ref[t, rows, gate_cols[1]] = z
        rh_ref[t, rows, cols] = r * hs_ref[t, rows, cols]

    def original_candidate(t, column):
        (n_col,) = _gate_columns(layout, column, (2,))
        terms = [
            Term(
                lambda k0: program.load_shared(rh_ref, (t, rows, pl.ds(k0, chunk))),
                [Product(lambda k0: w_ref[pl.ds(k0, chunk), n_col], output=0)],
            )
        ]
        (rh_n,) = _program.accumulate(program, terms, 1, w_ref.dtype, precision)
        n = jnp.tanh(x_ref[t, rows, n_col].astype(f32) + rh_n)
        saved_ref[t, rows, n_col] = n
        z = saved_ref[t, rows, _gate_columns(layout, column, (1,))[0]]
        finish(t, column, n, z)

    phases = (
        [(cudnn_step, True)]
        if variant == "cudnn"
        else [(original_gates, True), (original_candidate, True)]
    )
    _program.run_steps(program, layout.num_steps, phases, reverse=False)


def _backward_kernel(
    lengths_ref,
    saved_ref,
    hs_ref,
    w_ref,
    dhs_ref,
    counter_ref,
    dpre_ref,
    dxn_ref,
    dh_ref,
    *,
    layout,
    precision,
    variant,
):
    """``dpre_ref`` (T, B, 3H): gradients w.r.t. the three recurrent products' outputs
    (h W_hr, h W_hz, and h W_hn + b_hn for cudnn or (r * h) W_hn for original);
    ``dxn_ref`` (T, B, H): gradient w.r.t. x_n (equal to the third block for original)."""
    program = _program.Program(layout, counter_ref)
    rows, width = program.rows, layout.tiles.block_hidden
    lengths = lengths_ref[rows]

    def initial(column):
        dh_ref[rows, pl.ds(column, width)] = jnp.zeros((layout.tiles.block_batch, width), f32)

    program.for_own_tiles(initial)
    program.sync(1)

    def local_phase(t, column):
        cols = pl.ds(column, width)
        r_col, z_col, n_col, hn_col = _gate_columns(layout, column, range(4))
        r, z, n = saved_ref[t, rows, r_col], saved_ref[t, rows, z_col], saved_ref[t, rows, n_col]
        dh = dhs_ref[t, rows, cols] + dh_ref[rows, cols]
        h_prev = hs_ref[t, rows, cols]
        valid = (t < lengths)[:, None]
        d_n, d_z, dh_direct = gru_update_backward(dh, z, n, h_prev)  # d_n: the tanh's argument
        dxn_ref[t, rows, cols] = jnp.where(valid, d_n, 0.0)
        dpre_ref[t, rows, z_col] = jnp.where(valid, d_z, 0.0)
        if variant == "cudnn":
            h_n = saved_ref[t, rows, hn_col]
            dpre_ref[t, rows, r_col] = jnp.where(valid, reset_backward(d_n, h_n, r), 0.0)
            dpre_ref[t, rows, n_col] = jnp.where(valid, d_n * r, 0.0)
        else:
            dpre_ref[t, rows, n_col] = jnp.where(valid, d_n, 0.0)
        dh_ref[rows, cols] = jnp.where(valid, dh_direct, dh)

    def reset_phase(t, column):  # original only: through (r * h) W_hn
        cols = pl.ds(column, width)
        r_col = _gate_columns(layout, column, (0,))[0]
        d_rh = _program.gate_gradients_back(program, dpre_ref, w_ref, t, cols, (2,), precision)
        r = saved_ref[t, rows, r_col]
        h_prev = hs_ref[t, rows, cols]
        dpre_ref[t, rows, r_col] = reset_backward(d_rh, h_prev, r)  # d_rh is 0 on invalid rows
        dh_ref[rows, cols] = dh_ref[rows, cols] + d_rh * r

    def recurrent_phase(t, column):
        cols = pl.ds(column, width)
        gates = range(3) if variant == "cudnn" else range(2)
        dh_prev = _program.gate_gradients_back(program, dpre_ref, w_ref, t, cols, gates, precision)
        dh_ref[rows, cols] = dh_ref[rows, cols] + dh_prev

    if variant == "cudnn":
        phases = [(local_phase, True), (recurrent_phase, False)]
    else:
        phases = [(local_phase, True), (reset_phase, True), (recurrent_phase, False)]
    _program.run_steps(program, layout.num_steps, phases, reverse=True)


@dataclasses.dataclass(frozen=True)
class _Gru:
    """The GRU recurrence for ``_vjp.fused``: arrays (projected, w_hh, b_hn, h0)."""

    variant: str
    num_gates: int = NUM_GATES

    def forward(self, layout, arrays, lengths, options, save):
        projected, w_hh, b_hn, h0 = arrays
        padded = (
            _layout.pad_axis(lengths, 0, layout.batch_padded),
            _layout.pad_sequence(projected, layout, NUM_GATES),
            _layout.pad_weights(w_hh, layout, NUM_GATES),
            _layout.pad_axis(b_hn, 0, layout.hidden_padded)[None, :],
            _layout.pad_sequence(h0, layout, 1),
        )
        steps, batch, hidden = layout.num_steps, layout.batch_padded, layout.hidden_padded
        original = self.variant == "original"
        out_shapes = [
            jax.ShapeDtypeStruct((steps + 1, batch, hidden), f32),
            jax.ShapeDtypeStruct((steps, batch, 4 * hidden), f32),
            # r * h exists for the original variant only; cudnn gets a one-step dummy
            jax.ShapeDtypeStruct((steps if original else 1, batch, hidden), f32),
        ]
        kernel = functools.partial(
            _forward_kernel,
            layout=layout,
            variant=self.variant,
            precision=_program.matmul_precision(w_hh.dtype),
        )
        hs, saved, rh = _launch.call(
            kernel, layout, out_shapes, "seqlab_gru_forward", *padded, poison=options.poison
        )
        outputs = _layout.unpad_states(layout, hs, projected.dtype)
        return outputs, ((padded[0], padded[2], hs, saved, rh, b_hn) if save else None)

    def backward(self, layout, options, residuals, d_hs):
        lengths, w_hh, hs, saved, rh, b_hn = residuals
        batch, hidden = layout.batch_padded, layout.hidden_padded
        out_shapes = [
            jax.ShapeDtypeStruct((layout.num_steps, batch, NUM_GATES * hidden), f32),
            jax.ShapeDtypeStruct((layout.num_steps, batch, hidden), f32),
            jax.ShapeDtypeStruct((batch, hidden), f32),
        ]
        kernel = functools.partial(
            _backward_kernel,
            layout=layout,
            variant=self.variant,
            precision=_program.matmul_precision(w_hh.dtype),
        )
        dpre, dxn, dh0 = _launch.call(
            kernel,
            layout,
            out_shapes,
            "seqlab_gru_backward",
            lengths,
            saved,
            hs,
            w_hh,
            _layout.pad_sequence(d_hs.astype(f32), layout, 1),
            poison=options.poison,
        )
        h, b = layout.hidden, layout.batch
        if self.variant == "cudnn":
            d_w_hh = jnp.einsum("tbr,tbg->rg", hs[:-1], dpre)
            d_b_hn = jnp.sum(dpre[..., 2 * hidden :], axis=(0, 1))[:h]
        else:
            d_w_rz = jnp.einsum("tbr,tbg->rg", hs[:-1], dpre[..., : 2 * hidden])
            d_w_n = jnp.einsum("tbr,tbg->rg", rh, dpre[..., 2 * hidden :])
            d_w_hh = jnp.concatenate([d_w_rz, d_w_n], axis=-1)
            d_b_hn = jnp.zeros_like(b_hn, f32)
        d_projected = jnp.concatenate([dpre[..., : 2 * hidden], dxn], axis=-1)
        d_projected = _layout.unpad_gates(d_projected[:, :b], NUM_GATES, h, hidden)
        d_w_hh = _layout.unpad_gates(d_w_hh[:h], NUM_GATES, h, hidden)
        return (
            d_projected.astype(d_hs.dtype),
            d_w_hh.astype(w_hh.dtype),
            d_b_hn.astype(b_hn.dtype),
            dh0[:b, :h],
        )

    def reference(self, projected, w_hh, b_hn, h0, lengths):
        return gru_recurrence_reference(projected, w_hh, b_hn, h0, lengths, variant=self.variant)


def gru_recurrence(
    projected: Array,
    w_hh: Array,
    b_hn: Array | None,
    h0: Array,
    seq_lengths: Array,
    *,
    variant: str = "cudnn",
    options: Pallas | None = None,
) -> Array:
    """The GRU recurrence after the input projection, one fused kernel each way.

    Args:
      projected: (T, B, 3H), ``x_t W_ih + b`` for every step (time-major), gates r, z, n.
      w_hh: (H, 3H). b_hn: (H,), the bias inside the reset product (cudnn variant; None
        means zeros; must be None for the original variant). h0: (B, H).
      seq_lengths: (B,) ints in [0, T].
      variant: ``"cudnn"`` or ``"original"`` (as ``seqlab.cells.GRU``).
      options: as for ``lstm_recurrence``.

    Returns:
      hs: (T, B, H), the hidden state after every step (frozen past a row's length).
    """
    check_one_of("variant", variant, VARIANTS)
    if variant == "original" and b_hn is not None:
        raise ValueError("the original GRU variant has no b_hn; pass None")
    options = resolve_options(options)
    seq_lengths = _layout.check_lengths_dtype(seq_lengths, projected.shape[1])
    projected = zero_padding(projected, seq_lengths)  # padding reaches no gradient
    if b_hn is None:
        b_hn = jnp.zeros((w_hh.shape[0],), w_hh.dtype)
    return fused(_Gru(variant), (projected, w_hh, b_hn, h0.astype(f32)), seq_lengths, options)


def gru_recurrence_reference(projected, w_hh, b_hn, h0, seq_lengths, *, variant="cudnn"):
    """``gru_recurrence`` as a plain ``lax.scan``: float32 state and accumulation, matmul
    operands in ``w_hh``'s dtype (``__program.reference_matmul``)."""
    seq_lengths = as_lengths(seq_lengths)
    projected = zero_padding(projected, seq_lengths)
    hidden = w_hh.shape[0]
    b_hn = (jnp.zeros((hidden,), f32) if b_hn is None else b_hn.astype(f32))[None, :]
    matmul = _program.reference_matmul

    def step(h, inputs):
        x, t = inputs
        x_r, x_z, x_n = jnp.split(x.astype(f32), NUM_GATES, axis=-1)
        r = jax.nn.sigmoid(x_r + matmul(h, w_hh[:, :hidden]))
        z = jax.nn.sigmoid(x_z + matmul(h, w_hh[:, hidden : 2 * hidden]))
        if variant == "cudnn":
            n = jnp.tanh(x_n + r * (matmul(h, w_hh[:, 2 * hidden :]) + b_hn))
        else:
            n = jnp.tanh(x_n + matmul(r * h, w_hh[:, 2 * hidden :]))
        h_new = gru_update(z, n, h)
        h = jnp.where((t < seq_lengths)[:, None], h_new, h)
        return h, h

    _, hs = jax.lax.scan(step, h0.astype(f32), (projected, jnp.arange(projected.shape[0])))
    return hs.astype(projected.dtype)
