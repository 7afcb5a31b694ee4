"""Per-backend defaults of ``seqlab.scan``, chosen from measurements, kept in one place.

Where the input projection is computed.

Hoisting computes ``x_t W_ih + b`` for all T steps as one (T·B, D) x (D, G·H) matmul
before the loop, leaving only the recurrent matmul inside it. Whether that pays depends
on the backend (measured with ``benchmarks/scan_throughput.py``; results in
``benchmarks/results/``):

    backend  hoist  evidence
    gpu      yes    H100, LSTM fwd+bwd, plain lax.scan, unroll 1: hoisted 38 ms against
                    68 ms at (B, T, H) = (64, 512, 1024) (1.8x), 1.3x at (16, 2048, 512)
                    and (64, 512, 256) (the team's anchor measurement; not a seqlab run)
    tpu      yes    same reasoning as gpu (one large matmul on the matrix unit); unmeasured
    cpu      no     2-core x86, B=32 T=256 H=256: hoisting made the forward pass 2.4x
                    slower for LSTM, 2.2x for GRU, within noise for the tanh RNN
                    (benchmarks/results/scan_throughput_cpu_cpu_2026-11-24.md)
"""

from __future__ import annotations

import jax

from seqlab._checks import require
from seqlab.cells import can_hoist

HOIST_INPUT_PROJECTION = {"cpu": False, "gpu": True, "cuda": True, "rocm": True, "tpu": True}

# How many time steps one loop iteration runs (``lax.scan``'s ``unroll``):
#
#     backend  unroll  evidence
#     gpu      8       H100, LSTM fwd+bwd at (64, 512, 1024), hoisted: 28.9 ms with unroll 8
#                      against 38 ms with unroll 1 (the team's anchor measurement, the same
#                      as above; cuDNN took 27.9 ms); per-step loop overhead dominates a
#                      GPU scan
#     cpu      1       2-core x86, B=32 T=256 H=256: unroll 2-8 within noise for the
#                      forward pass, 4-8 up to 1.8x slower for LSTM fwd+bwd (same file)
#     tpu      1       unmeasured
DEFAULT_UNROLL = {"cpu": 1, "gpu": 8, "cuda": 8, "rocm": 8, "tpu": 1}


# When ``implementation=None`` picks the fused Pallas kernels (supported cells, dtypes and
# settings only; see seqlab/unroll/_pallas.py):
#
#     backend  None picks  why
#     gpu      xla         the kernels have not yet run on a GPU (no device was lent to the
#                          session that wrote them); add "gpu" here once
#                          benchmarks/gpu_scan.py shows them correct and faster than xla
#     cpu      xla         the kernels are Triton (GPU) kernels; on a CPU they only run in
#                          interpret mode, which is for tests
#     tpu      xla         no TPU kernels
AUTO_PALLAS: tuple[str, ...] = ()


# The hand-derived backward (seqlab/unroll/_bptt.py) without hoisting computes the input
# projection, the input gradients and the weight gradients of a chunk of steps as one matmul
# each, inside the time loop; a chunk is BPTT_CHUNK_ROWS // B steps, so those matmuls have
# about BPTT_CHUNK_ROWS rows whatever the batch size. TODO measured below.
BPTT_CHUNK_ROWS = 512


def resolve_unroll(unroll: int | bool | None) -> int | bool:
    """``unroll=None`` means the measured per-backend default above."""
    if unroll is None:
        return DEFAULT_UNROLL.get(jax.default_backend(), 1)
    require(
        isinstance(unroll, bool) or (isinstance(unroll, int) and unroll >= 1),
        f"unroll must be None, a positive int or a bool, got {unroll!r}",
    )
    return unroll


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
