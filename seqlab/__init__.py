"""seqlab: recurrent neural networks as pure JAX functions."""

from seqlab import analysis as analysis
from seqlab import bptt as bptt
from seqlab import cells as cells
from seqlab import experiments as experiments
from seqlab import interop as interop
from seqlab import layers as layers
from seqlab.experiments import load_run as load_run
from seqlab.unroll import scan as scan

__version__ = "0.1.0"

__all__ = [
    "analysis",
    "bptt",
    "cells",
    "experiments",
    "interop",
    "layers",
    "load_run",
    "scan",
    "__version__",
]
