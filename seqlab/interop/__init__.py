"""Conversion from and to the systems researchers come from: PyTorch and Flax linen."""

from seqlab.interop._flax import from_flax_linen as from_flax_linen
from seqlab.interop._torch import from_torch as from_torch
from seqlab.interop._torch import state_to_torch_layout as state_to_torch_layout
from seqlab.interop._torch import to_torch as to_torch

__all__ = ["from_torch", "to_torch", "state_to_torch_layout", "from_flax_linen"]
