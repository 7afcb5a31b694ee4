"""Seeds of a sweep point as one program: 8 seeds against 1, and against 8 one by one.

The adding task at H=64, T=100, batch 64 (the issue's shape), LSTM, Adam. Times the
training chunks of ``seqlab.experiments.Experiment`` after compilation:

- ``one``: 1 seed;
- ``together``: 8 seeds in one jitted program, batched as the policy says
  (``resolve_seed_batching``: vmap on GPU; on CPU one copy per seed on jax 0.10 and 0.11,
  vmap from jax 0.12);
- ``vmap`` (accelerators only): 8 seeds forced through vmap;
- ``loop`` (CPU, where the policy vmaps): 8 seeds as one copy each, what vmap replaced;
- ``sequential``: 8 x ``one`` (running the seeds one after another).

Targets: on a GPU, ``together`` at most 1.5x ``one``; on CPU, ``together`` no slower than
``sequential`` (10% allowed for timing noise). Exits 1 when the target is missed (the
``ci`` preset, one short timing, only reports).

    python benchmarks/sweep_seeds.py --preset ci     # 40 steps, one timed run
    python benchmarks/sweep_seeds.py --preset cpu    # 400 steps, 3 repeats
    python benchmarks/sweep_seeds.py --preset gpu    # 400 steps, 5 repeats
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import statistics
import sys
import time

import _common  # (also puts the checkout on sys.path)
import jax

from seqlab.experiments import (  # noqa: E402
    Experiment,
    apply_overrides,
    default_config,
    resolve_seed_batching,
)

PRESETS = {
    "ci": dict(steps=40, repeats=1),
    "cpu": dict(steps=400, repeats=3),
    "gpu": dict(steps=400, repeats=5),
}
SEEDS = 8


def adding_experiment(num_seeds: int, batching: str, cell: str = "lstm") -> Experiment:
    """The benchmark's experiment: the adding task at H=64, T=100, batch 64."""
    config = apply_overrides(
        default_config("adding"),
        [
            f"model.cell={cell}",
            "model.hidden_size=64",
            "data.seq_len=100",
            "train.batch_size=64",
            f"train.num_seeds={num_seeds}",
            f"train.seed_batching={batching}",
        ],
    )
    return Experiment.from_config(config)


def seconds_per_chunk(num_seeds: int, batching: str, steps: int, repeats: int) -> float:
    experiment = adding_experiment(num_seeds, batching)
    state = experiment.init_state()
    state, _ = experiment.train_chunk(state, 0, steps)  # compile
    jax.block_until_ready(state)
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        state, _ = experiment.train_chunk(state, (repeat + 1) * steps, steps)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default="ci")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    backend = jax.default_backend()
    policy = resolve_seed_batching("auto", SEEDS)
    one = seconds_per_chunk(1, "auto", **preset)
    together = seconds_per_chunk(SEEDS, "auto", **preset)
    rows = {"one": one, "together": together, "sequential": SEEDS * one}
    if backend != "cpu":
        rows["vmap"] = seconds_per_chunk(SEEDS, "vmap", **preset)
    elif policy == "vmap":  # what the policy chose over: one copy per seed
        rows["loop"] = seconds_per_chunk(SEEDS, "loop", **preset)
    if backend == "cpu":
        passed = together <= 1.1 * rows["sequential"]
        target = f"{SEEDS} seeds together <= 1.1 x {SEEDS} one after another"
    else:
        passed = together <= 1.5 * one
        target = f"{SEEDS} seeds together <= 1.5 x 1 seed"
    date = datetime.date.today().isoformat()
    lines = [
        f"# sweep_seeds, preset {args.preset}: {backend} "
        f"({platform.processor() or platform.machine()}), jax {jax.__version__}, {date}",
        "",
        f"adding task, LSTM, H=64, T=100, batch 64; {preset['steps']} steps per measurement, "
        f"median of {preset['repeats']}; seed batching policy on this backend: `{policy}`.",
        "",
        "| variant | seconds | steps/s | x one seed |",
        "|---|---|---|---|",
    ]
    for name, value in rows.items():
        lines.append(
            f"| {name} | {value:.3f} | {preset['steps'] / value:.1f} | {value / one:.2f} |"
        )
    lines += ["", f"Target: {target}: {'met' if passed else 'MISSED'}."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"sweep_seeds_{args.preset}_{backend}_{date}"
    recorded = _common.provenance()
    stem.with_suffix(".md").write_text(text + _common.provenance_markdown(recorded))
    payload = {
        "preset": args.preset,
        "backend": backend,
        "policy": policy,
        "seconds": rows,
        "steps": preset["steps"],
        "passed": passed,
        "jax": jax.__version__,
        "date": date,
        "provenance": recorded,
    }
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    # The CI preset's single short timing is too noisy to gate on; the others gate.
    return 0 if passed or args.preset == "ci" else 1


if __name__ == "__main__":
    sys.exit(main())
