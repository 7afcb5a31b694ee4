"""Reports of runs and sweeps: ``report.md``, and a sweep's ``results.csv`` and ``cv.csv``.

``seqlab report DIR`` writes ``DIR/report.md``: for a run, its config, final metrics
beside the task's baseline, learning curves (train and eval, so over- and under-fitting
show) and gradient-norm curves; for a sweep, the results table (one row per point, from
the points' summaries), the comparison plots and every point's learning curves.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib

import numpy as np

from seqlab.experiments import _plots, _rundir
from seqlab.experiments._claims import CLAIMS, read_holder
from seqlab.experiments._config import to_yaml


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_run(run_dir) -> pathlib.Path:
    """``report.md`` of a run directory (finished or not)."""
    run_dir = pathlib.Path(run_dir)
    config = _rundir.read_config(run_dir)
    summary = _rundir.read_summary(run_dir)
    records = _rundir.read_metrics(run_dir / _rundir.METRICS)
    plots = _plots.plot_run(run_dir)
    lines = [f"# Run report: {run_dir.name}", "", f"Task `{config.task}`."]
    if summary is None:
        last = records[-1]["step"] if records else 0
        lines += ["", f"Unfinished: metrics up to step {last} of {config.train.steps}."]
        final = records[-1] if records else {}
        baselines = {}
    else:
        lines += [
            "",
            f"Status **{summary['status']}** at step {summary['step']}; seeds {summary['seeds']}; "
            f"best {summary['main_metric']} {_fmt(summary['best'])} at step "
            f"{summary['best_step']}.",
        ]
        final, baselines = summary["final"], summary.get("baselines", {})
        lines += [f"\n**Warning:** {warning}" for warning in summary.get("warnings", [])]
    names = [k for k in final if k not in ("elapsed", "step")]
    if names:
        lines += ["", "| metric | final | baseline |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(final[k])} | {_fmt(baselines.get(k, ''))} |" for k in names]
    if summary and summary.get("samples"):
        lines += ["", "Samples:", ""] + [f"    {json.dumps(s)}" for s in summary["samples"]]
    for path in plots + sorted((run_dir / "plots").glob("gradnorms_step*.png")):
        lines += ["", f"![{path.stem}](plots/{path.name})"]
    analyses = sorted((run_dir / "analysis").glob("gradnorms_step*.json"))
    for path in analyses:
        result = _rundir.read_json(path, numbers=True)
        for direction in result.get("directions", ["forward"]):
            fits = ", ".join(
                f"layer {f['layer']}: {_fmt(f['factor'])}" for f in result[f"decay_fit_{direction}"]
            )
            unit = (
                "level of depth" if result.get("distance_is") == "depth from the root" else "step"
            )
            lines += [
                "",
                f"Gradient-norm decay per {unit} ({direction}) at step {result['step']}: {fits}.",
            ]
    lines += ["", "## Config", "", "```yaml", to_yaml(config).rstrip(), "```", ""]
    path = run_dir / "report.md"
    _rundir.write_text(path, "\n".join(lines))
    return path


def sweep_rows(out_dir: pathlib.Path) -> tuple[list[dict], dict]:
    """(one row per point: its overrides, status and final metrics; the sweep's plan)."""
    plan = _rundir.read_sweep(out_dir)
    rows = []
    for point in plan["points"]:
        point_dir = out_dir / "points" / point["name"]
        summary = _rundir.read_summary(point_dir)
        row = {"point": point["name"]}
        row.update(dict(o.split("=", 1) for o in point["overrides"]))
        if summary is None:
            holder = read_holder(out_dir / CLAIMS, point["name"])
            worker = None if holder is None else holder.get("worker", "?")
            row["status"] = "not finished" if holder is None else f"claimed by worker {worker}"
            rows.append(row)
            continue
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
    rows, plan = sweep_rows(out_dir)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    path = out_dir / "results.csv"
    _rundir.write_text(path, _csv_text(rows, columns))
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
        _rundir.write_text(out_dir / "cv.csv", _csv_text(cv_rows, list(cv_rows[0])))
    return path


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    """CSV text (written atomically: several workers of a sweep may write it at once)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown_table(rows: list[dict], columns: list[str]) -> list[str]:
    def fmt(value):
        return (
            f"{value:.4g}" if isinstance(value, float) else str(value if value is not None else "")
        )

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def report_sweep(out_dir) -> pathlib.Path:
    """``report.md`` of a sweep directory: the results table, cross-validation, plots."""
    out_dir = pathlib.Path(out_dir)
    rows, plan = sweep_rows(out_dir)
    plots = _plots.plot_sweep(out_dir, rows)
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


def report(directory) -> pathlib.Path:
    """Write ``report.md`` for a run or a sweep directory; returns its path
    (``seqlab.experiments.report`` also reports on studies: ``_tune_report.report``)."""
    directory = pathlib.Path(directory)
    if (directory / _rundir.SWEEP).exists():
        return report_sweep(directory)
    if not (directory / _rundir.CONFIG).exists():
        raise ValueError(
            f"{directory} is not a run (config.yaml), a sweep (sweep.json) or a study (tune.json)"
        )
    return report_run(directory)
