"""How gradient norms decay with distance from the loss, for RNN, LSTM, GRU, MGU, MinGRU,
MinLSTM, DiagGRU and DiagLSTM.

For every cell, sequence length T and seed (seeds vmapped into one program), the adding
problem's loss at the last step is differentiated with respect to every hidden state:
‖∂L/∂h_t‖ from ``seqlab.analysis.hidden_grad_norms``, in float64 so that norms far below
float32's range are resolved. This is done at initialization and after a short training
run on the adding problem. A linear RNN with W_hh = γQ (Q orthogonal, zero bias) runs
beside them as the calibration row: its decay rate must be ln γ exactly.

The decay rate of a curve is the least-squares slope of ln‖∂L/∂h_t‖ against the distance
T-1-t (distances ≥ 1; at distance 0 the loss also reaches h through the output head),
per seed, with a 95% Student-t interval over seeds.

    python benchmarks/gradnorm_decay.py --preset ci     # under 3 minutes on a 2-core CPU
    python benchmarks/gradnorm_decay.py --preset full   # see benchmarks/results/ for its time

Writes to ``--out`` (default benchmarks/results/gradnorm_decay_<preset>_<date>/):
curves.csv (every curve, long format), curves.json (the same curves as
``{"records": [...], "provenance": {...}}``), decay_rates.csv, diagnostics.csv
(σ_max of each W_hh block and gate saturation, per seed, at init and after training),
summary.md, and the
plots decay_init.png, decay_trained.png (ln-norm against distance at the longest T, one
line per cell) and rate_vs_T.png.
"""

from __future__ import annotations

import argparse
import csv
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
from seqlab.analysis import (  # noqa: E402
    first_non_finite,
    fit_decay_rate,
    gate_saturation,
    hidden_grad_norms,
    recurrent_spectrum,
)
from seqlab.experiments.tasks import adding_problem  # noqa: E402
from seqlab.layers import RNNLayer, dense_apply, dense_init  # noqa: E402

CALIBRATION_GAMMA = 0.9


@dataclasses.dataclass(frozen=True)
class Preset:
    cells: tuple[str, ...]
    hidden_size: int
    lengths: tuple[int, ...]
    seeds: int
    batch_size: int
    train_len: int
    train_steps: int
    learning_rate: float = 3e-3


PRESETS = {
    "ci": Preset(
        ("rnn", "lstm", "gru", "mgu", "mingru", "minlstm", "diag_gru", "diag_lstm"),
        32,
        (16, 64, 256),
        3,
        8,
        50,
        300,
    ),
    "full": Preset(
        ("rnn", "lstm", "gru", "mgu", "mingru", "minlstm", "diag_gru", "diag_lstm"),
        64,
        (16, 32, 64, 128, 256, 512, 1024),
        5,
        16,
        100,
        2000,
    ),
}


def make_model(cell_name: str, hidden_size: int):
    """An adding-problem regressor: RNNLayer + dense head on the last output."""
    if cell_name == "linear":
        cell = seqlab.cells.RNN(hidden_size, activation="identity", use_bias=False)
    else:
        cell = seqlab.cells.make(cell_name, hidden_size=hidden_size)
    return RNNLayer(cell)


def init_params(layer: RNNLayer, cell_name: str, key, hidden_size: int):
    k_layer, k_head = jax.random.split(key)
    params = layer.init(k_layer, 2)
    if cell_name == "linear":
        q = jax.nn.initializers.orthogonal()(k_layer, (hidden_size, hidden_size), jnp.float32)
        params = ({"forward": dict(params[0]["forward"], w_hh=CALIBRATION_GAMMA * q)},)
    return {"layer": params, "head": dense_init(k_head, hidden_size, 1)}


def last_step_loss(head, targets):
    def loss_fn(outputs):
        prediction = dense_apply(head, outputs[:, -1])[:, 0]
        return jnp.mean((prediction - targets) ** 2)

    return loss_fn


