"""Cells looked up by name, so that configs and the command line can say ``cell="lstm"``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seqlab._checks import require
from seqlab.cells._base import TrainableInitialState
from seqlab.cells._elementwise import DiagGRU, DiagLSTM, MinGRU, MinLSTM
from seqlab.cells._gru import GRU
from seqlab.cells._lstm import LSTM
from seqlab.cells._mgu import MGU
from seqlab.cells._rnn import RNN

_REGISTRY: dict[str, Callable[..., Any]] = {
    "rnn": RNN,
    "lstm": LSTM,
    "gru": GRU,
    "mgu": MGU,
    "mingru": MinGRU,
    "minlstm": MinLSTM,
    "diag_gru": DiagGRU,
    "diag_lstm": DiagLSTM,
}


def register(name: str, factory: Callable[..., Any]) -> None:
    """Make ``make(name, **options)`` call ``factory(**options)``; names are unique."""
    require(isinstance(name, str) and name, f"a cell name must be a non-empty str, got {name!r}")
    require(name not in _REGISTRY, f"a cell named {name!r} is registered already")
    _REGISTRY[name] = factory


def registered() -> list[str]:
    """The names ``make`` accepts."""
    return sorted(_REGISTRY)


def make(name: str, *, trainable_initial_state: bool = False, **options: Any) -> Any:
    """The cell registered as ``name``, e.g. ``make("lstm", hidden_size=128)``.

    With ``trainable_initial_state=True`` the cell comes wrapped in
    ``TrainableInitialState``.
    """
    require(name in _REGISTRY, f"unknown cell {name!r}; expected one of {registered()}")
    cell = _REGISTRY[name](**options)
    return TrainableInitialState(cell) if trainable_initial_state else cell
