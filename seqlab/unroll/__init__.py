"""Unrolling a cell over time: ``scan``, its ``lax.scan`` reference and the dispatcher."""

from seqlab._time import reverse_within_lengths as reverse_within_lengths
from seqlab.unroll._options import Xla as Xla
from seqlab.unroll._scan import IMPLEMENTATIONS as IMPLEMENTATIONS
from seqlab.unroll._scan import resolve_implementation as resolve_implementation
from seqlab.unroll._scan import scan as scan

__all__ = ["scan", "Xla", "resolve_implementation", "reverse_within_lengths", "IMPLEMENTATIONS"]
