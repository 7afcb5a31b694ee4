"""Fused Pallas kernels for the recurrences of the built-in cells (GPU; interpret mode on CPU).

Each module holds a forward kernel, a reverse-time backward kernel tied to it through the
one ``jax.custom_vjp`` scaffold of ``_vjp.py``, and a plain ``*_reference`` in float32 that
the tests compare against.
The pointwise math of a step and of its backward (``lstm_update`` /
``lstm_update_backward``, ``gru_update`` / ``gru_update_backward`` / ``reset_backward``,
the RNN's ``ACTIVATIONS`` / ``ACTIVATION_GRADIENTS``) is imported from ``seqlab.cells``,
where the cells and the XLA path's hand-derived backward use the same functions: one
derivation per cell.
The shared grid, tiling and barrier scheme is described in ``_program.py``;
``Pallas`` is the one options object of every kernel (``options=``), and
``seqlab.kernels.testing`` is what tests and benchmarks may inspect of the machinery. Most users
reach these through ``seqlab.scan(..., implementation="pallas")``; the functions here take
the input projection already computed, time-major. ``lower_for_gpu`` lowers any function
of them for CUDA on a machine without a GPU (ahead-of-time checks of the Triton lowering).
"""

from seqlab.kernels._layout import Tiles as Tiles
from seqlab.kernels._lowering import gpu_target as gpu_target
from seqlab.kernels._lowering import lower_for_gpu as lower_for_gpu
from seqlab.kernels._options import Pallas as Pallas
from seqlab.kernels.gru import gru_recurrence as gru_recurrence
from seqlab.kernels.gru import gru_recurrence_reference as gru_recurrence_reference
from seqlab.kernels.lstm import lstm_recurrence as lstm_recurrence
from seqlab.kernels.lstm import lstm_recurrence_reference as lstm_recurrence_reference
from seqlab.kernels.rnn import rnn_recurrence as rnn_recurrence
from seqlab.kernels.rnn import rnn_recurrence_reference as rnn_recurrence_reference

__all__ = [
    "Pallas",
    "Tiles",
    "gpu_target",
    "gru_recurrence",
    "gru_recurrence_reference",
    "lstm_recurrence",
    "lower_for_gpu",
    "lstm_recurrence_reference",
    "rnn_recurrence",
    "rnn_recurrence_reference",
]
