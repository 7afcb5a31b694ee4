"""What tests and benchmarks inspect of the kernels' machinery, as a public surface.

``make_layout`` (the padded sizes and grid of a problem), ``resident_programs_ok`` (the
barrier's safety condition), ``device_programs`` (the programs resident at once on the
default device) and ``Layout``. Everything else of ``seqlab.kernels``' internals may move.
"""

from seqlab.kernels._layout import Layout as Layout
from seqlab.kernels._layout import device_programs as device_programs
from seqlab.kernels._layout import make_layout as make_layout
from seqlab.kernels._layout import resident_programs_ok as resident_programs_ok

__all__ = ["Layout", "device_programs", "make_layout", "resident_programs_ok"]
