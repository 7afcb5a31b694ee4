"""Predictability and parallelization: Newton iterations against the largest Lyapunov exponent.

Gonzalez et al. 2025 ("Predictability enables parallelization of nonlinear state space
models") show that DEER/Newton converges in few iterations when the products of state
Jacobians contract (largest Lyapunov exponent λ < 0) and needs more, growing with T, when
they expand (λ > 0). This benchmark measures both quantities for the same models:

- iterations: ``seqlab.parallel.convergence`` (the solve behind
  ``seqlab.scan(implementation="parallel")``, exact Jacobians of each cell's structure:
  full for RNN / LSTM / GRU, diagonal for DiagGRU, 2x2 blocks for DiagLSTM; default
  tolerance, 64·eps of float32, relative residual), capped at the preset's
  ``max_iterations`` (a capped run is reported as not converged);
- λ: the per-step growth rate of ‖∂s_{T-1}/∂s_t‖₂ (``seqlab.analysis.jacobian_norms``,
  renormalized products in float32, logs kept), the least-squares slope of the log-norm
  against the distance T-1-t, per sequence, averaged over the batch; over seeds, the
  mean and a 95% Student-t interval.

Models, on adding-problem inputs (D = 2): tanh RNNs with W_hh = γ·Q (Q orthogonal, bias
zero) across γ; RNN, LSTM, GRU, DiagGRU and DiagLSTM at initialization and after a short
training run on the adding problem (sequential scan, Adam).

    python benchmarks/parallel_convergence.py --preset ci     # under a minute, CPU
    python benchmarks/parallel_convergence.py --preset full   # T up to 16,384

Writes ``parallel_convergence_<preset>_<date>/`` under ``--out``: results.json,
summary.md (the tables and what they show), iterations_vs_exponent.png and
iterations_vs_T.png.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import pathlib
import platform
import sys
import time

import _common  # (also puts the checkout on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqlab  # noqa: E402
from seqlab.experiments.tasks import adding_problem  # noqa: E402
from seqlab.layers import RNNLayer, dense_apply, dense_init  # noqa: E402
from seqlab.parallel import Parallel  # noqa: E402

_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)


@dataclasses.dataclass(frozen=True)
class Preset:
    gammas: tuple[float, ...]
    cells: tuple[str, ...]
    lengths: tuple[int, ...]
    hidden_size: int
    batch_size: int
    seeds: int
    lyapunov_length: int
    train_len: int
    train_steps: int
    max_iterations: int


PRESETS = {
    "ci": Preset(
        (0.5, 1.5, 3.0),
        ("rnn", "gru", "diag_gru", "diag_lstm"),
        (256, 1024),
        8,
        2,
        2,
        256,
        30,
        40,
        60,
    ),
    # T up to 16,384: the dense cells' full Jacobians at T = 65,536 (and the capped
    # iterations of the expanding cases) would take hours on the 2-core CPU.
    "full": Preset(
        (0.5, 0.9, 1.0, 1.1, 1.5, 2.0, 3.0),
        ("rnn", "lstm", "gru", "diag_gru", "diag_lstm"),
        (256, 1024, 4096, 16384),
        16,
        4,
        3,
        1024,
        100,
        1000,
        100,
    ),
}


def gamma_model(gamma: float, hidden: int, key):
    cell = seqlab.cells.RNN(hidden)
    layer = RNNLayer(cell)
    params = layer.init(key, 2)
    q = jax.nn.initializers.orthogonal()(jax.random.fold_in(key, 1), (hidden, hidden))
    params = ({"forward": dict(params[0]["forward"], w_hh=gamma * q)},)
    return layer, params


def train(layer, params, preset: Preset, key):
    """A short adding-problem run (sequential scan) with a dense head on the last output."""
    head = dense_init(jax.random.fold_in(key, 1), layer.cell.hidden_size, 1)
    state = {"layer": params, "head": head}
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))

    def loss(state, inputs, targets):
        outputs, _ = layer.apply(state["layer"], inputs)
        prediction = dense_apply(state["head"], outputs[:, -1])[:, 0]
        return jnp.mean((prediction - targets) ** 2)

    @jax.jit
    def step(state, opt_state, step_key):
        inputs, targets = adding_problem(step_key, 32, preset.train_len)
        value, grads = jax.value_and_grad(loss)(state, inputs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, value

    opt_state = optimizer.init(state)
    value = math.nan
    for index in range(preset.train_steps):
        state, opt_state, value = step(state, opt_state, jax.random.fold_in(key, 100 + index))
    return state["layer"], float(value)


def lyapunov(layer, params, preset: Preset, key) -> float:
    """Mean over the batch of the slope of ln‖∂s_{T-1}/∂s_t‖₂ against T-1-t."""
    inputs, _ = adding_problem(key, preset.batch_size, preset.lyapunov_length)
    log_norms = seqlab.analysis.jacobian_norms(layer, params, inputs, log=True)  # (B, T)
    distances = np.arange(preset.lyapunov_length - 1, -1, -1, dtype=np.float64)
    slopes = [np.polyfit(distances, row, 1)[0] for row in log_norms]
    return float(np.mean(slopes))


def iterations(layer, params, length: int, preset: Preset, key) -> tuple[int, bool]:
    inputs, _ = adding_problem(key, preset.batch_size, length)
    options = Parallel(max_iterations=preset.max_iterations)
    record = seqlab.parallel.convergence(layer.cell, params[0]["forward"], inputs, options=options)
    return record.iterations, record.converged


def interval(values):
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = (
        _T_975[min(len(values) - 1, len(_T_975)) - 1] * values.std(ddof=1) / math.sqrt(len(values))
    )
    return mean, float(mean - half), float(mean + half)


def cases(preset: Preset):
    """(label, family, builder(seed_key) -> (layer, params, note))."""
    out = []
    for gamma in preset.gammas:
        out.append(
            (
                f"rnn γ={gamma}",
                "gamma",
                lambda k, g=gamma: (*gamma_model(g, preset.hidden_size, k), ""),
            )
        )
    for name in preset.cells:
        for phase in ("init", "trained"):

            def build(k, name=name, phase=phase):
                layer = RNNLayer(seqlab.cells.make(name, hidden_size=preset.hidden_size))
                params = layer.init(k, 2)
                if phase == "init":
                    return layer, params, ""
                params, final = train(layer, params, preset, k)
                return layer, params, f"train MSE {final:.3f}"

            out.append((f"{name} {phase}", phase, build))
    return out


def run(preset: Preset) -> list[dict]:
    rows = []
    for index, (label, family, build) in enumerate(cases(preset)):
        start = time.perf_counter()
        exponents, counts, notes = [], {length: [] for length in preset.lengths}, []
        converged = {length: [] for length in preset.lengths}
        for seed in range(preset.seeds):
            key = jax.random.fold_in(jax.random.PRNGKey(index), seed)
            layer, params, note = build(key)
            notes.append(note)
            exponents.append(lyapunov(layer, params, preset, jax.random.fold_in(key, 2)))
            for length in preset.lengths:
                count, ok = iterations(layer, params, length, preset, jax.random.fold_in(key, 3))
                counts[length].append(count)
                converged[length].append(ok)
        mean, low, high = interval(exponents)
        rows.append(
            {
                "case": label,
                "family": family,
                "exponent": mean,
                "exponent_low": low,
                "exponent_high": high,
                "exponents": exponents,
                "iterations": {str(k): v for k, v in counts.items()},
                "converged": {str(k): v for k, v in converged.items()},
                "notes": [n for n in notes if n],
            }
        )
        cells = " ".join(
            f"T={k}: {min(v)}-{max(v)}" + ("" if all(converged[k]) else " (cap)")
            for k, v in counts.items()
        )
        print(
            f"  {label}: λ = {mean:+.4f} [{low:+.4f}, {high:+.4f}]; {cells} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return rows


def summary(rows, preset: Preset, meta: dict) -> str:
    lengths = [str(k) for k in preset.lengths]
    lines = [
        f"# parallel_convergence, preset {meta['preset']}",
        "",
        f"{meta['machine']}; jax {meta['jax']}; {meta['date']}; {meta['seconds']:.0f} s. "
        f"H = {preset.hidden_size}, B = {preset.batch_size}, {preset.seeds} seeds, float32, "
        f"iteration cap {preset.max_iterations}; λ from T = {preset.lyapunov_length}.",
        "",
        "Newton iterations (min-max over seeds; 'cap' = not converged) and the largest "
        "Lyapunov exponent λ (mean [95% interval] over seeds):",
        "",
        "| case | λ | " + " | ".join(f"its T={k}" for k in lengths) + " |",
        "|---|---|" + "---|" * len(lengths),
    ]
    for row in rows:
        cells = []
        for k in lengths:
            values, ok = row["iterations"][k], row["converged"][k]
            text = f"{min(values)}-{max(values)}" if min(values) != max(values) else str(values[0])
            cells.append(text + ("" if all(ok) else " (cap)"))
        lines.append(
            f"| {row['case']} | {row['exponent']:+.4f} [{row['exponent_low']:+.4f}, "
            f"{row['exponent_high']:+.4f}] | " + " | ".join(cells) + " |"
        )
    negative = [r for r in rows if r["exponent_high"] < 0]
    positive = [r for r in rows if r["exponent_low"] > 0]

    def spread(row):
        first, last = row["iterations"][lengths[0]], row["iterations"][lengths[-1]]
        return max(last) - max(first), all(row["converged"][lengths[-1]])

    bounded = [r for r in negative if spread(r)[0] <= 2 and spread(r)[1]]
    growing = [r for r in positive if spread(r)[0] > 2 or not spread(r)[1]]
    lines += [
        "",
        "What the theory predicts, checked on these numbers:",
        "",
        f"- λ < 0 (interval below zero): {len(negative)} cases; iterations bounded in T "
        f"(at most 2 more at T = {lengths[-1]} than at T = {lengths[0]}, all converged): "
        f"{len(bounded)} of them"
        + (
            ""
            if len(bounded) == len(negative)
            else f" (not: {', '.join(r['case'] for r in negative if r not in bounded)})"
        )
        + ".",
        f"- λ > 0 (interval above zero): {len(positive)} cases; iterations growing with T or "
        f"not converging: {len(growing)} of them"
        + (
            ""
            if len(growing) == len(positive)
            else f" (not: {', '.join(r['case'] for r in positive if r not in growing)})"
        )
        + ".",
    ]
    notes = [f"{r['case']}: {', '.join(r['notes'])}" for r in rows if r["notes"]]
    if notes:
        lines += [
            "",
            "Training (final train MSE per seed, adding problem at T = "
            f"{preset.train_len}, {preset.train_steps} steps):",
            "",
        ]
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot(rows, preset: Preset, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    longest = str(preset.lengths[-1])
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        its = row["iterations"][longest]
        capped = not all(row["converged"][longest])
        axis.errorbar(
            row["exponent"],
            np.mean(its),
            xerr=[
                [row["exponent"] - row["exponent_low"]],
                [row["exponent_high"] - row["exponent"]],
            ],
            yerr=[[np.mean(its) - min(its)], [max(its) - np.mean(its)]],
            fmt="x" if capped else "o",
            label=row["case"],
        )
    axis.axvline(0.0, color="grey", linewidth=0.8)
    axis.set_xlabel("largest Lyapunov exponent λ (per step)")
    axis.set_ylabel(f"Newton iterations at T = {longest} (x: capped)")
    axis.set_yscale("log")
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(out / "iterations_vs_exponent.png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        means = [np.mean(row["iterations"][str(k)]) for k in preset.lengths]
        axis.plot(
            preset.lengths, means, marker="o", label=f"{row['case']} (λ={row['exponent']:+.3f})"
        )
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("sequence length T")
    axis.set_ylabel("Newton iterations (mean over seeds)")
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(out / "iterations_vs_T.png", dpi=120)
    plt.close(figure)


def main() -> int:
    parser = _common.preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    date = datetime.date.today().isoformat()
    out = pathlib.Path(args.out) / f"parallel_convergence_{args.preset}_{date}"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = run(preset)
    meta = {
        "preset": args.preset,
        "machine": f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})",
        "jax": jax.__version__,
        "date": date,
        "seconds": time.perf_counter() - start,
        "provenance": _common.provenance(),
    }
    (out / "results.json").write_text(
        json.dumps({**meta, "preset_values": dataclasses.asdict(preset), "rows": rows}, indent=2)
        + "\n"
    )
    text = summary(rows, preset, meta)
    (out / "summary.md").write_text(text + _common.provenance_markdown(meta["provenance"]))
    plot(rows, preset, out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
