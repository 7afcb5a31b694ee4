"""Cells looked up by name, so that configs and the command line can say ``cell="lstm"``."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

from seqlab._checks import require
from seqlab.cells._base import TrainableInitialState
from seqlab.cells._conv import ConvGRU, ConvLSTM
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
    "conv_lstm": ConvLSTM,
    "conv_gru": ConvGRU,
}


# what each registered cell reads: a time line ("sequence", seqlab.scan) or a tree
# ("tree", seqlab.trees.tree_scan)
CELL_KINDS = ("sequence", "tree")
_KINDS: dict[str, str] = {name: "sequence" for name in _REGISTRY}


def register(name: str, factory: Callable[..., Any], *, kind: str = "sequence") -> None:
    """Make ``make(name, **options)`` call ``factory(**options)``; names are unique.
    ``kind``: "sequence" for a recurrent cell, "tree" for a tree cell (seqlab.trees)."""
    require(isinstance(name, str) and name, f"a cell name must be a non-empty str, got {name!r}")
    require(name not in _REGISTRY, f"a cell named {name!r} is registered already")
    require(kind in CELL_KINDS, f"kind must be one of {CELL_KINDS}, got {kind!r}")
    _REGISTRY[name] = factory
    _KINDS[name] = kind


def registered(kind: str | None = "sequence") -> list[str]:
    """The names ``make`` accepts for cells of ``kind`` ("sequence" by default, "tree",
    or None for every cell)."""
    require(kind is None or kind in CELL_KINDS, f"kind must be one of {CELL_KINDS} or None")
    return sorted(name for name in _REGISTRY if kind is None or _KINDS[name] == kind)


def kind_of(name: str) -> str:
    """ "sequence" or "tree": what the cell registered as ``name`` reads."""
    require(name in _REGISTRY, f"unknown cell {name!r}; expected one of {registered(None)}")
    return _KINDS[name]


def option_types(name: str) -> dict[str, Any] | None:
    """The keyword options ``make(name, ...)`` takes, each with its declared type: the
    annotation of the cell's dataclass field (or of the factory's parameter), else the
    type of its default, else ``typing.Any``. None when the factory takes any keyword
    (``**kwargs``). Configs check the types of ``model.cell_options`` against it, so a
    newly registered cell is covered without a table to update.
    """
    require(name in _REGISTRY, f"unknown cell {name!r}; expected one of {registered(None)}")
    factory = _REGISTRY[name]
    declared = {"trainable_initial_state": bool}  # make's own keyword
    if dataclasses.is_dataclass(factory):
        hints = _type_hints(factory)
        for field in dataclasses.fields(factory):
            if field.init:
                default = None if field.default is dataclasses.MISSING else field.default
                declared[field.name] = hints.get(field.name, _type_of(default))
        return declared
    parameters = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    hints = _type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for parameter in parameters:
        if parameter.kind in keywords:
            default = None if parameter.default is parameter.empty else parameter.default
            declared[parameter.name] = hints.get(parameter.name, _type_of(default))
    return declared


def _type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except (NameError, TypeError):  # an annotation that does not resolve: nothing declared
        return {}


def _type_of(default: Any) -> Any:
    """The type an unannotated option is taken to have from its default: a bool or a
    string as such, any number for a number (an int default need not mean an int)."""
    if isinstance(default, bool | str):
        return type(default)
    return float if isinstance(default, int | float) else Any


def make(name: str, *, trainable_initial_state: bool = False, **options: Any) -> Any:
    """The cell registered as ``name``, e.g. ``make("lstm", hidden_size=128)``.

    With ``trainable_initial_state=True`` the cell comes wrapped in
    ``TrainableInitialState``.
    """
    require(name in _REGISTRY, f"unknown cell {name!r}; expected one of {registered(None)}")
    require(
        not trainable_initial_state or _KINDS[name] == "sequence",
        f"trainable_initial_state is for sequence cells; {name!r} is a tree cell",
    )
    cell = _REGISTRY[name](**options)
    return TrainableInitialState(cell) if trainable_initial_state else cell
