"""Parallel-in-time scans against the sequential scan of the same cell, in one process.

For MinGRU, MinLSTM (one associative scan) and DiagGRU, DiagLSTM (Newton, exact diagonal /
block Jacobians): ``seqlab.scan(implementation="parallel")`` against
``implementation="xla"`` (``lax.scan``), forward and forward+backward (loss = a fixed
random weighting of all outputs; gradients w.r.t. parameters and inputs), D = H, B = 8,
T and H over the preset's grid. Times are medians over interleaved rounds (every
competitor once per round, so drifts in the machine's speed hit all of them alike); each
line prints parallel / sequential as a speed-up (> 1: parallel is faster), the Newton
iterations the solve took (``seqlab.parallel.convergence``) and the parallel outputs'
error against the sequential ones (the run fails above 1e-4).

A second table shows the whole trade at equal H: MinGRU sequential, DiagGRU parallel and
the (dense) GRU sequential, fwd+bwd.

    python benchmarks/parallel_scan.py --preset ci     # seconds, CPU
    python benchmarks/parallel_scan.py --preset cpu    # the issue's grid on a CPU
    PYTHONPATH=. python benchmarks/parallel_scan.py --preset gpu --out "$OUT"

On a CPU the sequential loop is cheap and the parallel form does more work (about twice
the arithmetic, log T passes over memory, and Newton's iterations), so expect ratios
below 1 there: parallel-in-time is an accelerator method. Targets on an H100: MinGRU /
MinLSTM fwd+bwd >= 20x at T = 65,536; DiagGRU / DiagLSTM >= 5x at T = 16,384.

Writes ``parallel_scan_<preset>_<backend>_<date>.{md,json}`` to ``--out`` after every
case, so a run stopped from outside leaves what it measured.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
from _common import block, preset_parser, provenance, provenance_markdown, relative_error

import seqlab

CELLS = ("mingru", "minlstm", "diag_gru", "diag_lstm")

PRESETS = {
    "ci": {"grid": [(1024, 32)], "batch": 4, "rounds": 3, "trade": [(1024, 32)]},
    # The grid on the 2-core CPU, except T = 65,536 at H = 256 (the Newton solve's
    # Jacobians and scan levels would need ~15 GiB there).
    "cpu": {
        "grid": [(t, 64) for t in (1024, 4096, 16384, 65536)]
        + [(t, 256) for t in (1024, 4096, 16384)],
        "batch": 8,
        "rounds": 3,
        "trade": [(4096, 64), (16384, 64)],
    },
    # The targets first, so that a lease cut short still answers them.
    "gpu": {
        "grid": [(65536, 256), (16384, 256), (65536, 64), (16384, 64), (4096, 256), (1024, 256)],
        "batch": 8,
        "rounds": 5,
        "trade": [(16384, 256), (65536, 256)],
    },
}


def make_case(name: str, steps: int, hidden: int, batch: int):
    cell = seqlab.cells.make(name, hidden_size=hidden)
    key = jax.random.PRNGKey(steps * 7 + hidden)
    k_params, k_xs, k_weights = jax.random.split(key, 3)
    params = cell.init(k_params, hidden)
    xs = jax.random.normal(k_xs, (batch, steps, hidden))
    weights = jax.random.normal(k_weights, (batch, steps, hidden)) / (batch * steps) ** 0.5

    def loss(params, xs, implementation):
        outputs, _ = seqlab.scan(cell, params, xs, implementation=implementation)
        return jnp.sum(outputs * weights)

    return cell, params, xs, loss


def timed(name: str, steps: int, hidden: int, batch: int, implementations):
    """Callables for fwd and fwd+bwd of each implementation, plus the outputs of each."""
    cell, params, xs, loss = make_case(name, steps, hidden, batch)
    fns = {}
    for implementation in implementations:
        forward = jax.jit(
            lambda p, x, impl=implementation: seqlab.scan(cell, p, x, implementation=impl)[0]
        )
        gradient = jax.jit(jax.grad(lambda p, x, impl=implementation: loss(p, x, impl), (0, 1)))
        fns[(implementation, "fwd")] = lambda f=forward: block(f(params, xs))
        fns[(implementation, "fwd+bwd")] = lambda g=gradient: block(g(params, xs))
    return cell, params, xs, fns


def interleaved(fns, rounds: int):
    for fn in fns.values():  # compile and warm up
        fn()
    samples = {label: [] for label in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[label].append((time.perf_counter() - start) * 1e3)
    return {label: sorted(times)[len(times) // 2] for label, times in samples.items()}


def run_case(name, steps, hidden, batch, rounds):
    cell, params, xs, fns = timed(name, steps, hidden, batch, ("xla", "parallel"))
    sequential = seqlab.scan(cell, params, xs, implementation="xla")[0]
    parallel = seqlab.scan(cell, params, xs, implementation="parallel")[0]
    error = relative_error(parallel, sequential)
    record = seqlab.parallel.convergence(cell, params, xs)
    times = interleaved(fns, rounds)
    return {
        "cell": name,
        "T": steps,
        "H": hidden,
        "B": batch,
        "sequential_fwd_ms": times[("xla", "fwd")],
        "parallel_fwd_ms": times[("parallel", "fwd")],
        "sequential_fwdbwd_ms": times[("xla", "fwd+bwd")],
        "parallel_fwdbwd_ms": times[("parallel", "fwd+bwd")],
        "speedup_fwd": times[("xla", "fwd")] / times[("parallel", "fwd")],
        "speedup_fwdbwd": times[("xla", "fwd+bwd")] / times[("parallel", "fwd+bwd")],
        "iterations": record.iterations,
        "converged": record.converged,
        "error": error,
    }


def run_trade(steps, hidden, batch, rounds):
    fns = {}
    for name, implementation in (("mingru", "xla"), ("diag_gru", "parallel"), ("gru", "xla")):
        _, _, _, case_fns = timed(name, steps, hidden, batch, (implementation,))
        fns[f"{name} {implementation}"] = case_fns[(implementation, "fwd+bwd")]
    times = interleaved(fns, rounds)
    return {"T": steps, "H": hidden, "B": batch, **{k + " fwd+bwd ms": v for k, v in times.items()}}


def write(out: pathlib.Path, stem: str, meta: dict, rows: list, trades: list, complete: bool):
    out.mkdir(parents=True, exist_ok=True)
    data = {**meta, "complete": complete, "rows": rows, "trade": trades}
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        f"# parallel_scan, preset {meta['preset']}" + ("" if complete else " (incomplete)"),
        "",
        f"{meta['device']}; jax {meta['jax']}; {meta['date']}. Medians of {meta['rounds']} "
        "interleaved rounds; speed-up = sequential / parallel (> 1: parallel faster).",
        "",
        "| cell | T | H | seq fwd ms | par fwd ms | speed-up | seq fwd+bwd ms | "
        "par fwd+bwd ms | speed-up | Newton its | rel. error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {r['T']} | {r['H']} | {r['sequential_fwd_ms']:.2f} | "
            f"{r['parallel_fwd_ms']:.2f} | {r['speedup_fwd']:.2f}x | "
            f"{r['sequential_fwdbwd_ms']:.2f} | {r['parallel_fwdbwd_ms']:.2f} | "
            f"{r['speedup_fwdbwd']:.2f}x | {r['iterations']} | {r['error']:.1e} |"
        )
    if trades:
        keys = [k for k in trades[0] if k.endswith("ms")]
        lines += ["", "The trade at equal H (fwd+bwd ms):", ""]
        lines += ["| T | H | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        for t in trades:
            lines.append(
                f"| {t['T']} | {t['H']} | " + " | ".join(f"{t[k]:.2f}" for k in keys) + " |"
            )
    (out / f"{stem}.md").write_text(
        "\n".join(lines) + "\n" + provenance_markdown(meta["provenance"])
    )
    return lines


def main() -> int:
    parser = preset_parser(__doc__.splitlines()[0], PRESETS)
    parser.add_argument("--cells", help="comma-separated subset of " + ",".join(CELLS))
    parser.add_argument("--grid", help="T:H pairs replacing the preset's, e.g. 16384:256")
    parser.add_argument("--no-trade", action="store_true", help="skip the trade table")
    args = parser.parse_args()
    preset = dict(PRESETS[args.preset])
    cells = CELLS if args.cells is None else tuple(args.cells.split(","))
    if not set(cells) <= set(CELLS):
        parser.error(f"--cells must be among {','.join(CELLS)}, got {args.cells}")
    if args.grid:
        try:
            preset["grid"] = [
                tuple(int(n) for n in pair.split(":")) for pair in args.grid.split(",")
            ]
        except ValueError:
            parser.error(f"--grid takes T:H pairs separated by commas, got {args.grid}")
    if args.no_trade:
        preset["trade"] = []
    backend = jax.default_backend()
    date = datetime.date.today().isoformat()
    device = jax.devices()[0]
    meta = {
        "preset": args.preset,
        "backend": backend,
        "device": f"{device.device_kind} ({platform.processor() or platform.machine()})",
        "jax": jax.__version__,
        "date": date,
        "rounds": preset["rounds"],
        "provenance": provenance(),  # taken once: the run writes after every case
    }
    stem = f"parallel_scan_{args.preset}_{backend}_{date}"
    if args.cells or args.grid:
        stem += "_subset"
    out = pathlib.Path(args.out)
    rows, trades, failures = [], [], []
    for steps, hidden in preset["grid"]:
        for name in cells:
            row = run_case(name, steps, hidden, preset["batch"], preset["rounds"])
            rows.append(row)
            if row["error"] > 1e-4 or not row["converged"]:
                failures.append(f"{name} T={steps} H={hidden}: error {row['error']:.1e}")
            print(write(out, stem, meta, rows, trades, complete=False)[-1], flush=True)
    for steps, hidden in preset["trade"]:
        trades.append(run_trade(steps, hidden, preset["batch"], preset["rounds"]))
        write(out, stem, meta, rows, trades, complete=False)
    print("\n".join(write(out, stem, meta, rows, trades, complete=True)))
    if failures:
        print("parallel_scan: parallel differs from sequential:", *failures, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
