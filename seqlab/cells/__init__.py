"""Recurrent cells as pure functions over explicit parameters.

Each cell is a frozen description with ``init(key, input_size)``,
``initial_carry(params, batch_shape)`` and ``step(params, carry, x)``; see
``seqlab.cells.Cell`` for writing your own from three functions. ``MinGRU``, ``MinLSTM``,
``DiagGRU`` and ``DiagLSTM`` have diagonal state Jacobians, for parallel-in-time solves
(``seqlab.parallel``). ``ConvLSTM`` and ``ConvGRU`` carry a spatial state map (their
``spatial_shape``): inputs (*batch, *spatial, C) instead of (*batch, D).
"""

from seqlab.cells._base import JACOBIAN_STRUCTURES as JACOBIAN_STRUCTURES
from seqlab.cells._base import Cell as Cell
from seqlab.cells._base import PerturbedHidden as PerturbedHidden
from seqlab.cells._base import RecurrentCell as RecurrentCell
from seqlab.cells._base import TrainableInitialState as TrainableInitialState
from seqlab.cells._base import can_hoist as can_hoist
from seqlab.cells._base import check_cell as check_cell
from seqlab.cells._base import hidden_of as hidden_of
from seqlab.cells._base import input_layout as input_layout
from seqlab.cells._base import jacobian_structure as jacobian_structure
from seqlab.cells._base import replace_hidden as replace_hidden
from seqlab.cells._base import spatial_shape as spatial_shape
from seqlab.cells._conv import ConvGRU as ConvGRU
from seqlab.cells._conv import ConvLSTM as ConvLSTM
from seqlab.cells._elementwise import DiagGRU as DiagGRU
from seqlab.cells._elementwise import DiagLSTM as DiagLSTM
from seqlab.cells._elementwise import MinGRU as MinGRU
from seqlab.cells._elementwise import MinLSTM as MinLSTM
from seqlab.cells._gru import GRU as GRU
from seqlab.cells._lstm import LSTM as LSTM
from seqlab.cells._lstm import LSTMState as LSTMState
from seqlab.cells._mgu import MGU as MGU
from seqlab.cells._registry import CELL_KINDS as CELL_KINDS
from seqlab.cells._registry import kind_of as kind_of
from seqlab.cells._registry import make as make
from seqlab.cells._registry import option_types as option_types
from seqlab.cells._registry import register as register
from seqlab.cells._registry import registered as registered
from seqlab.cells._rnn import RNN as RNN

__all__ = [
    "Cell",
    "RecurrentCell",
    "TrainableInitialState",
    "PerturbedHidden",
    "hidden_of",
    "replace_hidden",
    "can_hoist",
    "check_cell",
    "jacobian_structure",
    "JACOBIAN_STRUCTURES",
    "RNN",
    "LSTM",
    "LSTMState",
    "GRU",
    "MGU",
    "MinGRU",
    "MinLSTM",
    "DiagGRU",
    "DiagLSTM",
    "ConvLSTM",
    "ConvGRU",
    "spatial_shape",
    "input_layout",
    "make",
    "option_types",
    "register",
    "registered",
    "kind_of",
    "CELL_KINDS",
]
