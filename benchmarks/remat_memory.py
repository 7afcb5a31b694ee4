"""Memory and time of backpropagation through a long sequence, with and without remat.

An LSTM layer at B=32, T=4096, H=D=256 (float32), loss = sum of outputs, gradient with
respect to parameters and inputs. Memory is XLA's compiled memory analysis of the jitted
gradient: ``temp`` is the working set beyond arguments and outputs (the stored activations
and residuals of BPTT), ``total`` adds the arguments and outputs. ``remat=True`` runs time
in blocks of about sqrt(T) = 64 steps under ``jax.checkpoint``. Target: remat's temp at
most 1/8 of the plain scan's.

    python benchmarks/remat_memory.py --preset ci      # the full-size shape, 2 timed runs
    python benchmarks/remat_memory.py --preset full    # 5 timed runs
"""

from __future__ import annotations

import datetime
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from _common import preset_parser  # (also puts the checkout on sys.path)

import seqlab  # noqa: E402

PRESETS = {"ci": dict(repeats=2), "full": dict(repeats=5)}
SHAPE = (32, 4096, 256)


def measure(remat, repeats: int) -> dict:
    batch, steps, hidden = SHAPE
    cell = seqlab.cells.LSTM(hidden)
    params = cell.init(jax.random.key(0), hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))

    def loss(params, xs):
        return jnp.sum(seqlab.scan(cell, params, xs, remat=remat)[0])

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
    memory = compiled.memory_analysis()
    jax.block_until_ready(compiled(params, xs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, xs))
        times.append(time.perf_counter() - start)
    temp = memory.temp_size_in_bytes
    total = temp + memory.argument_size_in_bytes + memory.output_size_in_bytes
    return {
        "remat": remat,
        "temp_mib": temp / 2**20,
        "total_mib": total / 2**20,
        "seconds": statistics.median(times),
    }


def main(argv=None) -> int:
    parser = preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args(argv)
    repeats = PRESETS[args.preset]["repeats"]
    plain = measure(False, repeats)
    rematted = measure(True, repeats)
    device = jax.devices()[0]
    today = datetime.date.today().isoformat()
    report = "\n".join(
        [
            f"# remat_memory, preset {args.preset}",
            "",
            f"- date: {today}",
            f"- machine: {platform.machine()}, {device.platform}: {device.device_kind}",
            f"- jax {jax.__version__}; LSTM, (B, T, H=D) = {SHAPE}, float32, "
            "grad w.r.t. params and xs",
            f"- median of {repeats} timed runs after one warm-up",
            "",
            "| scan | temp MiB | total MiB | fwd+bwd s |",
            "|---|---|---|---|",
            *(
                f"| {'remat (blocks of 64)' if r['remat'] else 'plain'} | {r['temp_mib']:.0f} | "
                f"{r['total_mib']:.0f} | {r['seconds']:.2f} |"
                for r in (plain, rematted)
            ),
            "",
            f"remat / plain: temp {rematted['temp_mib'] / plain['temp_mib']:.3f} "
            "(target <= 0.125), "
            f"total {rematted['total_mib'] / plain['total_mib']:.3f}, "
            f"time {rematted['seconds'] / plain['seconds']:.2f}x",
            "",
        ]
    )
    print(report)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"remat_memory_{args.preset}_{device.platform}_{today}"
    (out / f"{stem}.md").write_text(report)
    (out / f"{stem}.json").write_text(json.dumps([plain, rematted], indent=2))
    ratio = rematted["temp_mib"] / plain["temp_mib"]
    if ratio > 0.125:
        print(f"remat temp ratio {ratio:.3f} misses the 1/8 target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
