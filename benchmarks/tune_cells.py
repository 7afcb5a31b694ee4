"""``experiments/tune_cells.yaml`` run and recorded: RNN, LSTM, GRU and DiagGRU on the
adding problem at T = 200, each at its best under one budget of trials.

Runs ``seqlab.experiments.tune`` (TPE, median pruning within each cell after
``prune_warmup`` steps) over the shipped space, then each cell's best trial again on fresh
seeds (``seqlab.experiments.confirm``), and writes ``tune_cells_<preset>_<backend>_<date>/``:
``results.json`` (the best value per cell and its confirmation with a 95% interval over
seeds, trial counts by state, the study's wall time, what pruning saved against running
every trial to the end, and the run's provenance) beside the study's ``report.md``,
``trials.csv`` and plots. The ``ci`` preset is the same space at a toy size (T = 20,
60 steps, 4 trials) to keep the command working.

    python benchmarks/tune_cells.py --preset full   # the README's result (~15 min, 2 cores)
    python benchmarks/tune_cells.py --preset ci     # toy size (~30 s)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import shutil
import tempfile
import time

import jax
from _common import preset_parser, provenance  # (also puts the checkout on sys.path)

from seqlab import experiments  # noqa: E402
from seqlab.experiments import _tune  # noqa: E402
from seqlab.experiments._space import override  # noqa: E402
from seqlab.experiments._tune_report import pruning_savings  # noqa: E402

SPACE = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "tune_cells.yaml"


@dataclasses.dataclass(frozen=True)
class Preset:
    trials: int
    prune_warmup: int
    shrink: dict  # fixed overrides replaced for a toy size (none for the shipped study)
    confirm_seeds: int  # the best trial of each cell again on this many fresh seeds


PRESETS = {
    "ci": Preset(
        trials=4,
        prune_warmup=20,
        shrink={
            "data.seq_len": 20,
            "train.steps": 60,
            "train.log_every": 20,
            "checkpoint.every": 20,
            "data.eval_size": 64,
            "train.batch_size": 16,
        },
        confirm_seeds=2,
    ),
    "full": Preset(trials=24, prune_warmup=300, shrink={}, confirm_seeds=4),
}


def _space(preset: Preset):
    space = experiments.load_space(SPACE)
    fixed = dict(item.split("=", 1) for item in space.fixed)
    fixed.update({k: str(v) for k, v in preset.shrink.items()})
    extra = [override(k, v) for k, v in fixed.items()]
    return dataclasses.replace(space, fixed=tuple(extra))


def main(argv=None) -> int:
    parser = preset_parser(__doc__.splitlines()[0], PRESETS)
    parser.add_argument(
        "--study-dir", help="keep the study here (default: a temporary folder, deleted)"
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    record = provenance()
    stem = f"tune_cells_{args.preset}_{jax.devices()[0].platform}_{datetime.date.today()}"
    out = pathlib.Path(args.out) / stem
    with tempfile.TemporaryDirectory() as scratch:
        study_dir = pathlib.Path(args.study_dir or pathlib.Path(scratch) / "tune_cells")
        start = time.perf_counter()
        summary = experiments.tune(
            experiments.find("adding"),
            _space(preset),
            study_dir,
            trials=preset.trials,
            prune_warmup=preset.prune_warmup,
            progress=False,
        )
        wall = time.perf_counter() - start
        confirmed = {}
        for cell, best in sorted(summary.get("best_per_cell", {}).items()):
            begin = time.perf_counter()
            result = _tune.confirm(study_dir, trial=best["number"], seeds=preset.confirm_seeds)
            confirmed[cell] = result | {"seconds": time.perf_counter() - begin}
        experiments.report(study_dir)  # with the confirmations
        study, _, _ = _tune.load_existing(study_dir)
        savings = pruning_savings(study_dir, study)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for name in ("report.md", "trials.csv"):
            shutil.copy(study_dir / name, out / name)
        shutil.copytree(study_dir / "plots", out / "plots")
    rows = [{"case": "study", "metric": "wall time", "value": wall, "unit": "s", "n": 1}]
    for state, count in sorted(summary["trials"].items()):
        rows.append({"case": "study", "metric": f"trials {state}", "value": count, "n": 1})
    rows += [
        {"case": "pruning", "metric": k.replace("_", " "), "value": v, "n": 1}
        for k, v in savings.items()
    ]
    for cell, best in sorted(summary.get("best_per_cell", {}).items()):
        rows.append(
            {
                "case": cell,
                "metric": f"best {summary['metric']}",
                "value": best["value"],
                "n": 1,
                "trial": best["number"],
                "overrides": [o for o in best["overrides"] if o.startswith(SEARCHED)],
            }
        )
    for cell, confirmation in confirmed.items():
        low, high = confirmation["ci95"]
        rows.append(
            {
                "case": cell,
                "metric": f"confirmed {summary['metric']}",
                "value": confirmation["mean"],
                "n": len(confirmation["values"]),
                "spread": [low, high],
                "trial": confirmation["trial"],
                "seeds": confirmation["seeds"],
                "values": confirmation["values"],
            }
        )
    result = {
        "name": "tune_cells",
        "preset": args.preset,
        "space": str(SPACE.relative_to(SPACE.parents[1])),
        "trials": preset.trials,
        "prune_warmup": preset.prune_warmup,
        "shrink": preset.shrink,
        "confirm_seeds": preset.confirm_seeds,
        "study_wall_seconds": wall,
        "summary": summary,
        "rows": rows,
        "provenance": record,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"study wall {wall:.0f} s; trials {summary['trials']}; pruning {savings}")
    for cell, best in sorted(summary.get("best_per_cell", {}).items()):
        line = f"  {cell}: best {summary['metric']} {best['value']:.4g} (trial {best['number']})"
        if cell in confirmed:
            low, high = confirmed[cell]["ci95"]
            line += f"; on {preset.confirm_seeds} fresh seeds {confirmed[cell]['mean']:.4g}"
            line += f" (95% interval {low:.3g} .. {high:.3g})"
        print(line)
    print(f"wrote {out}")
    return 0


SEARCHED = ("model.", "train.lr", "train.clip_norm")

if __name__ == "__main__":
    raise SystemExit(main())
