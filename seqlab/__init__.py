"""seqlab: recurrent neural networks as pure JAX functions."""

from seqlab import analysis as analysis
from seqlab import bptt as bptt
from seqlab import cells as cells
from seqlab import interop as interop
from seqlab import layers as layers
from seqlab.unroll import scan as scan

__version__ = "0.1.0"

__all__ = ["analysis", "bptt", "cells", "interop", "layers", "scan", "__version__"]