def train(layer, params, preset: Preset, key):
    """Short adding-problem training, all seeds at once (params carry a leading seed axis)."""
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(preset.learning_rate))

    def loss(params, inputs, targets):
        outputs, _ = layer.apply(params["layer"], inputs)
        return last_step_loss(params["head"], targets)(outputs)

    def step(params, opt_state, step_key):
        inputs, targets = adding_problem(step_key, preset.batch_size * 4, preset.train_len)
        value, grads = jax.value_and_grad(loss)(params, inputs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    seeds_step = jax.jit(jax.vmap(step, in_axes=(0, 0, 0)))
    opt_state = jax.vmap(optimizer.init)(params)
    num_seeds = jax.tree_util.tree_leaves(params)[0].shape[0]
    for index in range(preset.train_steps):
        keys = jax.random.split(jax.random.fold_in(key, index), num_seeds)
        params, opt_state, values = seeds_step(params, opt_state, keys)
    return params, np.asarray(values)


def curves_for(layer, params, length: int, preset: Preset, key) -> np.ndarray:
    """Mean over the batch of ln‖∂L/∂h_t‖, per seed: (seeds, T), float64."""
    inputs, targets = adding_problem(key, preset.batch_size, length)
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        inputs64 = jnp.asarray(inputs, jnp.float64)
        targets64 = jnp.asarray(targets, jnp.float64)

        def per_seed(params):
            return hidden_grad_norms(
                layer,
                params["layer"],
                inputs64,
                last_step_loss(params["head"], targets64),
                numpy=False,
            )

        norms = np.asarray(jax.jit(jax.vmap(per_seed))(params64), np.float64)  # (S, 1, B, T)
    for seed_norms in norms:
        problem = first_non_finite(seed_norms)
        if problem is not None:
            print(f"    T={length}: {problem}", flush=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mean(np.log(norms[:, 0]), axis=1)  # geometric mean over the batch


def diagnose(layer, cell_name, phase, params, preset: Preset, key) -> list[dict]:
    """Per seed: σ_max of each recurrent block, and gate saturation on adding-problem data."""
    inputs, _ = adding_problem(key, preset.batch_size, preset.train_len)
    cell = layer.cell
    rows = []
    for seed in range(preset.seeds):
        seed_params = jax.tree_util.tree_map(lambda a, s=seed: a[s], params["layer"])[0]["forward"]
        row = {"cell": cell_name, "phase": phase, "seed": seed}
        if cell_name not in ("mingru", "minlstm"):  # no recurrent weights to take σ of
            spectrum = recurrent_spectrum(cell, seed_params)
            row.update({f"sigma_max/{block}": value for block, value in spectrum.largest.items()})
        if callable(getattr(cell, "gate_values", None)):
            for gate, stats in gate_saturation(cell, seed_params, inputs).items():
                row[f"saturated/{gate}"] = stats["low"] + stats["high"]
                row[f"mean/{gate}"] = stats["mean"]
        rows.append(row)
    return rows


def run(preset: Preset, out: pathlib.Path) -> dict:
    cells = ("linear", *preset.cells)
    key = jax.random.key(0)
    records, rates, diagnostics = [], [], []
    timings = {}
    for index, cell_name in enumerate(cells):
        start = time.perf_counter()
        layer = make_model(cell_name, preset.hidden_size)
        seed_keys = jax.random.split(jax.random.fold_in(key, index), preset.seeds)
        params = jax.vmap(
            lambda k, layer=layer, name=cell_name: init_params(layer, name, k, preset.hidden_size)
        )(seed_keys)
        phases = {"init": params}
        if cell_name != "linear":
            trained, final_losses = train(layer, params, preset, jax.random.fold_in(key, 7))
            phases["trained"] = trained
            print(
                f"  {cell_name}: trained {preset.train_steps} steps at T={preset.train_len}, "
                f"final train MSE per seed {np.round(final_losses, 4).tolist()}",
                flush=True,
            )
        for phase, phase_params in phases.items():
            diagnostics.extend(
                diagnose(layer, cell_name, phase, phase_params, preset, jax.random.fold_in(key, 3))
            )
            for length in preset.lengths:
                log_norms = curves_for(
                    layer, phase_params, length, preset, jax.random.fold_in(key, length)
                )
                distances = np.arange(length - 1, -1, -1)
                for seed, curve in enumerate(log_norms):
                    records.append(
                        dict(
                            cell=cell_name,
                            phase=phase,
                            T=length,
                            seed=seed,
                            distance=distances.tolist(),
                            log_norm=curve.tolist(),
                        )
                    )
                keep = distances >= 1
                finite = np.all(np.isfinite(log_norms[:, keep]))
                fit = (
                    fit_decay_rate(np.exp(log_norms[:, keep]), distances[keep]) if finite else None
                )
                rates.append(
                    dict(
                        cell=cell_name,
                        phase=phase,
                        T=length,
                        rate=fit.rate if fit else math.nan,
                        low=fit.interval[0] if fit and fit.interval else math.nan,
                        high=fit.interval[1] if fit and fit.interval else math.nan,
                        factor=fit.factor if fit else math.nan,
                        note="" if finite else "non-finite norms",
                    )
                )
        timings[cell_name] = time.perf_counter() - start
        print(f"  {cell_name}: {timings[cell_name]:.0f} s", flush=True)
    return {"records": records, "rates": rates, "diagnostics": diagnostics, "timings": timings}


def write_outputs(result: dict, preset: Preset, out: pathlib.Path, header: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    recorded = _common.provenance()
    (out / "curves.json").write_text(
        json.dumps({"records": result["records"], "provenance": recorded})
    )
    with open(out / "curves.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "phase", "T", "seed", "distance", "grad_norm"])
        for r in result["records"]:
            for distance, log_norm in zip(r["distance"], r["log_norm"], strict=True):
                writer.writerow(
                    [
                        r["cell"],
                        r["phase"],
                        r["T"],
                        r["seed"],
                        distance,
                        repr(math.exp(log_norm)) if math.isfinite(log_norm) else "nan",
                    ]
                )
    columns = list(dict.fromkeys(k for row in result["diagnostics"] for k in row))
    with open(out / "diagnostics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result["diagnostics"])
    with open(out / "decay_rates.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result["rates"][0]))
        writer.writeheader()
        writer.writerows(result["rates"])

    longest = max(preset.lengths)
    lines = [
        header,
        f"Decay rate = mean slope of ln‖∂L/∂h_t‖ per step of distance (95% interval over "
        f"{preset.seeds} seeds); factor = exp(rate). Calibration: the linear RNN with "
        f"W_hh = {CALIBRATION_GAMMA}·Q must give ln {CALIBRATION_GAMMA} = "
        f"{math.log(CALIBRATION_GAMMA):.5f}.",
        "",
        "| cell | phase | "
        + " | ".join(f"T={t}" for t in preset.lengths)
        + f" | factor at T={longest} |",
        "|---|---|" + "---|" * (len(preset.lengths) + 1),
    ]
    cells = list(dict.fromkeys(r["cell"] for r in result["rates"]))
    for cell in cells:
        for phase in ("init", "trained"):
            row = [r for r in result["rates"] if r["cell"] == cell and r["phase"] == phase]
            if not row:
                continue
            entries = [
                f"{r['rate']:.4f} [{r['low']:.4f}, {r['high']:.4f}]"
                if math.isfinite(r["rate"])
                else r["note"]
                for r in row
            ]
            lines.append(
                f"| {cell} | {phase} | " + " | ".join(entries) + f" | {row[-1]['factor']:.4f} |"
            )
    lines += [
        "",
        "Recurrent matrix and gates (mean over seeds; saturated = share of sigmoid-gate "
        f"activations below 0.05 or above 0.95 on adding-problem inputs, T={preset.train_len}):",
        "",
        "| cell | phase | largest σ_max over W_hh blocks | saturated gates |",
        "|---|---|---|---|",
    ]
    for cell in cells:
        for phase in ("init", "trained"):
            rows = [d for d in result["diagnostics"] if d["cell"] == cell and d["phase"] == phase]
            if not rows:
                continue
            sigmas = [
                max((v for k, v in d.items() if k.startswith("sigma_max/")), default=math.nan)
                for d in rows
            ]  # NaN for MinGRU / MinLSTM: no recurrent weights
            gates = sorted(k.split("/")[1] for k in rows[0] if k.startswith("saturated/"))
            saturation = ", ".join(
                f"{g} {np.mean([d['saturated/' + g] for d in rows]):.2f}" for g in gates
            )
            sigma = "n/a" if np.isnan(sigmas).all() else f"{np.mean(sigmas):.3f}"
            lines.append(f"| {cell} | {phase} | {sigma} | {saturation or 'n/a'} |")
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary + _common.provenance_markdown(recorded))
    plot(result, preset, out)
    return summary


def plot(result: dict, preset: Preset, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    longest = max(preset.lengths)
    names = list(dict.fromkeys(r["cell"] for r in result["records"]))
    colors = {name: "black" if name == "linear" else f"C{i}" for i, name in enumerate(names)}
    for phase in ("init", "trained"):
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for cell in dict.fromkeys(r["cell"] for r in result["records"]):
            curves = [
                r
                for r in result["records"]
                if r["cell"] == cell and r["phase"] == phase and r["T"] == longest
            ]
            if not curves:
                continue
            log_norms = np.array([c["log_norm"] for c in curves]) / math.log(10)
            distance = np.array(curves[0]["distance"])
            finite = np.all(np.isfinite(log_norms), axis=0)  # never plot non-finite as zero
            mean = log_norms.mean(axis=0)
            label = (
                f"linear, W_hh = {CALIBRATION_GAMMA}·Q (slope ln γ)" if cell == "linear" else cell
            )
            axis.plot(distance[finite], mean[finite], label=label, color=colors[cell])
            axis.fill_between(
                distance[finite],
                log_norms.min(0)[finite],
                log_norms.max(0)[finite],
                color=colors[cell],
                alpha=0.2,
            )
        axis.set_xlabel("distance from the loss, T - 1 - t (steps)")
        axis.set_ylabel("log10 ‖∂L/∂h_t‖ (mean over batch; band: seeds)")
        axis.set_title(f"gradient norms, adding problem, T={longest}, {phase}")
        axis.legend()
        figure.tight_layout()
        figure.savefig(out / f"decay_{phase}.png", dpi=120)
        plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for cell in dict.fromkeys(r["cell"] for r in result["rates"]):
        for phase, style in (("init", "-o"), ("trained", "--s")):
            rows = [r for r in result["rates"] if r["cell"] == cell and r["phase"] == phase]
            if rows:
                axis.plot(
                    [r["T"] for r in rows],
                    [r["rate"] for r in rows],
                    style,
                    label=f"{cell} ({phase})",
                    color=colors[cell],
                )
    axis.set_xscale("log", base=2)
    axis.set_xlabel("sequence length T")
    axis.set_ylabel("decay rate (slope of ln-norm per step)")
    axis.axhline(0.0, color="gray", lw=0.5)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(out / "rate_vs_T.png", dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="ci")
    parser.add_argument("--out", help="output folder")
    parser.add_argument(
        "--cells",
        help="comma-separated registered cell names, replacing the preset's "
        f"(registered: {', '.join(seqlab.cells.registered())})",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    if args.cells:
        names = tuple(args.cells.split(","))
        unknown = sorted(set(names) - set(seqlab.cells.registered()))
        if unknown:
            parser.error(f"unknown cells {unknown}; registered: {seqlab.cells.registered()}")
        preset = dataclasses.replace(preset, cells=names)
    today = datetime.date.today().isoformat()
    out = pathlib.Path(
        args.out
        or pathlib.Path(__file__).parent / "results" / f"gradnorm_decay_{args.preset}_{today}"
    )
    device = jax.devices()[0]
    header = (
        f"# gradnorm_decay, preset {args.preset}\n\n- date: {today}\n- machine: "
        f"{platform.machine()}, {device.platform}: {device.device_kind}\n- jax {jax.__version__}\n"
        f"- {preset}\n"
    )
    print(header, flush=True)
    start = time.perf_counter()
    result = run(preset, out)
    header += f"- run time: {time.perf_counter() - start:.0f} s\n"
    summary = write_outputs(result, preset, out, header)
    print(summary)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
