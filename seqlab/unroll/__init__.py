"""Unrolling a cell over time: ``scan`` (the dispatcher), ``Xla`` (the ``lax.scan``
implementation's options), its reference and the hand-derived backward."""

from seqlab._time import reverse_within_lengths as reverse_within_lengths
from seqlab.unroll._options import Xla as Xla
from seqlab.unroll._scan import IMPLEMENTATIONS as IMPLEMENTATIONS
from seqlab.unroll._scan import resolve_implementation as resolve_implementation
from seqlab.unroll._scan import scan as scan

__all__ = ["scan", "Xla", "resolve_implementation", "reverse_within_lengths", "IMPLEMENTATIONS"]
