"""``Pallas``: the value of ``seqlab.scan(implementation=...)`` that carries kernel settings."""

from __future__ import annotations

import dataclasses

from seqlab._checks import require
from seqlab.kernels._persistent import BACKWARDS, Tiles


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
    """

    tiles: Tiles | None = None
    backward: str = "pallas"
    interpret: bool | None = None

    def __post_init__(self):
        require(
            self.tiles is None or isinstance(self.tiles, Tiles),
            f"Pallas.tiles must be a seqlab.kernels.Tiles or None, got {self.tiles!r}",
        )
        require(
            self.backward in BACKWARDS,
            f"Pallas.backward must be one of {list(BACKWARDS)}, got {self.backward!r}",
        )
        require(
            self.interpret in (None, True, False),
            f"Pallas.interpret must be None, True or False, got {self.interpret!r}",
        )
