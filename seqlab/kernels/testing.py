"""What tests and benchmarks use of the kernels beyond their public functions.

- ``recurrence(kind)``: the kernel of one covered cell and its plain reference, over one
  signature ``(projected, w_hh, h0, c0, seq_lengths)`` for every kind in ``KINDS``, and
  ``random_problem`` to feed them;
- ``make_layout`` (the padded sizes and grid of a problem), ``resident_programs_ok`` (the
  barrier's safety condition), ``device_programs`` (the programs resident at once on the
  default device) and ``Layout``.

Everything else of ``seqlab.kernels``' internals may move.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from seqlab.kernels._layout import Layout as Layout
from seqlab.kernels._layout import device_programs as device_programs
from seqlab.kernels._layout import make_layout as make_layout
from seqlab.kernels._layout import resident_programs_ok as resident_programs_ok
from seqlab.kernels._options import Pallas
from seqlab.kernels.gru import gru_recurrence, gru_recurrence_reference
from seqlab.kernels.lstm import lstm_recurrence, lstm_recurrence_reference
from seqlab.kernels.rnn import rnn_recurrence, rnn_recurrence_reference

# The covered cells: LSTM, GRU (cudnn and original reset placement), Elman tanh and relu.
KINDS = ("lstm", "gru", "gru_original", "tanh", "relu")


def recurrence(kind: str):
    """``(kernel, reference, gates)`` of ``kind``: ``kernel(projected, w_hh, h0, c0,
    seq_lengths, *, options=None)`` and ``reference(projected, w_hh, h0, c0,
    seq_lengths)``, and the gate count G (projected is (T, B, G*H)). The GRU kinds take
    ``c0[0]`` as their random b_hn (cudnn) and ignore c0 otherwise; the Elman kinds
    ignore c0."""
    if kind == "lstm":
        return lstm_recurrence, lstm_recurrence_reference, 4
    if kind in ("gru", "gru_original"):
        variant = "cudnn" if kind == "gru" else "original"

        def b_hn(c0):
            return c0[0] if variant == "cudnn" else None

        def gru(projected, w_hh, h0, c0, seq_lengths, *, options: Pallas | None = None):
            return gru_recurrence(
                projected, w_hh, b_hn(c0), h0, seq_lengths, variant=variant, options=options
            )

        def gru_reference(projected, w_hh, h0, c0, seq_lengths):
            return gru_recurrence_reference(
                projected, w_hh, b_hn(c0), h0, seq_lengths, variant=variant
            )

        return gru, gru_reference, 3
    if kind in ("tanh", "relu"):

        def rnn(projected, w_hh, h0, c0, seq_lengths, *, options: Pallas | None = None):
            return rnn_recurrence(
                projected, w_hh, h0, seq_lengths, activation=kind, options=options
            )

        def rnn_reference(projected, w_hh, h0, c0, seq_lengths):
            return rnn_recurrence_reference(projected, w_hh, h0, seq_lengths, activation=kind)

        return rnn, rnn_reference, 1
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def random_problem(rng: np.random.Generator, kind: str, num_steps, batch, hidden, dtype):
    """``((projected, w_hh, h0, c0), seq_lengths)`` for ``recurrence(kind)``: normal
    values in ``dtype`` (recurrent weights scaled by 1.2 / sqrt(H), so the state neither
    saturates nor dies), lengths uniform in [0, T] with row 0 full length."""
    _, _, gates = recurrence(kind)

    def normal(*shape, scale=1.0):
        return jnp.asarray(rng.normal(scale=scale, size=shape), jnp.float32).astype(dtype)

    arrays = (
        normal(num_steps, batch, gates * hidden),
        normal(hidden, gates * hidden, scale=1.2 / np.sqrt(hidden)),
        normal(batch, hidden, scale=0.5),
        normal(batch, hidden, scale=0.5),
    )
    lengths = jnp.asarray(rng.integers(0, num_steps + 1, size=batch), jnp.int32)
    return arrays, lengths.at[0].set(num_steps)


__all__ = [
    "KINDS",
    "Layout",
    "device_programs",
    "make_layout",
    "random_problem",
    "recurrence",
    "resident_programs_ok",
]
