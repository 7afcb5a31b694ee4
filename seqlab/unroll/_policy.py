"""Where the input projection is computed: one place for the per-backend choice.

Hoisting computes ``x_t W_ih + b`` for all T steps as one (T·B, D) x (D, G·H) matmul
before the loop, leaving only the recurrent matmul inside it. Whether that pays depends
on the backend (measured with ``benchmarks/scan_throughput.py``; results in
``benchmarks/results/``):

    backend  hoist  evidence
    gpu      yes    H100, LSTM fwd+bwd: 1.8x faster at (B, T, H) = (64, 512, 1024),
                    1.3x at (16, 2048, 512) and (64, 512, 256) (shared/REFERENCES.md)
    tpu      yes    same reasoning as gpu (one large matmul on the matrix unit); unmeasured
    cpu      no     2-core x86, LSTM B=32 T=256 H=256: hoisting slowed the forward pass
                    (see benchmarks/results/scan_throughput_cpu_*.md)
"""

from __future__ import annotations

import jax

from seqlab._checks import require
from seqlab.cells import can_hoist

HOIST_INPUT_PROJECTION = {"cpu": False, "gpu": True, "cuda": True, "rocm": True, "tpu": True}


def should_hoist(cell, hoist_input_projection: bool | None) -> bool:
    """Resolve ``hoist_input_projection=None`` (automatic) to a decision for ``cell``."""
    hoistable = can_hoist(cell)
    if hoist_input_projection is None:
        return hoistable and HOIST_INPUT_PROJECTION.get(jax.default_backend(), True)
    require(
        isinstance(hoist_input_projection, bool),
        f"hoist_input_projection must be None, True or False, got {hoist_input_projection!r}",
    )
    require(
        hoistable or not hoist_input_projection,
        f"hoist_input_projection=True needs a cell with project_inputs and step_projected; "
        f"{type(cell).__name__} has none",
    )
    return hoist_input_projection
