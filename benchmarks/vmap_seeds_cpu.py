"""Vmapped seeds on XLA's CPU backend: does the training step hang, and is vmap worth it?

On jax 0.10.2 (2 cores) the vmapped training step of ``train.num_seeds=2`` hung at random:
every thread idle, the main thread waiting on a buffer that never became ready. That is why
``train.seed_batching=auto`` writes one copy of the computation per seed on CPU before jax
0.12 (``resolve_seed_batching`` in ``seqlab/experiments/_seeds.py``, which cites this
script's results). This script measures it again on
whatever jax is installed: each trial is a fresh process that builds the experiment
(adding task, T = 100, H = 64, batch 64, 2 seeds, GRU and LSTM alternating, as in the
original reports), compiles, and trains ``--steps`` steps in chunks of ``--chunk``, under a
wall-clock limit; a trial that overruns it is a hang (its process is killed). It also times
the chunks, so the same run says whether vmap is faster than the per-seed loop.

    python benchmarks/vmap_seeds_cpu.py --trials 20            # vmap trials, then loop
    python benchmarks/vmap_seeds_cpu.py --trials 5 --batching loop
    python benchmarks/vmap_seeds_cpu.py --trials 20 --program minimal   # jax + optax only

``--program minimal`` runs ``repro_vmap_cpu_hang.py`` instead (the same computation written
with jax and optax alone; vmap only, 2 seeds, chunks of 100, untimed per chunk: ``--seeds``
and ``--chunk`` apply to the seqlab program only).

Writes ``vmap_seeds_cpu_jax<version>_<date>.{md,json}`` to ``--out`` (default
benchmarks/results). Exit status 1 when any trial hung. Not part of CI: a hang costs the
whole limit, and a clean run of a few trials proves little about a random hang.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROGRAMS = {
    "seqlab": "seqlab.experiments.Experiment.train_chunk",
    "minimal": "repro_vmap_cpu_hang.py (jax and optax only)",
}


def trial(cell: str, batching: str, steps: int, chunk: int, seeds: int) -> dict:
    """One trial, in this process: compile, then time each chunk of training steps."""
    import jax
    from sweep_seeds import adding_experiment  # the same experiment, beside this file

    experiment = adding_experiment(seeds, batching, cell)
    state = experiment.init_state()
    start = time.perf_counter()
    state, _ = experiment.train_chunk(state, 0, chunk)
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - start
    chunk_seconds = []
    for first in range(chunk, steps, chunk):
        start = time.perf_counter()
        state, _ = experiment.train_chunk(state, first, chunk)
        jax.block_until_ready(state)
        chunk_seconds.append(time.perf_counter() - start)
    return dict(compile_seconds=compile_seconds, chunk_seconds=chunk_seconds)


def run_trial(cell, batching, args) -> dict:
    """One trial in a fresh process, killed after ``args.limit`` seconds."""
    if args.program == "minimal":
        minimal = pathlib.Path(__file__).with_name("repro_vmap_cpu_hang.py")
        command = [sys.executable, str(minimal), "--cell", cell,
                   "--chunks", str(args.steps // 100)]  # fmt: skip
    else:
        command = [
            sys.executable,
            __file__,
            "--child",
            json.dumps(dict(cell=cell, batching=batching, steps=args.steps, chunk=args.chunk,
                            seeds=args.seeds)),
        ]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.limit, check=False
        )
    except subprocess.TimeoutExpired:
        return dict(cell=cell, batching=batching, outcome="hang", seconds=args.limit)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return dict(cell=cell, batching=batching, outcome="error", seconds=seconds,
                    error=done.stderr[-2000:])  # fmt: skip
    if args.program == "minimal":
        return dict(cell=cell, batching=batching, outcome="ok", seconds=seconds)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(cell=cell, batching=batching, outcome="ok", seconds=seconds, **result)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="vmap trials (and loop trials)")
    parser.add_argument("--batching", choices=["vmap", "loop", "both"], default="both")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--limit", type=float, default=180.0, help="seconds before a hang")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--program", choices=["seqlab", "minimal"], default="seqlab")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(trial(**json.loads(args.child))))
        return 0

    import jax

    batchings = ["vmap", "loop"] if args.batching == "both" else [args.batching]
    if args.program == "minimal":
        batchings = ["vmap"]
    rows = []
    for index in range(args.trials):
        for batching in batchings:
            cell = ("gru", "lstm")[index % 2]
            row = run_trial(cell, batching, args)
            rows.append(row)
            chunks = row.get("chunk_seconds") or [float("nan")]
            print(f"trial {index} {cell} {batching}: {row['outcome']} in {row['seconds']:.1f} s"
                  f" (median chunk {statistics.median(chunks):.3f} s)", flush=True)  # fmt: skip
    date = datetime.date.today().isoformat()
    lines = [
        f"# vmapped seeds on XLA:CPU, jax {jax.__version__}, {date}",
        "",
        f"Program: {PROGRAMS[args.program]}.",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Adding task, T = 100, H = 64, batch 64, {args.seeds} seeds, GRU and LSTM "
        f"alternating; each trial a fresh process training {args.steps} steps in chunks of "
        f"{args.chunk}, a hang = still running after {args.limit:.0f} s.",
        "",
        "| batching | cell | trials | hangs | errors | median first chunk s | median chunk s |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for batching in batchings:
        for cell in ("gru", "lstm"):
            mine = [r for r in rows if r["batching"] == batching and r["cell"] == cell]
            if not mine:
                continue
            ok = [r for r in mine if r["outcome"] == "ok"]
            hangs = sum(r["outcome"] == "hang" for r in mine)
            errors = sum(r["outcome"] == "error" for r in mine)
            timed = [r for r in ok if "chunk_seconds" in r]
            compile_s = statistics.median([r["compile_seconds"] for r in timed]) if timed else None
            chunk_s = (
                statistics.median([s for r in timed for s in r["chunk_seconds"]]) if timed else None
            )
            summary[f"{batching}/{cell}"] = dict(
                trials=len(mine), hangs=hangs, errors=errors, compile=compile_s, chunk=chunk_s
            )
            fmt = lambda x: "-" if x is None else f"{x:.3f}"
            lines.append(
                f"| {batching} | {cell} | {len(mine)} | {hangs} | {errors} | {fmt(compile_s)} "
                f"| {fmt(chunk_s)} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    program = "" if args.program == "seqlab" else "_minimal"
    stem = f"vmap_seeds_cpu{program}_jax{jax.__version__}_{date}"
    from _common import provenance, provenance_markdown  # beside this file

    recorded = provenance()  # after the trials: it starts JAX's backend in this process
    (out / f"{stem}.md").write_text(text + provenance_markdown(recorded))
    payload = dict(jax=jax.__version__, date=date, settings=vars(args), summary=summary,
                   trials=rows, provenance=recorded)  # fmt: skip
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    return 1 if any(r["outcome"] == "hang" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
