"""``seqlab demo``: RNN vs LSTM vs GRU, gradient flow and the adding problem.

1. A short adding-problem sweep over the three cells (T = 100, two seeds per cell trained
   as one program) through the experiments layer: run directories with
   checkpoints, metrics, plots and a results table (``sweep/``).
2. The gradient-norm decay of each cell: ‖∂L/∂h_t‖ against the distance from the last
   step, with the adding loss, at initialization and after training, and the fitted
   per-step decay factor (``plots/gradnorm_decay.png``).

On a 2-core CPU it takes about 2 minutes. In our runs the tanh RNN stays near the
baseline MSE (1/6) and, once trained, loses its gradient fastest (about 0.68 per step);
LSTM and GRU solve the task (MSE < 0.01) and, once trained, carry the gradient back over
the whole sequence (about 0.995 per step). At initialization the GRU's gradient decays
fastest of the three.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np

from seqlab.experiments import (
    Experiment,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    analyze_params,
    figure,
    load_run,
    save_figure,
    sweep,
    write_json,
    write_text,
)
from seqlab.experiments.tasks import ADDING_BASELINE_MSE, AddingData


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    cells: tuple[str, ...] = ("rnn", "lstm", "gru")
    hidden_size: int = 64
    seq_len: int = 100
    batch_size: int = 64
    steps: int = 1500
    learning_rate: float = 3e-3
    num_seeds: int = 2
    log_every: int = 100


def demo_experiment(config: DemoConfig) -> ExperimentConfig:
    return ExperimentConfig(
        task="adding",
        model=ModelConfig(cell=config.cells[0], hidden_size=config.hidden_size),
        data=AddingData(seq_len=config.seq_len, eval_size=1024),
        train=TrainConfig(
            steps=config.steps,
            batch_size=config.batch_size,
            lr=config.learning_rate,
            log_every=config.log_every,
            num_seeds=config.num_seeds,
        ),
    )


def _decay(result) -> tuple[float, np.ndarray]:
    """(per-step factor of layer 0, mean curve of layer 0 over seeds) of an analysis."""
    return result["decay_fit_forward"][0]["factor"], np.asarray(result["mean_norm"])[0, 0]


def run_demo(out_dir, config: DemoConfig | None = None, echo=print) -> dict:
    """Run the demo into ``out_dir`` (which must not hold a demo already); ``config``
    defaults to ``DemoConfig()``."""
    config = config or DemoConfig()
    out_dir = pathlib.Path(out_dir)
    if (out_dir / "summary.json").exists() or (out_dir / "sweep").exists():
        raise ValueError(f"{out_dir} already holds a demo; choose another --out")
    echo(
        f"adding problem, T={config.seq_len}, H={config.hidden_size}, {config.steps} steps of "
        f"batch {config.batch_size}, {config.num_seeds} seeds per cell; baseline MSE "
        f"{ADDING_BASELINE_MSE:.3f}, solved below 0.01"
    )
    base = demo_experiment(config)
    sweep(base, {"model.cell": list(config.cells)}, out_dir / "sweep", progress=None, echo=echo)
    rows, curves = [], {}
    for index, cell in enumerate(config.cells):
        point = out_dir / "sweep" / "points" / f"p{index:03d}_cell={cell}"
        run = load_run(point)
        summary = json.loads((point / "summary.json").read_text())
        trained = json.loads(
            (point / "analysis" / f"gradnorms_step{summary['step']}.json").read_text()
        )
        experiment = Experiment.from_config(run.config)
        initial = analyze_params(experiment, experiment.init_state()["params"], 0, point)
        factor_init, curve_init = _decay(initial)
        factor_trained, curve_trained = _decay(trained)
        curves[cell] = (curve_init, curve_trained)
        mse = (
            summary["final_per_seed"]["eval/mse"]
            if "final_per_seed" in summary
            else [summary["final"]["eval/mse"]]
        )
        rows.append(
            {
                "cell": cell,
                "eval_mse_mean": float(np.mean(mse)),
                "eval_mse_per_seed": mse,
                "solved": bool(np.mean(mse) < 0.01),
                "decay_factor_init": factor_init,
                "decay_factor_trained": factor_trained,
                "seconds": summary["final"]["elapsed"],
            }
        )
    plot = _plot(out_dir / "plots" / "gradnorm_decay.png", curves)
    table = [
        "| cell | eval MSE (mean of seeds) | / baseline | solved | gradient decay per step, "
        "init | after training | train time |",
        "|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['cell']} | {r['eval_mse_mean']:.4f} | "
        f"{r['eval_mse_mean'] / ADDING_BASELINE_MSE:.3f} "
        f"| {'yes' if r['solved'] else 'no'} | {r['decay_factor_init']:.4f} | "
        f"{r['decay_factor_trained']:.4f} | {r['seconds']:.0f} s |"
        for r in rows
    ]
    payload = {
        "task": "adding",
        "baseline_mse": ADDING_BASELINE_MSE,
        "config": dataclasses.asdict(config),
        "backend": jax.default_backend(),
        "results": rows,
    }
    write_json(out_dir / "summary.json", payload)
    write_text(out_dir / "summary.md", "\n".join(table) + "\n")
    echo("\n".join(table))
    echo(
        "decay factor: the fitted per-step multiplier of ||dL/dh_t|| going back from the "
        "last step (1 = no decay)"
    )
    for path in [plot, out_dir / "sweep" / "plots" / "learning_curves.png",
                 out_dir / "sweep" / "results.csv", out_dir / "summary.md"]:  # fmt: skip
        if path.exists():
            echo(f"wrote {path}")
    return payload


def _plot(path: pathlib.Path, curves: dict) -> pathlib.Path:
    """Mean ||dL/dh_t|| of each cell against the distance from the last step, at
    initialization and after training (``curves[cell] = (init, trained)``, each indexed
    by that distance, as ``analyze_params``'s ``mean_norm``)."""
    fig, axes = figure(1, 2, size=(10, 3.8), sharey=True)
    titles = ("at initialization", "after training")
    for ax, which, title in zip(axes[0], (0, 1), titles, strict=True):
        for cell, pair in curves.items():
            ax.plot(np.arange(len(pair[which])), pair[which], label=cell)
        ax.set_yscale("log")
        ax.set_xlabel("distance from the last step, T - 1 - t")
        ax.set_title(f"mean ||dL/dh_t||, {title}")
        ax.legend()
    return save_figure(fig, path)
