"""seqlab: recurrent neural networks as pure JAX functions."""

from seqlab import cells as cells
from seqlab import interop as interop
from seqlab import layers as layers
from seqlab.unroll import scan as scan

__version__ = "0.1.0"

__all__ = ["cells", "interop", "layers", "scan", "__version__"]
