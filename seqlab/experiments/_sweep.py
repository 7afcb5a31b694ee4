"""Sweeps: the cartesian product of override values, each point a run directory.

``sweep(config, {"model.cell": ["rnn", "lstm"], "model.hidden_size": ["32", "64"]}, out)``
trains every combination (each point's ``train.num_seeds`` seeds as one program,
data-parallel over the local devices) into ``out/points/<name>/``, then writes
``results.csv`` (one row per point), ``cv.csv`` for k-fold sweeps (mean and spread over
folds), comparison plots and ``report.md``. Started again with the same arguments, a
sweep skips finished points and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import pathlib
import re

import numpy as np

from seqlab.experiments import _rundir
from seqlab.experiments._config import apply_overrides, structured, to_dict
from seqlab.experiments._run import resume, run

SWEEP = "sweep.json"
FINAL_STATUSES = ("finished", "stopped_early", "diverged")


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["model.cell=rnn,lstm", "train.lr=1e-3"]`` -> {key: [values]} (a single value
    is an override shared by every point)."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"a sweep axis must look like key=v1,v2,..., got {item!r}")
        if key in grid:
            raise ValueError(f"{key} is given twice")
        grid[key] = [v for v in values.split(",") if v != ""]
    return grid


def _slug(overrides: list[str]) -> str:
    text = "_".join(o.split(".")[-1] for o in overrides) or "base"
    return re.sub(r"[^A-Za-z0-9=._-]+", "-", text)[:80]


def expand(grid: dict[str, list[str]], kfold: int = 0) -> list[list[str]]:
    """The override lists of every point (k-fold adds data.num_folds and data.fold)."""
    if kfold:
        if kfold < 2:
            raise ValueError(f"--kfold must be >= 2, got {kfold}")
        if "data.fold" in grid or "data.num_folds" in grid:
            raise ValueError("--kfold sets data.fold and data.num_folds itself")
        grid = {**grid, "data.num_folds": [str(kfold)], "data.fold": [str(i) for i in range(kfold)]}
    keys = list(grid)
    return [
        [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def sweep(
    config, grid: dict[str, list[str]], out_dir, *, kfold: int = 0, progress=None, echo=print
):
    """Run every point of ``grid`` over ``config``; returns the path of results.csv."""
    out_dir = pathlib.Path(out_dir)
    config = structured(config)
    points = expand(grid, kfold)
    configs = [apply_overrides(config, overrides) for overrides in points]  # all checked first
    names = [f"p{i:03d}_{_slug(o)}" for i, o in enumerate(points)]
    plan = {
        "base": to_dict(config),
        "grid": grid,
        "kfold": kfold,
        "points": [{"name": n, "overrides": o} for n, o in zip(names, points, strict=True)],
    }
    sweep_file = out_dir / SWEEP
    if sweep_file.exists():
        saved = json.loads(sweep_file.read_text())
        if saved != json.loads(json.dumps(plan)):
            raise ValueError(
                f"{out_dir} holds a different sweep (other config, grid or folds); choose "
                "another --out"
            )
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} exists and is not a sweep; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    _rundir.write_json(sweep_file, plan)
    for index, (name, overrides, point_config) in enumerate(
        zip(names, points, configs, strict=True)
    ):
        point_dir = out_dir / "points" / name
        label = f"[{index + 1}/{len(points)}] {' '.join(overrides) or 'base'}"
        summary_path = point_dir / _rundir.SUMMARY
        if (
            summary_path.exists()
            and json.loads(summary_path.read_text())["status"] in FINAL_STATUSES
        ):
            echo(f"{label}: done, skipped")
            continue
        echo(label)
        if (point_dir / _rundir.CONFIG).exists():
            resume(point_dir, progress=progress, echo=echo)
        else:
            # run() refuses a non-empty folder without config.yaml: nothing is overwritten
            run(point_config, point_dir, progress=progress, echo=echo)
    results = write_results(out_dir)
    report_sweep(out_dir)
    echo(f"results: {results}")
    return results


def _rows(out_dir: pathlib.Path) -> tuple[list[dict], dict]:
    plan = json.loads((out_dir / SWEEP).read_text())
    rows = []
    for point in plan["points"]:
        point_dir = out_dir / "points" / point["name"]
        summary_path = point_dir / _rundir.SUMMARY
        row = {"point": point["name"]}
        row.update(dict(o.split("=", 1) for o in point["overrides"]))
        if not summary_path.exists():
            row["status"] = "not finished"
            rows.append(row)
            continue
        summary = json.loads(summary_path.read_text())
        row.update(status=summary["status"], step=summary["step"])
        for name, value in summary["final"].items():
            if name.startswith("eval"):
                row[name] = value
        per_seed = summary.get("final_per_seed", {})
        metric = summary["main_metric"]
        if metric in per_seed and len(per_seed[metric]) > 1:
            row[f"{metric} std"] = float(np.std(per_seed[metric], ddof=1))
        row["best_step"] = summary["best_step"]
        row["best"] = summary["best"]
        row["main_metric"] = metric
        for name, value in summary.get("baselines", {}).items():
            row[f"baseline {name}"] = value
        row["seconds"] = summary["final"].get("elapsed")
        rows.append(row)
    return rows, plan


def write_results(out_dir) -> pathlib.Path:
    """results.csv (and cv.csv for a k-fold sweep) from the points' summaries."""
    out_dir = pathlib.Path(out_dir)
    rows, plan = _rows(out_dir)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    path = out_dir / "results.csv"
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)
    if plan["kfold"]:
        groups = {}
        for row in rows:
            key = tuple(row.get(k) for k in plan["grid"])
            groups.setdefault(key, []).append(row)
        cv_rows = []
        for key, members in groups.items():
            metric = members[0].get("main_metric")
            values = [m[metric] for m in members if metric and metric in m]
            cv_row = dict(zip(plan["grid"], key, strict=True))
            cv_row.update(
                folds=len(values),
                metric=metric,
                mean=float(np.mean(values)) if values else math.nan,
                std=float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
            )
            cv_rows.append(cv_row)
        with open(out_dir / "cv.csv", "w", newline="") as file:
            writer = csv.DictWriter(file, list(cv_rows[0]))
            writer.writeheader()
            writer.writerows(cv_rows)
    return path


