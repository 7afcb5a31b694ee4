"""Forward and forward+backward time of ``seqlab.scan`` against autodiff, Flax and PyTorch.

All competitors run in this one process on the same shapes, in interleaved rounds (one
call of each per round, so a slow stretch of a shared machine hits all of them); each time
is the median over the rounds. Competitors per cell and shape:

- ``seqlab xla``: ``implementation="xla"`` with the per-backend defaults: the built-in
  cells' hand-derived backward (``seqlab/unroll/_bptt.py``);
- ``seqlab xla, hoisted`` / ``inline``: the same with the other choice of
  ``hoist_input_projection`` than the default for that shape (the evidence for
  ``_policy.py``);
- ``seqlab xla-autodiff``: JAX's autodiff through the same ``lax.scan`` (the path every
  user ran before the hand-derived backward), with the same defaults;
- ``flax.linen.RNN`` and ``torch.nn`` (cuDNN on a GPU, oneDNN on a CPU).

One layer, input size = hidden size, float32, loss = sum of outputs; fwd+bwd takes the
gradient with respect to the parameters and the inputs. Columns: times, fwd+bwd time
ratios (above 1: this is faster than the named competitor), the matmul rate achieved over
fwd+bwd (GFLOP/s = the 6·B·T·(D+H)·G·H floating-point operations of the recurrence's
matmuls, forward and backward, per second; elementwise work not counted), and for the
JAX competitors XLA's compiled temporary memory of the fwd+bwd program. A second table is
the machine's own matmul rate at the shapes the recurrences multiply, for XLA and torch:
the achieved rate of a recurrence over that rate is how much of the gap to the other
library is matmul speed.

Absolute times only mean something on a GPU; on a shared CPU compare the ratios.

    python benchmarks/scan_throughput.py --preset ci     # about 1 minute on a 2-core CPU
    python benchmarks/scan_throughput.py --preset cpu    # the two CPU target shapes, ~6 min
    python benchmarks/scan_throughput.py --preset gpu    # the H100 anchor shapes

Writes ``scan_throughput_<preset>_<backend>_<date>.{md,json}`` to ``--out``
(default: benchmarks/results).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys

import jax
import jax.numpy as jnp
from _common import (
    block,
    forward_and_backward,
    interleaved_times,
    preset_parser,
    provenance,
    provenance_markdown,
    torch_fns,
)

import seqlab  # noqa: E402
from seqlab.unroll import _policy  # noqa: E402

PRESETS = {
    "ci": dict(shapes=[(16, 64, 64)], cells=["lstm", "gru", "rnn"], rounds=5, unrolls=[None]),
    "cpu": dict(
        shapes=[(32, 256, 256), (16, 1024, 128)],
        cells=["lstm", "gru", "rnn"],
        rounds=9,
        unrolls=[None],
    ),
    "gpu": dict(
        shapes=[(64, 512, 1024), (16, 2048, 512), (64, 512, 256)],
        cells=["lstm", "gru"],
        rounds=20,
        unrolls=[1, 8],
    ),
}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
AUTODIFF = "seqlab xla-autodiff"


def matmul_flops(cell_name: str, shape) -> float:
    """FLOPs of the recurrence's matmuls over fwd+bwd: forward 2·B·T·(D+H)·G·H (input and
    recurrent products), backward twice that (input and weight gradients)."""
    batch, steps, hidden = shape
    return 6.0 * batch * steps * (hidden + hidden) * GATES[cell_name] * hidden


def seqlab_fns(cell_name, shape, implementation, hoist, unroll):
    batch, steps, hidden = shape
    cell = seqlab.cells.make(cell_name, hidden_size=hidden)
    params = cell.init(jax.random.key(0), hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))

    def loss(params, xs):
        outputs, _ = seqlab.scan(
            cell,
            params,
            xs,
            implementation=implementation,
            hoist_input_projection=hoist,
            unroll=unroll,
        )
        return jnp.sum(outputs)

    memory = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
    analysis = memory.memory_analysis()
    temp = None if analysis is None else analysis.temp_size_in_bytes
    return (*forward_and_backward(loss, params, xs), temp)


def flax_fns(cell_name, shape, unroll):
    from flax import linen  # optional for seqlab, installed with the test extras

    batch, steps, hidden = shape
    make = {
        "lstm": linen.OptimizedLSTMCell,
        "gru": linen.GRUCell,
        "rnn": linen.SimpleCell,
    }[cell_name]
    rnn = linen.RNN(make(features=hidden), unroll=unroll or 1)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))
    variables = rnn.init(jax.random.key(0), xs)

    def loss(variables, xs):
        return jnp.sum(rnn.apply(variables, xs))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables, xs).compile()
    analysis = compiled.memory_analysis()
    temp = None if analysis is None else analysis.temp_size_in_bytes
    return (*forward_and_backward(loss, variables, xs), temp)


def interleaved_medians(fns: dict, rounds: int, warmups: int = 2) -> dict:
    """Median ms of each callable, called once per round in turn (after ``warmups``)."""
    times = interleaved_times(fns, rounds, warmups)
    return {name: statistics.median(values) for name, values in times.items()}


@dataclasses.dataclass
class Row:
    cell: str
    shape: tuple
    name: str
    forward_ms: float
    backward_ms: float
    gflops: float
    temp_mb: float | None


@dataclasses.dataclass
class MatmulRate:
    shape: tuple  # (M, K, N)
    where: str
    library: str
    gflops: float


def matmul_rates(shape, gates: int, rounds: int) -> list[MatmulRate]:
    """The machine's matmul rate at the recurrences' shapes: the per-step (B, H) x (H, G·H)
    as T products in a loop (the forward's recurrent matmul), the chunk-sized
    (rows, H) x (H, G·H) of the hand-derived backward's input side, and the hoisted
    (B·T, H) x (H, G·H); for XLA and (when installed) torch."""
    batch, steps, hidden = shape
    rows = min(steps, max(1, _policy.BPTT_CHUNK_ROWS // batch)) * batch
    key = jax.random.key(0)
    weight = jax.random.normal(key, (hidden, gates * hidden)) * 0.01
    results = []
    cases = [
        ("per step, in a loop", (batch, hidden, gates * hidden), steps),
        ("a chunk", (rows, hidden, gates * hidden), 1),
        ("hoisted, all steps", (batch * steps, hidden, gates * hidden), 1),
    ]
    for where, (m, k, n), repeats in cases:
        left = jax.random.normal(key, (repeats, m, k))

        def loop(left, weight):
            return jax.lax.scan(lambda c, a: (c, a @ weight), 0.0, left)[1]

        compiled = jax.jit(loop)
        ms = interleaved_medians({"xla": lambda c=compiled, a=left: block(c(a, weight))}, rounds)[
            "xla"
        ]
        flops = 2.0 * m * k * n * repeats
        results.append(MatmulRate((m, k, n), where, "xla", flops / ms / 1e6))
        torch_rate = _torch_matmul_rate(m, k, n, repeats, rounds)
        if torch_rate is not None:
            results.append(MatmulRate((m, k, n), where, "torch", torch_rate))
    return results


def _torch_matmul_rate(m, k, n, repeats, rounds):
    try:
        import torch
    except ImportError:
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    left = torch.randn(repeats, m, k, device=device)
    weight = torch.randn(k, n, device=device) * 0.01
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        for index in range(repeats):
            left[index] @ weight
        sync()

    ms = interleaved_medians({"torch": run}, rounds)["torch"]
    return 2.0 * m * k * n * repeats / ms / 1e6


def run(preset: str) -> tuple[list[Row], list[MatmulRate]]:
    settings = PRESETS[preset]
    rows, rates = [], []
    for shape in settings["shapes"]:
        for cell_name in settings["cells"]:
            batch, steps, hidden = shape
            default_hoist = _policy.hoist_small(steps * batch * GATES[cell_name] * hidden)
            other = "inline" if default_hoist else "hoisted"
            competitors = {}
            for unroll in settings["unrolls"]:
                suffix = f", unroll {unroll}" if len(settings["unrolls"]) > 1 else ""
                competitors[f"seqlab xla{suffix}"] = seqlab_fns(
                    cell_name, shape, "xla", None, unroll
                )
                competitors[f"seqlab xla, {other}{suffix}"] = seqlab_fns(
                    cell_name, shape, "xla", not default_hoist, unroll
                )
                competitors[f"{AUTODIFF}{suffix}"] = seqlab_fns(
                    cell_name, shape, "xla-autodiff", None, unroll
                )
                competitors[f"flax.linen.RNN{suffix}"] = flax_fns(cell_name, shape, unroll)
            torch_pair = torch_fns(cell_name, shape)
            if torch_pair is not None:
                competitors["torch.nn (cuDNN/oneDNN)"] = (*torch_pair, None)
            forward = interleaved_medians(
                {name: fns[0] for name, fns in competitors.items()}, settings["rounds"]
            )
            backward = interleaved_medians(
                {name: fns[1] for name, fns in competitors.items()}, settings["rounds"]
            )
            flops = matmul_flops(cell_name, shape)
            for name, fns in competitors.items():
                temp = fns[2]
                rows.append(
                    Row(
                        cell_name,
                        shape,
                        name,
                        forward[name],
                        backward[name],
                        flops / backward[name] / 1e6,
                        None if temp is None else temp / 1e6,
                    )
                )
                print(
                    f"  {cell_name} {shape} {name}: {forward[name]:.2f} / "
                    f"{backward[name]:.2f} ms, {rows[-1].gflops:.0f} GFLOP/s",
                    flush=True,
                )
        rates += matmul_rates(shape, max(GATES[c] for c in settings["cells"]), settings["rounds"])
    return rows, rates


def _ratio(row: Row, rows: list[Row], prefix: str) -> str:
    suffix = row.name[row.name.index(", unroll") :] if ", unroll" in row.name else ""
    names = {prefix + suffix, prefix}
    other = [r for r in rows if r.cell == row.cell and r.shape == row.shape and r.name in names]
    return f"{other[0].backward_ms / row.backward_ms:.2f}x" if other else "-"


def table(rows: list[Row]) -> str:
    lines = [
        "| cell | B, T, H | implementation | fwd ms | fwd+bwd ms | vs autodiff | vs flax "
        "| vs torch | GFLOP/s | temp MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        temp = "-" if row.temp_mb is None else f"{row.temp_mb:.1f}"
        lines.append(
            f"| {row.cell} | {', '.join(map(str, row.shape))} | {row.name} | "
            f"{row.forward_ms:.2f} | {row.backward_ms:.2f} | "
            f"{_ratio(row, rows, AUTODIFF)} | {_ratio(row, rows, 'flax.linen.RNN')} | "
            f"{_ratio(row, rows, 'torch.nn (cuDNN/oneDNN)')} | {row.gflops:.0f} | {temp} |"
        )
    return "\n".join(lines)


def rate_table(rates: list[MatmulRate]) -> str:
    lines = ["| matmul (M, K, N) | as in | library | GFLOP/s |", "|---|---|---|---|"]
    for rate in rates:
        lines.append(
            f"| {', '.join(map(str, rate.shape))} | {rate.where} | {rate.library} | "
            f"{rate.gflops:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    machine = f"{platform.machine()}, {device.platform}: {device.device_kind}"
    try:
        import torch

        torch_version = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_version = "not installed"
    settings = PRESETS[args.preset]
    header = (
        f"# scan_throughput, preset {args.preset}\n\n"
        f"- date: {datetime.date.today().isoformat()}\n- machine: {machine}, "
        f"{jax.device_count()} device(s), {os.cpu_count()} CPU cores\n"
        f"- jax {jax.__version__}, flax {__import__('flax').__version__}, torch {torch_version}\n"
        f"- medians of {settings['rounds']} interleaved rounds after two warm-ups; "
        "'vs X' = X's fwd+bwd time / this fwd+bwd time (above 1: faster than X)\n"
        f"- seqlab defaults on this backend: hoist_input_projection="
        f"{_policy.HOIST_INPUT_PROJECTION.get(device.platform, True)} (hand-derived: also "
        f"when T·B·G·H <= {_policy.HOIST_MAX_VALUES.get(device.platform, 0)}), unroll="
        f"{_policy.DEFAULT_UNROLL.get(device.platform, 1)}, hand-derived chunks of "
        f"{_policy.BPTT_CHUNK_ROWS} rows (steps x batch)\n"
    )
    print(header)
    rows, rates = run(args.preset)
    report = (
        header
        + "\n"
        + table(rows)
        + "\n\n## The machine's matmul rate at these shapes\n\n"
        + rate_table(rates)
        + "\n"
    )
    print("\n" + table(rows) + "\n\n" + rate_table(rates))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"scan_throughput_{args.preset}_{device.platform}_{datetime.date.today().isoformat()}"
    recorded = provenance()
    (out / f"{stem}.md").write_text(report + provenance_markdown(recorded))
    data = {
        "rows": [dataclasses.asdict(r) for r in rows],
        "matmul_rates": [dataclasses.asdict(r) for r in rates],
        "provenance": recorded,
    }
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2))
    print(f"wrote {out / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
