"""How the seeds of one program are batched: vmapped, or one copy per seed.

``SEED_BATCHING`` is what ``train.seed_batching`` accepts; ``resolve_seed_batching``
turns "auto" into a choice for this backend, jax version and number of seeds, and
``map_seeds`` applies it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SEED_BATCHING = ("auto", "vmap", "loop")

# How the seeds of one program are batched. "vmap" batches them into one computation (what
# makes 8 seeds cost little more than 1 on a GPU). "loop" writes one copy of the
# computation per seed into the same jitted program. Accelerators vmap. On XLA's CPU
# backend jax 0.10.2 hangs at random on the vmapped training step (idle threads, a buffer
# that never becomes ready), and the loop never did, so CPU loops unless the jax version is
# one where the hang was not seen and there are enough seeds for vmap to pay. Measured on
# 2026-11-25, 2-core CPU (benchmarks/vmap_seeds_cpu.py, a fresh process per trial, 2 seeds,
# 200 or 600 steps; benchmarks/results/vmap_seeds_cpu_2026-11-25/summary.md): jax 0.10.2
# hung in 7 of 37 trials (5 of the last 6, run alone); 0.11.2 in 0 of 16; 0.12.0.1 in 0 of
# 68, and 0 of 8 with 8 seeds. 0.11 stays on the loop: 16 trials are too few to trust.
# Vmap against the loop on jax 0.12.0.1 (LSTM, 200 steps): 2 seeds 0.93x, 4 seeds 1.11x,
# 8 seeds 1.45x as fast.
CPU_VMAP_FROM_JAX = (0, 12)
CPU_VMAP_MIN_SEEDS = 4


def resolve_seed_batching(choice: str, num_seeds: int) -> str:
    """``"auto"`` -> "vmap" on accelerators; on CPU "vmap" from jax ``CPU_VMAP_FROM_JAX``
    on with at least ``CPU_VMAP_MIN_SEEDS`` seeds, else "loop" (the measurements behind it are
    above). The Pallas kernels follow it too: vmapped, they run as many seeds side by side
    as stay resident and map over the rest (``seqlab.kernels._launch.resident_vmap``)."""
    if choice != "auto":
        return choice
    if jax.default_backend() != "cpu":
        return "vmap"
    version = tuple(jax.__version_info__[:2])
    if version >= CPU_VMAP_FROM_JAX and num_seeds >= CPU_VMAP_MIN_SEEDS:
        return "vmap"
    return "loop"


def map_seeds(fn, how: str, *args, in_axes=0):
    """``jax.vmap(fn, in_axes)(*args)``, or the same as a Python loop over the seed axis
    whose results are stacked (``how="loop"``)."""
    if how == "vmap":
        return jax.vmap(fn, in_axes=in_axes)(*args)
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    sizes = {jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, axes, strict=True) if ax == 0}
    (size,) = sizes
    results = []
    for i in range(size):
        sliced = [
            jax.tree.map(lambda leaf, i=i: leaf[i], a) if ax == 0 else a
            for a, ax in zip(args, axes, strict=True)
        ]
        results.append(fn(*sliced))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *results)


def seed_params(params, index: int):
    """One seed's parameters out of a stacked tree."""
    return jax.tree.map(lambda leaf: leaf[index], params)
