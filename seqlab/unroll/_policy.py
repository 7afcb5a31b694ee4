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
    cpu      no     2-core x86 (AVX-512), hand-derived backward (implementation="xla"),
                    fwd+bwd, 2026-11-26: LSTM 278 / 273 ms hoisted / not at
                    (B, T, H) = (32, 256, 256) and 167 / 146 ms at (16, 1024, 128); GRU
                    196 / 161 and 132 / 114 ms (benchmarks/results/
                    scan_throughput_cpu_cpu_2026-11-26.md). XLA's CPU matmul reaches about
                    110 GFLOP/s at the hoisted (T·B, H) x (H, 4H) shape against 200 at the
                    backward's chunk shape (same file), and the hoisted (T, B, 4H) buffer
                    costs a pass over memory (about 7 GB/s here). Earlier, with autodiff,
                    hoisting made the LSTM forward 2.4x slower
                    (scan_throughput_cpu_cpu_2026-11-24.md).
                    The hand-derived backward still hoists small problems on CPU
                    (HOIST_MAX_VALUES below).

With the hand-derived backward (``seqlab/unroll/_bptt.py``), hoisting also decides how
its input-side gradients are computed: hoisted, dW_ih, dW_hh, db and dxs are one matmul
each over all T steps after the reverse loop; not hoisted, one per chunk of
``BPTT_CHUNK_ROWS`` rows (below) inside it.
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
#                      forward pass, 4-8 up to 1.8x slower for LSTM fwd+bwd (autodiff,
#                      scan_throughput_cpu_cpu_2026-11-24.md); with the hand-derived
#                      backward, unroll 2 against 1: LSTM 232 / 212 ms, GRU 162 / 165 ms at
#                      (32, 256, 256), LSTM 157 / 136, GRU 116 / 114 at (16, 1024, 128)
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
# and weight gradients of a chunk of steps as one matmul each, inside its reverse loop; a
# chunk is BPTT_CHUNK_ROWS // B steps (at least 1, at most T), so those matmuls have about
# BPTT_CHUNK_ROWS rows whatever the batch size, and the chunk's gate gradients stay in
# cache instead of making a (T, B, G·H) pass over memory.
#
#     rows   LSTM (32, 256, 256)  LSTM (16, 1024, 128)  GRU (32, 256, 256)  GRU (16, 1024, 128)
#     128    212 ms               152 ms                166 ms              119 ms
#     256    202                  147                   156                 118
#     512    206                  142                   156                 109
#     1024   205                  142                   161                 110
#     T·B    209 (117 MB temp)    153 (118 MB)          166 (118 MB)        122 (117 MB)
#
# fwd+bwd, 2-core CPU, 2026-11-26, against autodiff's 234 / 244 / 184 / 186 ms in the same
# runs; temp memory 60-69 MB for 128-1024 rows. 512 sits in the flat middle.
BPTT_CHUNK_ROWS = 512


# The hand-derived backward on a backend whose HOIST_INPUT_PROJECTION is False still hoists
# when the projected inputs (T·B·G·H values) are at most this many: a buffer that small
# costs little to write and read, and the one large matmul beats T small ones. LSTM
# fwd+bwd on the 2-core CPU, not hoisted / hoisted (T·B·4H values), 2026-11-26:
#
#     (B, T, H) = (16, 64, 64)    2.7 / 2.4 ms    (0.26 M)    (8, 1000, 32)    15.3 / 12.0 (1.0 M)
#                 (64, 100, 64)   17.4 / 15.5     (1.6 M)     (16, 400, 64)    24.3 / 19.4 (1.6 M)
#                 (128, 100, 64)  46.4 / 49.0     (3.3 M)     (64, 100, 128)   50.1 / 61.7 (3.3 M)
#                 (32, 100, 256)  76.6 / 88.3     (3.3 M)     (32, 256, 256)   204 / 209   (8.4 M)
#
# and at the demo's shape (64, 100, 64) GRU 13.8 / 11.7, tanh RNN 5.6 / 4.1 ms.
HOIST_MAX_VALUES = {"cpu": 2**21}


def hoist_small(num_values: int) -> bool:
    """The hand-derived backward's hoisting default for projected inputs of this size."""
    backend = jax.default_backend()
    if HOIST_INPUT_PROJECTION.get(backend, True):
        return True
    return num_values <= HOIST_MAX_VALUES.get(backend, 0)


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


# Implementation choices: measurements behind code that has no setting (the docstrings
# and comments that make these choices point here by the quoted name). 2-core x86 CPU
# (AVX-512), float32; one-off A/B runs during development, not result files, except
# where a file is named:
#
#     "Wᵀ once"            the hand-derived backward multiplies by a contiguous Wᵀ made
#                          once before its loop (cells' ``backward_weights``): 34 against
#                          56 ms for 256 steps of (32, 1024) x (1024, 256) with a
#                          transposed operand in every step
#     "one matmul for dW_ih and dW_hh"
#                          ``cells._affine.affine_gradients`` as [xs, h_prev]ᵀ d_pre, one
#                          read of d_pre: LSTM at (32, 256, 256) 50 against 71 ms for two
#     "contraction over time and batch"
#                          one device: (T·B, ·) reshapes and one matmul; a dot_general over
#                          both axes took 8-40% longer per training step (LSTM, GRU, RNN at
#                          H = 64). Batch sharded over 4 CPU devices: the dot_general,
#                          since the merged axis made the partitioner all-gather the
#                          activations every step (T·B·4H float32 values, 6.5 MB, for the
#                          H = 64 LSTM at T = 100, B = 64): 1.868 against 0.817 s per
#                          100 steps (benchmarks/results/distributed_training_cpu_
#                          2026-11-26_before_backward_fix.md and ..._2026-11-26.md)
#     "zeroing inside remat blocks"
#                          ``unroll._bptt.scan_bptt`` zeroes outputs block by block under
#                          remat: zeroing only after the blocks kept one more (T, B, H)
#                          array alive (temp 86 against 54 MiB at T = 1024)
#     "2x2 blocks written out"
#                          ``parallel._solve.Form`` applies DiagLSTM's 2x2 blocks of
#                          diagonals as H-long elementwise products, which fuse; a (K, K)
#                          einsum per element took 61 ms against 33-43 for a
#                          (4096, 8, 2, 2, 64) solve
