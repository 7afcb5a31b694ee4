"""seqlab: recurrent neural networks as pure JAX functions."""

import importlib
from typing import TYPE_CHECKING

from seqlab import analysis as analysis
from seqlab import bptt as bptt
from seqlab import cells as cells
from seqlab import interop as interop
from seqlab import layers as layers
from seqlab import trees as trees
from seqlab.unroll import scan as scan

if TYPE_CHECKING:
    from seqlab import experiments as experiments
    from seqlab.experiments import load_run as load_run


def __getattr__(name: str):
    # The experiments layer (OmegaConf, TensorBoard, plots) loads on first use, so the
    # library core needs only jax, flax, optax, chex and orbax: a machine without the
    # experiments' dependencies (the lent GPU machine) can still import seqlab.
    if name == "experiments":
        return importlib.import_module("seqlab.experiments")
    if name == "load_run":
        return importlib.import_module("seqlab.experiments").load_run
    raise AttributeError(f"module 'seqlab' has no attribute {name!r}")


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
    "trees",
    "__version__",
]
