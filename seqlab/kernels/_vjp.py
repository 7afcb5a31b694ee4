"""The one ``jax.custom_vjp`` scaffold of the fused recurrences.

Each cell file (``rnn.py``, ``lstm.py``, ``gru.py``) describes its recurrence as a frozen,
hashable ``Recurrence`` (its static settings: activation, variant) with three bodies:

    forward(layout, arrays, lengths, options, save) -> (outputs, residuals)
        the forward kernel on ``arrays`` (projected inputs first, then weights and
        initial states, unpadded); ``outputs`` the public (unpadded) result, ``residuals``
        what ``backward`` needs (arrays only) when ``save``
    backward(layout, options, residuals, cotangents) -> gradients
        the fused reverse-time kernel: one gradient per array, in order
    reference(*arrays, lengths) -> outputs
        the plain ``lax.scan`` (``backward="xla"`` differentiates it)

and ``fused(recurrence, arrays, lengths, options)`` runs it: the forward kernel, and under
``jax.grad`` either the fused backward or autodiff of the reference. The problem's layout
(tiles, padding, grid) is built in one place, ``layout_of``, from (T, B, H).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import jax

from seqlab.kernels import _layout
from seqlab.kernels._options import Pallas
from seqlab.typing import Array


class Recurrence(Protocol):
    num_gates: int  # gate blocks of the projected inputs (4 LSTM, 3 GRU, 1 RNN)

    def forward(self, layout, arrays: tuple, lengths: Array, options: Pallas, save: bool): ...

    def backward(self, layout, options: Pallas, residuals, cotangents) -> tuple: ...

    def reference(self, *arrays_and_lengths) -> Any: ...


def layout_of(recurrence: Recurrence, num_steps: int, batch: int, hidden: int, options):
    """The tiles, padding and grid of a (T, B, H) problem: every kernel of a recurrence,
    forward and backward, uses this one."""
    return _layout.make_layout(num_steps, batch, hidden, options.tiles, options.interpret)


def _layout_from_projected(recurrence: Recurrence, projected, options):
    num_steps, batch, gates = projected.shape
    return layout_of(recurrence, num_steps, batch, gates // recurrence.num_gates, options)


def _layout_from_cotangent(recurrence: Recurrence, cotangents, options):
    num_steps, batch, hidden = jax.tree_util.tree_leaves(cotangents)[0].shape
    return layout_of(recurrence, num_steps, batch, hidden, options)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def fused(recurrence: Recurrence, arrays: tuple, lengths: Array, options: Pallas):
    """``recurrence`` on ``arrays`` through the fused kernels (see the module docstring)."""
    layout = _layout_from_projected(recurrence, arrays[0], options)
    return recurrence.forward(layout, arrays, lengths, options, save=False)[0]


def _fused_fwd(recurrence, arrays, lengths, options):
    if options.backward == "xla":
        return fused(recurrence, arrays, lengths, options), (arrays, lengths)
    layout = _layout_from_projected(recurrence, arrays[0], options)
    return recurrence.forward(layout, arrays, lengths, options, save=True)


def _fused_bwd(recurrence, options, residuals, cotangents):
    if options.backward == "xla":
        arrays, lengths = residuals
        _, vjp = jax.vjp(lambda *a: recurrence.reference(*a, lengths), *arrays)
        return tuple(vjp(cotangents)), None
    layout = _layout_from_cotangent(recurrence, cotangents, options)
    return tuple(recurrence.backward(layout, options, residuals, cotangents)), None


fused.defvjp(_fused_fwd, _fused_bwd)
