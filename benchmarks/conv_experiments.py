"""Convolution meets recurrence, trained: the front-end's stride against accuracy and
training time, and ConvLSTM against LSTMs on flattened frames.

    python benchmarks/conv_experiments.py --preset ci     # every path, a few steps
    python benchmarks/conv_experiments.py --preset cpu    # the experiments' own budgets

Three experiments, each trained through ``seqlab.experiments.run`` as a user would:

- ``experiments/sunspots_conv.py`` (forecasting, many-to-one) and
  ``experiments/dates_conv.py`` (text, encoder-decoder): no front-end, then a Conv1D
  front-end of stride 1, 2 and 4, two seeds each (trained together): the main eval
  metric per seed, the training time per step (from the metrics' clock between the first
  and the last evaluation, so compilation is left out) and the whole run's seconds;
- ``experiments/moving_digits.py``'s comparison (one seed): ConvLSTM, an LSTM on
  flattened frames with about the same parameter count, and one with 64 hidden units,
  MSE per predicted frame beside the copy-last-frame baseline.

Writes ``conv_experiments_<preset>_<date>.json`` (rows and provenance) to ``--out``,
with the run directories under ``--out``/conv_experiments_runs (replaced on each call).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import pathlib
import shutil
import sys
import time

import _common
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Preset:
    steps: dict  # experiment -> training steps
    log_every: int
    seeds: int
    strides: tuple  # 0: no front-end
    digits: tuple  # overrides of the moving-digits comparison


PRESETS = {
    "ci": Preset(  # every path once, in seconds (dates_conv only in the cpu preset)
        steps={"sunspots_conv": 20},
        log_every=10,
        seeds=2,
        strides=(0, 2),
        digits=(
            "train.steps=4",
            "train.log_every=2",
            "checkpoint.every=2",
            "data.eval_size=16",
            "data.frame_size=16",
            "data.seq_len=4",
        ),
    ),
    "cpu": Preset(
        steps={"sunspots_conv": 1000, "dates_conv": 1500},
        log_every=50,
        seeds=2,
        strides=(0, 1, 2, 4),
        digits=(),
    ),
}
METRICS = {"sunspots_conv": ("eval/mse",), "dates_conv": ("eval/exact_match", "eval/accuracy")}


def _experiment(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stride_rows(name: str, preset: Preset, runs: pathlib.Path) -> list[dict]:
    from seqlab.experiments import apply_overrides, run

    rows = []
    for stride in preset.strides:
        point = "none" if stride == 0 else f"stride {stride}"
        overrides = [
            f"train.steps={preset.steps[name]}",
            f"train.log_every={preset.log_every}",
            f"checkpoint.every={preset.steps[name]}",
            f"train.num_seeds={preset.seeds}",
        ]
        overrides += ["model.frontend=none"] if stride == 0 else [f"model.conv.stride={stride}"]
        config = apply_overrides(_experiment(name).config(), overrides)
        folder = runs / name / point.replace(" ", "_")
        started = time.perf_counter()
        run(config, folder, progress=False, echo=lambda *_: None)
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        evaluations = [r for r in records if "eval/loss" in r]
        first, last = evaluations[0], evaluations[-1]
        per_step = (last["elapsed"] - first["elapsed"]) / max(last["step"] - first["step"], 1)
        case = f"{name} / {point}"
        for metric in METRICS[name]:
            values = np.asarray(last["seeds"][metric], float)
            rows.append(
                {
                    "case": case,
                    "metric": metric,
                    "value": float(values.mean()),
                    "n": len(values),
                    "spread": [float(values.min()), float(values.max())],
                }
            )
        rows.append(
            {"case": case, "metric": "train ms per step", "value": 1e3 * per_step, "unit": "ms"}
        )
        rows.append({"case": case, "metric": "run seconds", "value": seconds, "unit": "s"})
    return rows


def _digit_rows(preset: Preset, runs: pathlib.Path) -> list[dict]:
    table = _experiment("moving_digits").compare(runs / "moving_digits", preset.digits)
    rows = []
    for model, row in table.items():
        case = f"moving_digits / {model}"
        rows.append({"case": case, "metric": "eval mse", "value": row["mse"], "n": 1})
        for frame, value in enumerate(row["per_frame_mse"], start=1):
            rows.append({"case": case, "metric": f"mse at predicted frame {frame}", "value": value})
        if "parameters" in row:
            rows.append({"case": case, "metric": "parameters", "value": row["parameters"]})
            rows.append(
                {"case": case, "metric": "run seconds", "value": row["seconds"], "unit": "s"}
            )
    return rows


def main() -> None:
    parser = _common.preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    out = pathlib.Path(args.out)
    runs = out / "conv_experiments_runs"  # a name only this script writes
    if runs.exists():
        shutil.rmtree(runs)  # its own run folders from an earlier call
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in preset.steps:
        rows += _stride_rows(name, preset, runs)
    rows += _digit_rows(preset, runs)
    stem = f"conv_experiments_{args.preset}_{datetime.date.today().isoformat()}"
    record = {
        "preset": args.preset,
        "settings": dataclasses.asdict(preset),
        "rows": rows,
        "provenance": _common.provenance(),
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    print("| case | metric | value | seeds: min-max |")
    print("|---|---|---|---|")
    for row in rows:
        if row["metric"].startswith("mse at"):
            continue
        spread = "-" if not row.get("spread") else "{:.4g}-{:.4g}".format(*row["spread"])
        print(f"| {row['case']} | {row['metric']} | {row['value']:.4g} | {spread} |")
    print(f"wrote {out / stem}.json")


if __name__ == "__main__":
    sys.exit(main())
