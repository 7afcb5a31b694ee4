"""Gradient-flow analysis of any RNNLayer, trained or not.

``hidden_grad_norms`` gives ‖∂L/∂h_t‖ for every layer and step in one backward pass;
``jacobian_norms`` gives ‖∂s_{T-1}/∂s_t‖₂ for the top layer without underflow;
``recurrent_spectrum``, ``gate_saturation`` and ``fit_decay_rate`` summarize them.
"""

from seqlab.analysis._diagnostics import DecayFit as DecayFit
from seqlab.analysis._diagnostics import RecurrentSpectrum as RecurrentSpectrum
from seqlab.analysis._diagnostics import fit_decay_rate as fit_decay_rate
from seqlab.analysis._diagnostics import gate_saturation as gate_saturation
from seqlab.analysis._diagnostics import recurrent_spectrum as recurrent_spectrum
from seqlab.analysis._grad_norms import NonFinite as NonFinite
from seqlab.analysis._grad_norms import first_non_finite as first_non_finite
from seqlab.analysis._grad_norms import hidden_grad_norms as hidden_grad_norms
from seqlab.analysis._jacobian import jacobian_norms as jacobian_norms
from seqlab.analysis._tree_grad_norms import norms_by_depth as norms_by_depth
from seqlab.analysis._tree_grad_norms import tree_grad_norms as tree_grad_norms

__all__ = [
    "hidden_grad_norms",
    "jacobian_norms",
    "first_non_finite",
    "NonFinite",
    "recurrent_spectrum",
    "RecurrentSpectrum",
    "gate_saturation",
    "fit_decay_rate",
    "DecayFit",
    "norms_by_depth",
    "tree_grad_norms",
]