def plot_sweep(out_dir) -> list[pathlib.Path]:
    from seqlab.experiments._report import _pyplot

    plt = _pyplot()
    out_dir = pathlib.Path(out_dir)
    rows, plan = _rows(out_dir)
    done = [r for r in rows if r.get("main_metric")]
    if plt is None or not done:
        return []
    metric = done[0]["main_metric"]
    (out_dir / "plots").mkdir(exist_ok=True)
    labels = [r["point"].split("_", 1)[1] for r in done]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(done) + 2), 3.8))
    values = [r.get(metric, math.nan) for r in done]
    errors = [r.get(f"{metric} std", 0.0) for r in done]
    ax.bar(range(len(done)), values, yerr=errors, capsize=3)
    for name, value in done[0].items():
        if name == f"baseline {metric}":
            ax.axhline(value, color="k", linestyle="--", label="baseline")
            ax.legend()
    ax.set_xticks(range(len(done)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"final {metric} (mean over seeds)")
    fig.tight_layout()
    bars = out_dir / "plots" / "final_metric.png"
    fig.savefig(bars, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row, label in zip(done, labels, strict=True):
        records = _rundir.read_metrics(out_dir / "points" / row["point"] / _rundir.METRICS)
        ax.plot([r["step"] for r in records], [r.get(metric) for r in records], label=label)
    if metric.endswith(("loss", "mse")):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    curves = out_dir / "plots" / "learning_curves.png"
    fig.savefig(curves, dpi=100)
    plt.close(fig)
    return [bars, curves]


def _markdown_table(rows: list[dict], columns: list[str]) -> list[str]:
    def fmt(value):
        return (
            f"{value:.4g}" if isinstance(value, float) else str(value if value is not None else "")
        )

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def report_sweep(out_dir) -> pathlib.Path:
    out_dir = pathlib.Path(out_dir)
    rows, plan = _rows(out_dir)
    plots = plot_sweep(out_dir)
    columns = list(dict.fromkeys(k for row in rows for k in row if k not in ("main_metric",)))
    lines = [
        f"# Sweep report: {out_dir.name}",
        "",
        f"Task `{plan['base']['task']}`, {len(rows)} points; axes: "
        + ", ".join(f"`{k}` in {v}" for k, v in plan["grid"].items())
        + (f"; {plan['kfold']}-fold cross-validation" if plan["kfold"] else "")
        + ".",
        "",
        *_markdown_table(rows, columns),
    ]
    if (out_dir / "cv.csv").exists():
        with open(out_dir / "cv.csv") as file:
            cv_rows = list(csv.DictReader(file))
        lines += [
            "",
            "Cross-validation (over folds):",
            "",
            *_markdown_table(cv_rows, list(cv_rows[0])),
        ]
    for path in plots:
        lines += ["", f"![{path.stem}](plots/{path.name})"]
    lines += ["", "Each point's own report: `seqlab report points/<point>`.", ""]
    path = out_dir / "report.md"
    _rundir.write_text(path, "\n".join(lines))
    return path
