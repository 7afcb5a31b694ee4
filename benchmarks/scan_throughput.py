"""Forward and forward+backward time of ``seqlab.scan`` against Flax linen and PyTorch.

All competitors run in this one process on the same shapes; the table prints each time
and its ratio to ``flax.linen.RNN`` (the target: seqlab not slower than Flax on CPU, at
least 2.5x faster fwd+bwd on a GPU for LSTM at B=64, T=512, H=1024). Absolute times only
mean something on a GPU; on a shared CPU compare ratios.

One layer, input size = hidden size, float32, loss = sum of outputs; fwd+bwd takes the
gradient with respect to the parameters and the inputs. seqlab runs twice per shape: with
the input projection hoisted out of the loop and without, which is the evidence for the
per-backend choice in ``seqlab/unroll/_policy.py``.

    python benchmarks/scan_throughput.py --preset ci     # about 1 minute on a 2-core CPU
    python benchmarks/scan_throughput.py --preset cpu    # the CPU anchor shape, ~5 minutes
    python benchmarks/scan_throughput.py --preset gpu    # the H100 anchor shapes

Writes ``scan_throughput_<preset>_<backend>_<date>.{md,json}`` to ``--out``
(default: benchmarks/results).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import platform
import sys

import jax
import jax.numpy as jnp
from _common import forward_and_backward, median_ms, preset_parser, torch_fns

import seqlab  # noqa: E402

PRESETS = {
    "ci": dict(shapes=[(16, 64, 64)], cells=["lstm", "gru", "rnn"], repeats=5, unrolls=[1]),
    "cpu": dict(shapes=[(32, 256, 256)], cells=["lstm", "gru", "rnn"], repeats=10, unrolls=[1]),
    "gpu": dict(
        shapes=[(64, 512, 1024), (16, 2048, 512), (64, 512, 256)],
        cells=["lstm", "gru"],
        repeats=20,
        unrolls=[1, 8],
    ),
}


def seqlab_fns(cell_name, shape, hoist, unroll):
    batch, steps, hidden = shape
    cell = seqlab.cells.make(cell_name, hidden_size=hidden)
    params = cell.init(jax.random.key(0), hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))

    def loss(params, xs):
        outputs, _ = seqlab.scan(cell, params, xs, hoist_input_projection=hoist, unroll=unroll)
        return jnp.sum(outputs)

    return forward_and_backward(loss, params, xs)


def flax_fns(cell_name, shape, unroll):
    from flax import linen

    batch, steps, hidden = shape
    make = {
        "lstm": linen.OptimizedLSTMCell,
        "gru": linen.GRUCell,
        "rnn": linen.SimpleCell,
    }[cell_name]
    rnn = linen.RNN(make(features=hidden), unroll=unroll)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))
    variables = rnn.init(jax.random.key(0), xs)

    def loss(variables, xs):
        return jnp.sum(rnn.apply(variables, xs))

    return forward_and_backward(loss, variables, xs)


@dataclasses.dataclass
class Row:
    cell: str
    shape: tuple
    name: str
    forward_ms: float
    backward_ms: float


def run(preset: str) -> list[Row]:
    settings = PRESETS[preset]
    rows = []
    for shape in settings["shapes"]:
        for cell_name in settings["cells"]:
            competitors = {}
            for unroll in settings["unrolls"]:
                suffix = f", unroll {unroll}" if len(settings["unrolls"]) > 1 else ""
                competitors[f"flax.linen.RNN{suffix}"] = flax_fns(cell_name, shape, unroll)
                for hoist in (True, False):
                    label = "hoisted" if hoist else "inline"
                    competitors[f"seqlab.scan {label}{suffix}"] = seqlab_fns(
                        cell_name, shape, hoist, unroll
                    )
            torch_pair = torch_fns(cell_name, shape)
            if torch_pair is not None:
                competitors["torch.nn (cuDNN/oneDNN)"] = torch_pair
            for name, (forward, backward) in competitors.items():
                rows.append(
                    Row(
                        cell_name,
                        shape,
                        name,
                        median_ms(forward, settings["repeats"]),
                        median_ms(backward, settings["repeats"]),
                    )
                )
                print(
                    f"  {cell_name} {shape} {name}: {rows[-1].forward_ms:.2f} / "
                    f"{rows[-1].backward_ms:.2f} ms",
                    flush=True,
                )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| cell | B, T, H | implementation | fwd ms | fwd+bwd ms | fwd vs flax | fwd+bwd vs flax |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        flax_name = "flax.linen.RNN" + (
            row.name[row.name.index(", unroll") :] if ", unroll" in row.name else ""
        )
        flax = next(
            r for r in rows if r.cell == row.cell and r.shape == row.shape and r.name == flax_name
        )
        lines.append(
            f"| {row.cell} | {', '.join(map(str, row.shape))} | {row.name} | "
            f"{row.forward_ms:.2f} | {row.backward_ms:.2f} | "
            f"{flax.forward_ms / row.forward_ms:.2f}x | {flax.backward_ms / row.backward_ms:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    machine = f"{platform.machine()}, {device.platform}: {device.device_kind}"
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    header = (
        f"# scan_throughput, preset {args.preset}\n\n"
        f"- date: {datetime.date.today().isoformat()}\n- machine: {machine}, "
        f"{jax.device_count()} device(s), {__import__('os').cpu_count()} CPU cores\n"
        f"- jax {jax.__version__}, flax {__import__('flax').__version__}, torch {torch_version}\n"
        f"- medians of {PRESETS[args.preset]['repeats']} runs after one warm-up; "
        "'vs flax' = flax time / this time (above 1 is faster than flax)\n"
    )
    print(header)
    rows = run(args.preset)
    report = header + "\n" + table(rows) + "\n"
    print("\n" + table(rows))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"scan_throughput_{args.preset}_{device.platform}_{datetime.date.today().isoformat()}"
    (out / f"{stem}.md").write_text(report)
    (out / f"{stem}.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    print(f"wrote {out / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
