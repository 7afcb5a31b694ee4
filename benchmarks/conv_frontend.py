"""Conv1D front-end + RNN against RNN-only: fwd+bwd time in seqlab and PyTorch, as ratios.

What a strided front-end buys an RNN, in both frameworks side by side in one process.

For each cell (LSTM, GRU) and length T, four models read the same (B, T, D) input:

- ``RNN only``: ``ManyToOne(RNNLayer(cell), output_size=1)``, the RNN over the raw D
  channels at T steps;
- ``conv s=1``, ``s=2``, ``s=4``: the same with ``frontend=conv_stack([C], kernel_size=K,
  stride=s)`` (padding "same", relu), the RNN reading C channels at ⌈T/s⌉ steps;

and the same five in PyTorch (``nn.Conv1d(D, C, K, stride=s, padding=K//2)`` + ReLU +
``nn.LSTM``/``nn.GRU(batch_first=True)`` + ``nn.Linear`` on the last step, on the CPU with
``torch.set_num_threads`` = the cores this process may use; the ``ci`` preset uses one
thread, ``--torch-threads`` sets it). Loss: the mean squared
output. seqlab times ``jax.jit(jax.value_and_grad(loss))`` (gradient with respect to the
parameters), torch the forward and ``loss.backward()``; the forward alone is timed too
(``jax.jit(loss)``; torch under ``no_grad``).

Before timing, both frameworks run each model at one small shape with the same weights
(the torch modules are built from seqlab's parameters: conv ``w`` (K, D, C) transposed to
(C, D, K), the RNN by ``seqlab.interop.to_torch``, the head's ``w`` transposed); the losses
must agree to 1e-4 and the conv and head gradients to 1e-4 relative, else the benchmark
exits 1 without timing anything. The timed torch models are built the same way, so both
frameworks compute the same function at every timed shape too.

All eight competitors of one (cell, T) run in interleaved rounds (one call of each per round,
so a slow stretch of the shared machine hits all of them). Reported: each one's median ms
with the min-max range over rounds, and per-round ratios (their median, min-max range):
conv+RNN / RNN-only within each framework (below 1: the front-end makes the step cheaper
than it costs) and seqlab / torch for the same model (below 1: seqlab is faster).

    python benchmarks/conv_frontend.py --preset ci     # small, ~1 minute on a 2-core CPU
    python benchmarks/conv_frontend.py --preset cpu    # B=16 D=32 C=64 K=5 H=128, T=1,024 and 4,096
    python benchmarks/conv_frontend.py --no-torch      # seqlab only (as without torch)

torch is optional: without it (or with ``--no-torch``) the torch rows and the check are
skipped, saying so, and the seqlab rows are still measured. Writes
``conv_frontend_<preset>_<date>.json`` (``_run<k>`` added when that name exists) with
``{"preset", "settings", "rows", "provenance"}`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import statistics
import sys
import time

import _common  # (also puts the checkout on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
from results_schema import case_name

import seqlab  # noqa: E402
from seqlab.layers import ManyToOne, RNNLayer, conv_stack  # noqa: E402

TOLERANCE = 1e-4
FRAMEWORKS = ("seqlab", "torch")
RNN_ONLY = None  # the front-end "stride" of the model without one


@dataclasses.dataclass(frozen=True)
class Preset:
    batch: int  # B
    channels: int  # D, the input's channels
    conv_channels: int  # C, the front-end's output channels
    kernel: int  # K (odd: "same" padding is then K // 2 on each side, as in torch)
    hidden: int  # H
    steps: tuple[int, ...]  # the T's
    strides: tuple[int, ...] = (1, 2, 4)
    cells: tuple[str, ...] = ("lstm", "gru")
    rounds: int = 9
    warmups: int = 2
    forward: bool = True  # also time the forward pass alone
    torch_threads: int | None = None  # None: the cores this process may use


PRESETS = {
    # one torch thread at these tiny sizes: with two on a loaded 2-core machine, torch's
    # OpenMP barriers made single calls 10-100x slower (a run took 133 s, not ~50)
    "ci": Preset(4, 16, 32, 5, 32, (256,), rounds=5, warmups=1, torch_threads=1),
    "cpu": Preset(16, 32, 64, 5, 128, (1024, 4096)),
}
# the shape of the equivalence check (T odd, so the strided lengths round up)
CHECK = dict(batch=2, steps=37, channels=6, conv_channels=8, hidden=8)


def frontend_name(stride, conv_channels: int) -> str:
    return "RNN only" if stride is RNN_ONLY else f"conv C={conv_channels} s={stride}"


def seqlab_model(cell_name: str, hidden: int, kernel: int, conv_channels: int, stride):
    cell = {"lstm": seqlab.cells.LSTM, "gru": seqlab.cells.GRU}[cell_name](hidden)
    frontend = None
    if stride is not RNN_ONLY:
        frontend = conv_stack(
            [conv_channels], kernel_size=kernel, stride=stride, padding="same", activation="relu"
        )
    return ManyToOne(RNNLayer(cell), output_size=1, frontend=frontend)


def seqlab_loss(model):
    def loss(params, xs):
        return jnp.mean(model.apply(params, xs) ** 2)

    return loss


def import_torch(disabled: bool):
    """torch, or None (not installed, or ``--no-torch``)."""
    if disabled:
        return None
    try:
        import torch  # optional: only the torch rows and the check need it
    except ImportError:
        return None
    return torch


def torch_model(torch, model: ManyToOne, params):
    """A torch module computing what ``model`` computes with ``params``: Conv1d + ReLU (if
    the model has a front-end), the RNN (``to_torch``), a Linear head on the last step."""
    from seqlab.interop import to_torch

    rnn = to_torch(model.encoder, params["encoder"])
    conv = None
    if model.frontend is not None:
        layer, conv_params = model.frontend.layers[0], params["frontend"][0]
        kernel, channels, features = conv_params["w"].shape
        conv = torch.nn.Conv1d(channels, features, kernel, stride=layer.stride, padding=kernel // 2)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.array(conv_params["w"]).transpose(2, 1, 0)))
            conv.bias.copy_(torch.from_numpy(np.array(conv_params["b"])))
    head_w, head_b = np.array(params["head"]["w"]), np.array(params["head"]["b"])
    head = torch.nn.Linear(*head_w.shape)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(head_w.T.copy()))
        head.bias.copy_(torch.from_numpy(head_b))

    class ConvRNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.rnn, self.head = conv, rnn, head

        def forward(self, xs):  # (B, T, D), batch first
            if self.conv is not None:
                xs = torch.relu(self.conv(xs.transpose(1, 2))).transpose(1, 2)
            outputs, _ = self.rnn(xs)
            return self.head(outputs[:, -1])

    return ConvRNN()


def check(torch, preset: Preset) -> list[dict]:
    """Each model at the small ``CHECK`` shape in both frameworks, same weights: the loss
    difference and the conv and head gradients' relative errors, as rows. Raises
    ``AssertionError`` naming the model if one exceeds ``TOLERANCE``."""
    rows = []
    dims = dict(B=CHECK["batch"], T=CHECK["steps"], D=CHECK["channels"], H=CHECK["hidden"])
    xs = jax.random.normal(jax.random.key(7), (CHECK["batch"], CHECK["steps"], CHECK["channels"]))
    for cell_name in preset.cells:
        for stride in (RNN_ONLY, *preset.strides):
            model = seqlab_model(
                cell_name, CHECK["hidden"], preset.kernel, CHECK["conv_channels"], stride
            )
            params = model.init(jax.random.key(3), CHECK["channels"])
            value, grads = jax.jit(jax.value_and_grad(seqlab_loss(model)))(params, xs)
            module = torch_model(torch, model, params)
            torch_loss = (module(torch.from_numpy(np.array(xs))) ** 2).mean()
            torch_loss.backward()
            difference = abs(float(value) - torch_loss.item())
            errors = {
                "head": _common.relative_error(
                    module.head.weight.grad.numpy().T, grads["head"]["w"]
                )
            }
            if module.conv is not None:
                errors["conv"] = _common.relative_error(
                    module.conv.weight.grad.numpy().transpose(2, 1, 0),
                    grads["frontend"][0]["w"],
                )
            name = frontend_name(stride, CHECK["conv_channels"])
            case = case_name(cell_name, name, "seqlab vs torch", **dims, K=preset.kernel)
            rows.append(_row(case, "check: loss difference", difference, "", 1))
            for part, error in errors.items():
                rows.append(_row(case, f"check: {part} gradient relative error", error, "", 1))
            bad = (
                {"loss": difference} if difference > TOLERANCE * max(1.0, abs(float(value))) else {}
            )
            bad |= {part: error for part, error in errors.items() if error > TOLERANCE}
            if bad:
                raise AssertionError(
                    f"{cell_name}, {name}: seqlab and torch differ at {dims} (tolerance "
                    f"{TOLERANCE}): {bad}; seqlab loss {float(value)!r}, torch "
                    f"{torch_loss.item()!r}"
                )
            print(
                f"  check {cell_name}, {name}: loss difference {difference:.1e}, "
                + ", ".join(f"{k} grad {v:.1e}" for k, v in errors.items()),
                flush=True,
            )
    return rows


def seqlab_fns(model, params, xs, forward: bool):
    loss = seqlab_loss(model)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    fns = {"fwd+bwd": lambda: _common.block(value_and_grad(params, xs))}
    if forward:
        jitted = jax.jit(loss)
        fns["fwd"] = lambda: _common.block(jitted(params, xs))
    return fns


def torch_fns(torch, module, xs, forward: bool):
    inputs = torch.from_numpy(np.array(xs))

    def backward():
        module.zero_grad(set_to_none=True)
        loss = (module(inputs) ** 2).mean()
        loss.backward()

    fns = {"fwd+bwd": backward}
    if forward:

        def forward_only():
            with torch.no_grad():
                (module(inputs) ** 2).mean()

        fns["fwd"] = forward_only
    return fns


def _row(case, metric, value, unit, n, spread=None) -> dict:
    return {
        "case": case,
        "metric": metric,
        "value": float(value),
        "unit": unit,
        "n": n,
        "spread": None if spread is None else [float(spread[0]), float(spread[1])],
    }


def _summary(values: list[float]) -> tuple[float, tuple[float, float]]:
    return statistics.median(values), (min(values), max(values))


def measure(torch, preset: Preset, cell_name: str, steps: int) -> tuple[list[dict], dict]:
    """The rows of one (cell, T), and for the table {(pass, framework, stride): (median,
    range)} of times and {(pass, kind, stride): (median, range)} of ratios."""
    xs = jax.random.normal(jax.random.key(1), (preset.batch, steps, preset.channels))
    strides = (RNN_ONLY, *preset.strides)
    competitors = {}
    for stride in strides:
        model = seqlab_model(cell_name, preset.hidden, preset.kernel, preset.conv_channels, stride)
        params = model.init(jax.random.key(0), preset.channels)
        competitors["seqlab", stride] = seqlab_fns(model, params, xs, preset.forward)
        if torch is not None:
            module = torch_model(torch, model, params)
            competitors["torch", stride] = torch_fns(torch, module, xs, preset.forward)
    frameworks = FRAMEWORKS if torch is not None else ("seqlab",)
    dims = dict(B=preset.batch, T=steps, D=preset.channels, H=preset.hidden, K=preset.kernel)
    rows, summary = [], {}
    passes = ("fwd+bwd", "fwd") if preset.forward else ("fwd+bwd",)
    for pass_name in passes:
        times = _common.interleaved_times(
            {name: fns[pass_name] for name, fns in competitors.items()},
            preset.rounds,
            preset.warmups,
        )
        for framework in frameworks:
            for stride in strides:
                per_round = times[framework, stride]
                median, spread = _summary(per_round)
                summary[pass_name, framework, stride] = median, spread
                case = case_name(
                    cell_name, frontend_name(stride, preset.conv_channels), framework, **dims
                )
                rows.append(_row(case, f"{pass_name} time", median, "ms", preset.rounds, spread))
                if stride is not RNN_ONLY:
                    ratios = [
                        a / b for a, b in zip(per_round, times[framework, RNN_ONLY], strict=True)
                    ]
                    median, spread = _summary(ratios)
                    summary[pass_name, framework + " conv/rnn", stride] = median, spread
                    rows.append(
                        _row(
                            case,
                            f"{pass_name} time / RNN only",
                            median,
                            "x",
                            preset.rounds,
                            spread,
                        )
                    )
        if torch is not None:
            for stride in strides:
                ratios = [
                    a / b
                    for a, b in zip(times["seqlab", stride], times["torch", stride], strict=True)
                ]
                median, spread = _summary(ratios)
                summary[pass_name, "seqlab/torch", stride] = median, spread
                case = case_name(
                    cell_name, frontend_name(stride, preset.conv_channels), "seqlab / torch", **dims
                )
                rows.append(
                    _row(case, f"{pass_name} time ratio", median, "x", preset.rounds, spread)
                )
    for pass_name in passes:
        line = ", ".join(
            f"{framework} {frontend_name(stride, preset.conv_channels)} "
            f"{summary[pass_name, framework, stride][0]:.1f}"
            for framework in frameworks
            for stride in strides
        )
        print(f"  {cell_name} T={steps} {pass_name} ms: {line}", flush=True)
    return rows, summary


def _ratio(summary, key) -> str:
    if key not in summary:
        return "-"
    median, (low, high) = summary[key]
    return f"{median:.2f} ({low:.2f}-{high:.2f})"


def _ms(summary, key) -> str:
    return f"{summary[key][0]:.1f}" if key in summary else "-"


def table(preset: Preset, summaries: dict, pass_name: str) -> str:
    lines = [
        f"{pass_name}: median ms over {preset.rounds} rounds; ratios: median (min-max) of "
        "the per-round ratios",
        "",
        "| cell | T | front-end | RNN steps | seqlab ms | torch ms | seqlab conv/RNN-only "
        "| torch conv/RNN-only | seqlab/torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (cell_name, steps), summary in summaries.items():
        for stride in (RNN_ONLY, *preset.strides):
            rnn_steps = steps if stride is RNN_ONLY else -(-steps // stride)
            name = frontend_name(stride, preset.conv_channels)
            lines.append(
                f"| {cell_name} | {steps} | {name} | {rnn_steps} | "
                f"{_ms(summary, (pass_name, 'seqlab', stride))} | "
                f"{_ms(summary, (pass_name, 'torch', stride))} | "
                f"{_ratio(summary, (pass_name, 'seqlab conv/rnn', stride))} | "
                f"{_ratio(summary, (pass_name, 'torch conv/rnn', stride))} | "
                f"{_ratio(summary, (pass_name, 'seqlab/torch', stride))} |"
            )
    return "\n".join(lines)


def output_path(out: pathlib.Path, preset_name: str) -> pathlib.Path:
    """``conv_frontend_<preset>_<date>.json``, or ``..._run<k>.json`` for the first free k
    >= 2 when that exists (another run the same day)."""
    stem = f"conv_frontend_{preset_name}_{datetime.date.today().isoformat()}"
    path, run = out / f"{stem}.json", 2
    while path.exists():
        path, run = out / f"{stem}_run{run}.json", run + 1
    return path


def main(argv=None) -> int:
    parser = _common.preset_parser(__doc__.splitlines()[0], PRESETS)
    parser.add_argument(
        "--no-torch",
        action="store_true",
        help="leave torch out as if it were not installed (seqlab rows only, no check)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: the preset's, else the cores this process may use)",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    if preset.kernel % 2 == 0:
        raise ValueError(f"kernel {preset.kernel}: 'same' padding matches torch's only for odd K")
    start = time.perf_counter()
    torch = import_torch(args.no_torch)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.torch_threads or preset.torch_threads or cores
    if torch is None:
        reason = "--no-torch" if args.no_torch else "torch is not installed"
        print(f"{reason}: the torch rows and the seqlab/torch check are skipped")
    else:
        torch.set_num_threads(threads)
        print(f"torch {torch.__version__} on the CPU, {torch.get_num_threads()} of {cores} threads")
    print(f"jax {jax.__version__} ({jax.default_backend()}), preset {args.preset}: {preset}")

    rows = []
    if torch is not None:
        try:
            rows += check(torch, preset)
        except AssertionError as error:
            print(f"conv_frontend: check failed, nothing timed: {error}", file=sys.stderr)
            return 1
    summaries = {}
    for cell_name in preset.cells:
        for steps in preset.steps:
            began = time.perf_counter()
            cell_rows, summaries[cell_name, steps] = measure(torch, preset, cell_name, steps)
            print(f"  ({time.perf_counter() - began:.0f} s)", flush=True)
            rows += cell_rows

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = output_path(out, args.preset)
    record = {
        "preset": args.preset,
        "settings": dataclasses.asdict(preset),
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "torch_skipped": torch is None,
        "rows": rows,
        "provenance": _common.provenance(),
    }
    path.write_text(json.dumps(record, indent=1))
    passes = ("fwd+bwd", "fwd") if preset.forward else ("fwd+bwd",)
    for pass_name in passes:
        print("\n" + table(preset, summaries, pass_name))
    if torch is None:
        print("\n(torch rows skipped: torch not used)")
    print(f"\nwrote {path} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
