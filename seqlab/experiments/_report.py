"""Plots and Markdown reports of runs and sweeps (matplotlib, when installed).

``seqlab report DIR`` writes ``DIR/report.md``: for a run, its config, final metrics
beside the task's baseline, learning curves (train and eval, so over- and under-fitting
show) and gradient-norm curves; for a sweep, the results table, the comparison plots and
every point's learning curves.
"""

from __future__ import annotations

import json
import pathlib

from seqlab.experiments import _rundir


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_run(run_dir) -> list[pathlib.Path]:
    """plots/learning_curves.png: train and eval loss, and the task's other eval metrics."""
    plt = _pyplot()
    run_dir = pathlib.Path(run_dir)
    records = _rundir.read_metrics(run_dir / _rundir.METRICS)
    if plt is None or not records:
        return []
    steps = [r["step"] for r in records]
    others = sorted({k for r in records for k in r if k.startswith("eval") and k != "eval/loss"})
    panels = 1 + len(others)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    ax = axes[0, 0]
    for name in ("train/loss", "eval/loss"):
        ax.plot(steps, [r.get(name) for r in records], label=name)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title("loss (train: mean over the steps since the last record)")
    ax.legend()
    for ax, name in zip(axes[0, 1:], others, strict=True):
        ax.plot(steps, [r.get(name) for r in records], label=name)
        ax.set_xlabel("step")
        ax.set_title(name)
    fig.tight_layout()
    (run_dir / "plots").mkdir(exist_ok=True)
    path = run_dir / "plots" / "learning_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def plot_gradnorms(run_dir, result: dict) -> pathlib.Path | None:
    plt = _pyplot()
    if plt is None:
        return None
    run_dir = pathlib.Path(run_dir)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    distances = result["distance_from_end"]
    for layer, per_direction in enumerate(result["mean_norm"]):
        for direction, curve in zip(result["directions"], per_direction, strict=True):
            ax.plot(distances, curve, label=f"layer {layer} {direction}")
    ax.set_yscale("log")
    ax.set_xlabel("distance from the last step, T - 1 - t")
    ax.set_ylabel("mean ||dL/dh_t||")
    ax.set_title(f"gradient norms at step {result['step']}")
    ax.legend()
    fig.tight_layout()
    (run_dir / "plots").mkdir(exist_ok=True)
    path = run_dir / "plots" / f"gradnorms_step{result['step']}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_run(run_dir) -> pathlib.Path:
    from seqlab.experiments._config import to_yaml
    from seqlab.experiments._run import read_config

    run_dir = pathlib.Path(run_dir)
    config = read_config(run_dir)
    summary_path = run_dir / _rundir.SUMMARY
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    records = _rundir.read_metrics(run_dir / _rundir.METRICS)
    plots = plot_run(run_dir)
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
        result = json.loads(path.read_text())
        fits = ", ".join(
            f"layer {f['layer']}: {_fmt(f['factor'])}" for f in result["decay_fit_forward"]
        )
        lines += ["", f"Gradient-norm decay per step at step {result['step']}: {fits}."]
    lines += ["", "## Config", "", "```yaml", to_yaml(config).rstrip(), "```", ""]
    path = run_dir / "report.md"
    _rundir.write_text(path, "\n".join(lines))
    return path


def report(directory) -> pathlib.Path:
    """Write ``report.md`` for a run or a sweep directory; returns its path."""
    directory = pathlib.Path(directory)
    if (directory / "sweep.json").exists():
        from seqlab.experiments._sweep import report_sweep

        return report_sweep(directory)
    if not (directory / _rundir.CONFIG).exists():
        raise ValueError(f"{directory} is neither a run (config.yaml) nor a sweep (sweep.json)")
    return report_run(directory)
