"""``Pallas``: the one options object of the recurrence kernels.

It is the value of ``seqlab.scan(implementation=...)`` that carries kernel settings, and
the ``options=`` argument of ``lstm_recurrence``, ``gru_recurrence`` and
``rnn_recurrence``. It is validated once, when it is made; ``resolved()`` fills in the
defaults that depend on the machine, and the resolved object is passed whole, as the
static (hashable) argument of the kernels' ``custom_vjp``, so every field, ``poison``
included, is part of the jit cache key.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from seqlab._checks import check_one_of, require
from seqlab.kernels._layout import Tiles

BACKWARDS = ("pallas", "xla")


@dataclasses.dataclass(frozen=True)
class Pallas:
    """Run the fused Pallas kernels, with settings. ``implementation="pallas"`` is
    ``implementation=Pallas()``.

    Attributes:
      tiles: tile sizes (``Tiles()`` when None).
      backward: ``"pallas"``, the fused reverse-time kernel, or ``"xla"``, JAX autodiff of
        the kernel's plain reference (a fallback for debugging gradients).
      interpret: Pallas interpret mode; None means "unless the default backend is a GPU".
        Interpret mode is exact but slow: it is for tests, not for training on a CPU.
      poison: start every kernel output as NaN instead of uninitialized memory, so a
        result free of NaN shows the kernels wrote every element they use (the padding
        included: an unwritten padded unit would reach every result through the
        matmuls). For checks only: it costs a fill and an aliased input per output.
    """

    tiles: Tiles | None = None
    backward: str = "pallas"
    interpret: bool | None = None
    poison: bool = False
    name: ClassVar[str] = "pallas"  # the implementation's name in seqlab.scan

    def __post_init__(self):
        require(
            self.tiles is None or isinstance(self.tiles, Tiles),
            f"Pallas.tiles must be a seqlab.kernels.Tiles or None, got {self.tiles!r}",
        )
        check_one_of("Pallas.backward", self.backward, BACKWARDS)
        require(
            self.interpret in (None, True, False),
            f"Pallas.interpret must be None, True or False, got {self.interpret!r}",
        )
        require(
            self.poison in (True, False),
            f"Pallas.poison must be True or False, got {self.poison!r}",
        )

    def resolved(self) -> Pallas:
        """These options with the machine's defaults filled in: ``Tiles()`` for None, and
        interpret mode unless the default backend is a GPU."""
        interpret = jax.default_backend() != "gpu" if self.interpret is None else self.interpret
        return dataclasses.replace(self, tiles=self.tiles or Tiles(), interpret=bool(interpret))


def resolve_options(options: Pallas | None) -> Pallas:
    """``options`` (``Pallas()`` when None) resolved for this machine."""
    require(
        options is None or isinstance(options, Pallas),
        f"options must be a seqlab.kernels.Pallas or None, got {type(options).__name__}",
    )
    return (options or Pallas()).resolved()
