"""Every plot of runs, sweeps and the demo (matplotlib's object API, no pyplot).

Figures are made with ``matplotlib.figure.Figure`` and saved as PNG through its Agg
canvas, so importing seqlab never switches the backend of a notebook or a GUI session.
``figure`` and ``save_figure`` are the public helpers (``seqlab.experiments.figure``; the
demo draws with them); the rest draws the standard plots of a run (learning curves,
gradient norms) and of a sweep (final metric, curves).
"""

from __future__ import annotations

import math
import os
import pathlib
import uuid

from matplotlib.figure import Figure

from seqlab.experiments import _rundir


def figure(rows: int = 1, cols: int = 1, *, size: tuple[float, float], **subplots):
    """A new figure and its axes, a (rows, cols) array (``Figure.subplots(squeeze=False)``
    with ``subplots`` passed on, e.g. ``sharey=True``)."""
    fig = Figure(figsize=size)
    return fig, fig.subplots(rows, cols, squeeze=False, **subplots)


def save_figure(fig: Figure, path: str | pathlib.Path, *, dpi: int = 100) -> pathlib.Path:
    """Lay out ``fig`` and write it as PNG to ``path`` (its folder is created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.png")
    try:  # atomically: workers of a sweep may draw the same comparison plot at once
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _log_scale(ax, values) -> None:
    """Log-scale the y axis when some value is positive and finite (a diverged run's NaN
    or a curve of zeros would leave matplotlib nothing to scale, with a warning)."""
    if any(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values):
        ax.set_yscale("log")


def plot_run(run_dir) -> list[pathlib.Path]:
    """plots/learning_curves.png: train and eval loss, and the task's other eval metrics."""
    run_dir = pathlib.Path(run_dir)
    records = _rundir.read_metrics(run_dir / _rundir.METRICS)
    if not records:
        return []
    steps = [r["step"] for r in records]
    others = sorted({k for r in records for k in r if k.startswith("eval") and k != "eval/loss"})
    panels = 1 + len(others)
    fig, axes = figure(1, panels, size=(5 * panels, 3.6))
    ax = axes[0, 0]
    losses = []
    for name in ("train/loss", "eval/loss"):
        values = [r.get(name, math.nan) for r in records]
        ax.plot(steps, values, label=name)
        losses += values
    ax.set_xlabel("step")
    _log_scale(ax, losses)
    ax.set_title("loss (train: mean over the steps since the last record)")
    ax.legend()
    for ax, name in zip(axes[0, 1:], others, strict=True):
        ax.plot(steps, [r.get(name) for r in records], label=name)
        ax.set_xlabel("step")
        ax.set_title(name)
    return [save_figure(fig, run_dir / "plots" / "learning_curves.png")]


def plot_gradnorms(run_dir, result: dict) -> pathlib.Path:
    """plots/gradnorms_step<N>.png of an analysis result (``analyze_params``)."""
    fig, axes = figure(size=(6, 3.6))
    ax = axes[0, 0]
    distances = result["distance"]
    norms = []
    for layer, per_direction in enumerate(result["mean_norm"]):
        for direction, curve in zip(result["directions"], per_direction, strict=True):
            ax.plot(distances, curve, label=f"layer {layer} {direction}")
            norms += list(curve)
    _log_scale(ax, norms)
    ax.set_xlabel("distance d from where the loss enters each sequence")
    ax.set_ylabel("mean ||dL/dh_t||")
    ax.set_title(f"gradient norms at step {result['step']}")
    ax.legend()
    path = pathlib.Path(run_dir) / "plots" / f"gradnorms_step{result['step']}.png"
    return save_figure(fig, path)


def plot_sweep(out_dir, rows: list[dict]) -> list[pathlib.Path]:
    """plots/final_metric.png (bars with the spread over seeds, the baseline dashed) and
    plots/learning_curves.png (the main metric of every finished point)."""
    out_dir = pathlib.Path(out_dir)
    done = [r for r in rows if r.get("main_metric")]
    if not done:
        return []
    metric = done[0]["main_metric"]
    labels = [r["point"].split("_", 1)[1] for r in done]
    fig, axes = figure(size=(max(5, 0.9 * len(done) + 2), 3.8))
    ax = axes[0, 0]
    values = [r.get(metric, math.nan) for r in done]
    errors = [r.get(f"{metric} std", 0.0) for r in done]
    ax.bar(range(len(done)), values, yerr=errors, capsize=3)
    for name, value in done[0].items():
        if name == f"baseline {metric}":
            ax.axhline(value, color="k", linestyle="--", label="baseline")
            ax.legend()
    ax.set_xticks(range(len(done)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"final {metric} (mean over seeds)")
    bars = save_figure(fig, out_dir / "plots" / "final_metric.png")
    fig, axes = figure(size=(6.5, 4))
    ax = axes[0, 0]
    curves = []
    for row, label in zip(done, labels, strict=True):
        records = _rundir.read_metrics(out_dir / "points" / row["point"] / _rundir.METRICS)
        values = [r.get(metric, math.nan) for r in records]
        ax.plot([r["step"] for r in records], values, label=label)
        curves += values
    if metric.endswith(("loss", "mse")):
        _log_scale(ax, curves)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return [bars, save_figure(fig, out_dir / "plots" / "learning_curves.png")]
