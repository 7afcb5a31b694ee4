"""The fused Pallas recurrences: checked, then timed beside cuDNN, lax.scan and Flax.

One call does everything a lent GPU is for (``benchmarks/gpu_scan_notes.md`` has the plan
and the history):

1. Ceilings: the measured float32 (TF32 by default), float32-highest and bfloat16 matmul
   rates and the device-to-device copy rate.
2. Checks, each under a watchdog (a hung barrier would otherwise eat the whole lease; on
   expiry it writes the report of what came before, marked incomplete, and exits 3):
   every kernel (LSTM, GRU both variants, tanh and relu RNN) against its reference
   (float32 state and accumulation, operands in the weights' dtype), forward and
   gradients, at TF32-off precision (float32 <= 1e-5 forward, 1e-4 gradients) and in
   bfloat16 (<= 2e-2, also against float32 math throughout except for ReLU, whose kink
   makes that comparison ill-posed: see tests/test_kernels.py);
   ``seqlab.scan(implementation="pallas")`` against the XLA path over ragged lengths in
   both directions; poisoned outputs (NaN before the launch, none after); the same inputs
   twice, which must agree bit for bit (a moving result is a race); and gradients vmapped
   over seeds, which must equal each seed alone with the copies side by side and in
   groups (every program resident).
3. Times, fwd and fwd+bwd, one layer, D = H, loss = sum of outputs: seqlab pallas
   (float32 with the default TF32 matmuls, and bfloat16), seqlab xla (``lax.scan`` with
   the built-in cells' hand-derived backward) and xla-autodiff (autodiff through it),
   ``flax.linen.RNN``, cuDNN through ``jax.experimental.rnn`` (LSTM) and torch's cuDNN
   ``nn.LSTM``/``nn.GRU`` (TF32 default; and bfloat16); pallas also with the preset's
   ``variants`` of the tiles. Each time is printed as a ratio to torch cuDNN, with the
   floor for the shape (FLOPs over the measured matmul rate, bytes over the copy rate) and
   the fraction of the floor reached.

    python benchmarks/gpu_scan.py --preset ci    # CPU: checks in interpret mode, ~1.5 min
    PYTHONPATH=. python benchmarks/gpu_scan.py --preset gpu --out "$OUT"   # H100 anchors

``--skip-checks`` / ``--skip-timings`` split a run that would not fit one call. Writes
``gpu_scan_<preset>_<backend>[_checks|_timings]_<date>.{md,json}`` to ``--out`` (default:
benchmarks/results) as each stage starts, so a run killed from outside leaves what it had,
marked incomplete. Exit status 1 when any check fails, 3 when the watchdog stops a hang.
"""

from __future__ import annotations

import dataclasses
import datetime
import faulthandler
import functools
import json
import os
import pathlib
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    block,
    forward_and_backward,
    median_ms,
    preset_parser,
    provenance,
    provenance_markdown,
    relative_error,
    torch_fns,
)

import seqlab
from seqlab import kernels
from seqlab.kernels import testing

PRESETS = {
    "ci": dict(
        check_shapes=[(5, 7, 40)],  # (B, T, H): ragged batch and hidden tiles
        tiles=kernels.Tiles(block_hidden=16, block_k=32),
        time_shapes=[(8, 16, 32)],
        cells=["lstm", "gru"],
        repeats=3,
        ceiling_size=512,
        watchdog_s=600,
        variants={"8 warps": kernels.Tiles(block_hidden=16, block_k=32, num_warps=8)},
    ),
    "gpu": dict(
        check_shapes=[(5, 33, 200), (64, 64, 1024), (16, 128, 512)],
        tiles=None,
        time_shapes=[(64, 512, 1024), (16, 2048, 512), (64, 512, 256)],
        cells=["lstm", "gru"],
        repeats=10,  # medians of 10: the timings must fit one 600 s device call
        ceiling_size=8192,
        watchdog_s=240,
        # Other tiles timed beside the defaults (kernel_resources.py: 8 warps take a third
        # to a half fewer registers; block_hidden 64 spills with 4 warps but not with 8).
        variants={
            "8 warps": kernels.Tiles(num_warps=8),
            "bh 64, 8 warps": kernels.Tiles(block_hidden=64, num_warps=8),
        },
    ),
}
KINDS = testing.KINDS


# --- a watchdog: a kernel whose barrier never opens hangs the process for good ----------


class Watchdog:
    """Exit the process (status 3, after printing where it hung) when a stage overruns.

    ``on_expire(stage)`` runs first, so what the earlier stages measured is written out
    rather than lost with the process (a hung kernel cannot be interrupted any other way).
    ``on_stage(stage)`` runs as each stage starts (to save progress in case something
    outside, such as a time limit, kills the process).
    """

    def __init__(
        self,
        seconds: float,
        on_expire: Callable[[str], None] | None = None,
        on_stage: Callable[[str], None] | None = None,
    ):
        self.seconds = seconds
        self.on_expire = on_expire
        self.on_stage = on_stage
        self.timer: threading.Timer | None = None

    def stage(self, name: str):
        if self.timer:
            self.timer.cancel()
        if self.on_stage:
            self.on_stage(name)

        def expire():
            print(f"\nWATCHDOG: '{name}' ran over {self.seconds:.0f} s; exiting", flush=True)
            faulthandler.dump_traceback(all_threads=True)
            if self.on_expire:
                try:
                    self.on_expire(name)
                except Exception:  # exiting matters more than the partial report
                    traceback.print_exc()
            os._exit(3)

        self.timer = threading.Timer(self.seconds, expire)
        self.timer.daemon = True
        self.timer.start()

    def stop(self):
        if self.timer:
            self.timer.cancel()


# --- ceilings and floors ------------------------------------------------------------------


def ceilings(size: int, repeats: int) -> dict:
    """Matmul rates (TFLOP/s) at each precision and the copy rate (GB/s, read + write)."""
    key = jax.random.key(0)
    result = {}
    for label, dtype, precision in (
        ("f32_default", jnp.float32, None),
        ("f32_highest", jnp.float32, "highest"),
        ("bf16", jnp.bfloat16, None),
    ):
        a = jax.random.normal(key, (size, size), dtype)
        b = jax.random.normal(jax.random.key(1), (size, size), dtype)
        matmul = functools.partial(jax.jit(jnp.dot, static_argnames="precision"), a, b,
                                   precision=precision)  # fmt: skip
        ms = median_ms(lambda matmul=matmul: block(matmul()), repeats, warmups=2)
        result[f"matmul_{label}_tflops"] = 2 * size**3 / (ms * 1e-3) / 1e12
    data = jax.random.normal(key, (size * size * 4,), jnp.float32)
    copy = jax.jit(lambda x: x * 1.0000001)
    ms = median_ms(lambda: block(copy(data)), repeats, warmups=2)
    result["copy_gbs"] = 2 * data.size * 4 / (ms * 1e-3) / 1e9
    return result


def floor_ms(
    cell: str, shape, backward: bool, rate_tflops: float, copy_gbs: float, bytes_per: int
) -> float:
    """max(FLOPs / matmul rate, bytes / copy rate): input projection plus recurrent matmul
    (2 T B (D + H) G H FLOPs forward; the backward does twice that), and inputs read,
    outputs written once (plus the saved gates and their gradients for fwd+bwd)."""
    batch, steps, hidden = shape
    gates = {"lstm": 4, "gru": 3}[cell]
    flops = 2 * steps * batch * 2 * hidden * gates * hidden * (3 if backward else 1)
    elements = steps * batch * hidden * (2 + (2 * gates + 2 if backward else 0))
    return max(flops / (rate_tflops * 1e12), elements * bytes_per / (copy_gbs * 1e9)) * 1e3


# --- checks -------------------------------------------------------------------------------


def kernel_pair(kind, tiles, interpret, poison=False):
    """(kernel, reference, gates) over (projected, w_hh, h0, c0, lengths), the kernel with
    these options; ``poison`` starts its outputs as NaN (``kernels.Pallas.poison``)."""
    kernel, reference, gates = testing.recurrence(kind)
    options = kernels.Pallas(tiles=tiles, interpret=interpret, poison=poison)
    return functools.partial(kernel, options=options), reference, gates


def problem(rng, kind, shape, dtype):
    batch, steps, hidden = shape
    return testing.random_problem(rng, kind, steps, batch, hidden, dtype)


def check_kernel(kind, shape, dtype, tiles, interpret, rng) -> dict:
    kernel, reference, _ = kernel_pair(kind, tiles, interpret, poison=True)
    arrays, lengths = problem(rng, kind, shape, dtype)
    forward_tol, gradient_tol = (1e-5, 1e-4) if dtype == jnp.float32 else (2e-2, 2e-2)
    with jax.default_matmul_precision("highest" if dtype == jnp.float32 else None):
        outputs, vjp = jax.vjp(lambda *a: kernel(*a, lengths), *arrays)
        again = kernel(*arrays, lengths)
        expected, reference_vjp = jax.vjp(lambda *a: reference(*a, lengths), *arrays)
        cotangent = jax.tree_util.tree_map(
            lambda y: jnp.asarray(rng.normal(size=y.shape), jnp.float32).astype(y.dtype),
            expected,
        )
        grads, reference_grads = vjp(cotangent), reference_vjp(cotangent)
        if dtype == jnp.bfloat16 and kind != "relu":  # also against float32 math throughout
            wide = [array.astype(jnp.float32) for array in arrays]
            exact, exact_vjp = jax.vjp(lambda *a: reference(*a, lengths), *wide)
            exact_grads = exact_vjp(jax.tree_util.tree_map(lambda c: c.astype(jnp.float32),
                                                           cotangent))  # fmt: skip
        else:
            exact, exact_grads = expected, reference_grads
    leaves = jax.tree_util.tree_leaves
    forward_error = max(
        relative_error(a, b)
        for want in (expected, exact)
        for a, b in zip(leaves(outputs), leaves(want), strict=True)
    )
    gradient_error = max(
        relative_error(a, b)
        for want in (reference_grads, exact_grads)
        for a, b in zip(grads, want, strict=True)
        if np.max(np.abs(np.asarray(b, np.float32))) > 0
    )
    finite = all(bool(jnp.all(jnp.isfinite(x))) for x in leaves((outputs, grads)))
    repeatable = all(
        bool(jnp.array_equal(a, b)) for a, b in zip(leaves(outputs), leaves(again), strict=True)
    )
    ok = forward_error <= forward_tol and gradient_error <= gradient_tol and finite and repeatable
    return dict(forward=forward_error, gradients=gradient_error, finite=finite,
                repeatable=repeatable, ok=ok)  # fmt: skip


def check_scan(kind, shape, reverse, tiles, interpret, rng) -> dict:
    batch, steps, hidden = shape
    cell = {
        "lstm": seqlab.cells.LSTM(hidden),
        "gru": seqlab.cells.GRU(hidden),
        "gru_original": seqlab.cells.GRU(hidden, variant="original"),
        "tanh": seqlab.cells.RNN(hidden),
        "relu": seqlab.cells.RNN(hidden, activation="relu"),
    }[kind]
    params = cell.init(jax.random.key(int(rng.integers(1 << 30))), 32)
    xs = jnp.asarray(rng.normal(size=(batch, steps, 32)), jnp.float32)
    lengths = jnp.asarray(rng.integers(0, steps + 1, size=batch), jnp.int32)

    def run(implementation):
        def loss(params, xs):
            outputs, carry = seqlab.scan(cell, params, xs, seq_lengths=lengths, reverse=reverse,
                                         implementation=implementation)  # fmt: skip
            return jnp.sum(jnp.sin(outputs)) + sum(
                jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(carry)
            ), (outputs, carry)

        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, xs)

    with jax.default_matmul_precision("highest"):
        (_, fused), fused_grads = run(kernels.Pallas(tiles=tiles, interpret=interpret))
        (_, plain), plain_grads = run("xla")
    leaves = jax.tree_util.tree_leaves
    forward_error = max(
        relative_error(a, b) for a, b in zip(leaves(fused), leaves(plain), strict=True)
    )
    gradient_error = max(
        relative_error(a, b) for a, b in zip(leaves(fused_grads), leaves(plain_grads), strict=True)
    )
    ok = forward_error <= 1e-5 and gradient_error <= 1e-4
    return dict(forward=forward_error, gradients=gradient_error, ok=ok)


def check_vmap(kind, shape, tiles, interpret, rng, seeds=5) -> dict:
    """Gradients vmapped over seeds (each with its own weights) equal each seed alone, with
    the default resident budget (copies side by side) and with a budget of two copies' worth
    of programs (groups of two and a remainder: ``seqlab.kernels._launch.resident_vmap``)."""
    batch, steps, hidden = shape
    tiles = tiles or kernels.Tiles()
    layout = testing.make_layout(steps, batch, hidden, tiles, interpret)
    two_copies = dataclasses.replace(
        tiles, max_programs=2 * layout.batch_blocks * layout.hidden_programs
    )
    problems = [problem(rng, kind, shape, jnp.float32) for _ in range(seeds)]
    lengths = problems[0][1]
    stacked = [jnp.stack(leaves) for leaves in zip(*[p[0] for p in problems], strict=True)]
    worst_value = worst_gradient = 0.0
    with jax.default_matmul_precision("highest"):
        for budget_tiles in (tiles, two_copies):
            kernel = kernel_pair(kind, budget_tiles, interpret)[0]

            def loss(*arrays, kernel=kernel):
                leaves = jax.tree_util.tree_leaves(kernel(*arrays, lengths))
                return sum(jnp.sum(1 + jnp.sin(leaf)) for leaf in leaves)  # far from 0

            value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            values, grads = jax.jit(jax.vmap(value_and_grad))(*stacked)
            for seed, (arrays, _) in enumerate(problems):
                value, alone = value_and_grad(*arrays)
                worst_value = max(worst_value, relative_error(values[seed], value))
                for got, want in zip(grads, alone, strict=True):
                    worst_gradient = max(worst_gradient, relative_error(got[seed], want))
    ok = worst_value <= 1e-5 and worst_gradient <= 1e-5
    return dict(forward=worst_value, gradients=worst_gradient, ok=ok)


def run_checks(settings, interpret, watchdog, results: list[dict]) -> None:
    """Append each check's result to ``results`` as it completes."""
    rng = np.random.default_rng(int(time.time()))  # fresh inputs every run
    for shape in settings["check_shapes"]:
        for kind in KINDS:
            for dtype in (jnp.float32, jnp.bfloat16):
                name = f"kernel {kind} {jnp.dtype(dtype).name} B,T,H={shape}"
                results.append(guarded(name, watchdog, check_kernel, kind, shape, dtype,
                                       settings["tiles"], interpret, rng))  # fmt: skip
            for reverse in (False, True):
                name = f"scan {kind} {'reverse' if reverse else 'forward'} B,T,H={shape}"
                results.append(guarded(name, watchdog, check_scan, kind, shape, reverse,
                                       settings["tiles"], interpret, rng))  # fmt: skip
    for kind in ("lstm", "gru_original"):  # one and two barriers per step
        shape = settings["check_shapes"][0]
        results.append(guarded(f"vmap over 5 seeds {kind} B,T,H={shape}", watchdog, check_vmap,
                               kind, shape, settings["tiles"], interpret, rng))  # fmt: skip


def guarded(name, watchdog, fn, *args) -> dict:
    watchdog.stage(name)
    try:
        result = fn(*args)
    except Exception as error:  # a kernel that does not lower is a result, not a crash
        traceback.print_exc()
        result = dict(ok=False, error=f"{type(error).__name__}: {str(error)[:300]}")
    result["name"] = name
    status = "ok" if result["ok"] else "FAILED"
    detail = result.get("error") or (
        f"fwd {result['forward']:.1e} grad {result['gradients']:.1e}"
        + ("" if result.get("finite", True) else " NaN left (unwritten output)")
        + ("" if result.get("repeatable", True) else " not repeatable (race)")
    )
    print(f"  {status:6} {name}: {detail}", flush=True)
    return result


# --- timings ------------------------------------------------------------------------------


def seqlab_fns(cell_name, shape, implementation, dtype):
    batch, steps, hidden = shape
    cell = seqlab.cells.make(cell_name, hidden_size=hidden)
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), cell.init(jax.random.key(0), hidden))
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden), dtype)

    def loss(params, xs):
        outputs, _ = seqlab.scan(cell, params, xs, implementation=implementation)
        return jnp.sum(outputs.astype(jnp.float32))

    return forward_and_backward(loss, params, xs)


def jax_cudnn_fns(shape):
    """LSTM through jax.experimental.rnn (cuDNN; float32 only)."""
    from jax.experimental import rnn

    batch, steps, hidden = shape
    weights = rnn.init_lstm_weight(jax.random.key(0), hidden, hidden, 1, False)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))
    h0 = jnp.zeros((1, batch, hidden))
    lengths = jnp.full((batch,), steps, jnp.int32)

    def loss(weights, xs):
        outputs, _, _ = rnn.lstm(xs, h0, h0, weights, lengths, hidden, hidden, 1, 0.0, False)
        return jnp.sum(outputs)

    return forward_and_backward(loss, weights, xs)


@dataclasses.dataclass
class Row:
    cell: str
    shape: tuple
    name: str
    forward_ms: float | None
    backward_ms: float | None
    note: str = ""


def competitors_for(cell_name, shape, settings, on_gpu) -> dict:
    """Name -> a function that builds (forward, fwd+bwd) timing closures."""
    from scan_throughput import flax_fns

    partial = functools.partial
    competitors = {}
    if on_gpu:
        competitors["torch cuDNN (TF32 default)"] = partial(torch_fns, cell_name, shape, bf16=False)
        competitors["torch cuDNN bf16"] = partial(torch_fns, cell_name, shape, bf16=True)
        if cell_name == "lstm":
            competitors["jax.experimental.rnn (cuDNN)"] = partial(jax_cudnn_fns, shape)
    else:
        competitors["torch (CPU)"] = partial(torch_fns, cell_name, shape, bf16=False)
    tiles = {"": settings["tiles"]} | {f", {k}": v for k, v in settings["variants"].items()}
    for label, variant in tiles.items():
        pallas = kernels.Pallas(tiles=variant, interpret=not on_gpu)
        for dtype in (jnp.float32, jnp.bfloat16):
            name = f"seqlab pallas {'f32' if dtype == jnp.float32 else 'bf16'}{label}"
            competitors[name] = partial(seqlab_fns, cell_name, shape, pallas, dtype)
    competitors["seqlab xla (hand-derived backward)"] = partial(
        seqlab_fns, cell_name, shape, "xla", jnp.float32
    )
    competitors["seqlab xla-autodiff"] = partial(
        seqlab_fns, cell_name, shape, "xla-autodiff", jnp.float32
    )
    # flax_fns also returns the compiled program's temp memory: the timing takes two
    competitors["flax.linen.RNN"] = lambda: flax_fns(cell_name, shape, 1)[:2]
    return competitors


def run_timings(settings, on_gpu, watchdog, rows: list[Row]) -> None:
    """Append each competitor's row to ``rows`` as it completes."""
    for shape in settings["time_shapes"]:
        for cell_name in settings["cells"]:
            competitors = competitors_for(cell_name, shape, settings, on_gpu)
            for name, make in competitors.items():
                watchdog.stage(f"time {cell_name} {shape} {name}")
                note = "" if on_gpu or "pallas" not in name else "interpret mode: not a speed"
                try:
                    forward, backward = make()
                    repeats = settings["repeats"]
                    forward_ms = median_ms(forward, repeats, warmups=2)
                    backward_ms = median_ms(backward, repeats, warmups=2)
                    row = Row(cell_name, shape, name, forward_ms, backward_ms, note)
                except Exception as error:
                    traceback.print_exc()
                    row = Row(cell_name, shape, name, None, None,
                              f"{type(error).__name__}: {str(error)[:200]}")  # fmt: skip
                rows.append(row)
                print(f"  {cell_name} {shape} {name}: {row.forward_ms} / {row.backward_ms} ms"
                      f" {row.note}", flush=True)  # fmt: skip


def table(rows: list[Row], limits: dict, on_gpu: bool) -> str:
    reference = "torch cuDNN (TF32 default)" if on_gpu else "torch (CPU)"
    lines = [
        "| cell | B, T, H | implementation | fwd ms | fwd+bwd ms | fwd vs ref | fwd+bwd vs ref "
        "| floor fwd / fwd+bwd ms | of floor | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(
            (r for r in rows if r.cell == row.cell and r.shape == row.shape
             and r.name == reference), None)  # fmt: skip
        bf16 = "bf16" in row.name
        rate = limits["matmul_bf16_tflops" if bf16 else "matmul_f32_default_tflops"]
        floors = [floor_ms(row.cell, row.shape, b, rate, limits["copy_gbs"], 2 if bf16 else 4)
                  for b in (False, True)]  # fmt: skip

        def ratio(mine, theirs):
            return f"{theirs / mine:.2f}x" if mine and theirs else "-"

        def fmt(value):
            return f"{value:.2f}" if value is not None else "-"

        fraction = f"{floors[1] / row.backward_ms:.0%}" if row.backward_ms else "-"
        lines.append(
            f"| {row.cell} | {', '.join(map(str, row.shape))} | {row.name} "
            f"| {fmt(row.forward_ms)} | {fmt(row.backward_ms)} "
            f"| {ratio(row.forward_ms, base and base.forward_ms)} "
            f"| {ratio(row.backward_ms, base and base.backward_ms)} "
            f"| {floors[0]:.2f} / {floors[1]:.2f} | {fraction} | {row.note} |"
        )
    lines.append("")
    lines.append(f"Ratios are {reference} time over this row's time (above 1: faster).")
    return "\n".join(lines)


@dataclasses.dataclass
class Report:
    """What the run has measured so far, and where it goes: ``gpu_scan_<preset>_<backend>
    [_<part>]_<date>.{md,json}`` in ``out``. Saved as each stage starts, so a run stopped
    from outside (a time limit) leaves what it had; the watchdog saves it before ending a
    hang."""

    out: str
    preset: str
    on_gpu: bool
    part: str = ""  # "checks" or "timings" when the run does only one of them
    limits: dict = dataclasses.field(default_factory=dict)
    checks: list[dict] = dataclasses.field(default_factory=list)
    rows: list[Row] = dataclasses.field(default_factory=list)
    recorded: dict | None = None  # provenance(), taken at the first save

    def progress(self, stage: str) -> None:
        self.save(f"the run had not finished '{stage}' when this was written")

    def hung(self, stage: str) -> None:
        self.save(f"the watchdog stopped the run in '{stage}' (a hang)")
        print(f"partial results written to {self.out}", flush=True)

    def save(self, incomplete: str | None = None) -> str:
        """Write both files; return the Markdown. ``incomplete`` says why the run has not
        finished (the report then holds what came before)."""
        if self.recorded is None:
            self.recorded = provenance()
        backend = jax.default_backend()
        device = jax.devices()[0]
        failed = [c["name"] for c in self.checks if not c["ok"]]
        date = datetime.date.today().isoformat()
        header = (
            f"# gpu_scan, preset {self.preset}, {date}\n\n"
            f"jax {jax.__version__}, {device.device_kind} ({backend}), "
            f"host {platform.machine()} with {os.cpu_count()} CPU cores\n\n"
            + (f"**Incomplete: {incomplete}** (everything below came before it)\n\n"
               if incomplete else "")
            + f"Ceilings: {json.dumps({k: round(v, 1) for k, v in self.limits.items()})}\n\n"
            f"Checks: {len(self.checks) - len(failed)} of {len(self.checks)} passed"
            + (f"; FAILED: {', '.join(failed)}" if failed else "")
            + "\n\n"
        )  # fmt: skip
        timings = self.rows and self.limits
        report = header + (
            table(self.rows, self.limits, self.on_gpu) if timings else "(no timings)"
        )
        out = pathlib.Path(self.out)
        out.mkdir(parents=True, exist_ok=True)
        part = f"_{self.part}" if self.part else ""
        stem = f"gpu_scan_{self.preset}_{backend}{part}_{date}"
        (out / f"{stem}.md").write_text(report + "\n" + provenance_markdown(self.recorded))
        saved = dict(
            ceilings=self.limits,
            checks=self.checks,
            rows=[dataclasses.asdict(r) for r in self.rows],
            incomplete=incomplete,
            jax=jax.__version__,
            device=device.device_kind,
            date=date,
            provenance=self.recorded,
        )
        (out / f"{stem}.json").write_text(json.dumps(saved, indent=1, default=float))
        return report


def main(argv=None) -> int:
    parser = preset_parser(__doc__.splitlines()[0], PRESETS)
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--skip-timings", action="store_true")
    args = parser.parse_args(argv)
    settings = PRESETS[args.preset]
    backend = jax.default_backend()
    on_gpu = backend == "gpu"
    if args.preset == "gpu" and not on_gpu:
        print("the gpu preset needs a GPU; use --preset ci here", file=sys.stderr)
        return 2
    if args.skip_checks and args.skip_timings:
        print("--skip-checks and --skip-timings leave nothing to run", file=sys.stderr)
        return 2
    part = "timings" if args.skip_checks else "checks" if args.skip_timings else ""
    report = Report(args.out, args.preset, on_gpu, part)  # filled as the stages complete
    watchdog = Watchdog(settings["watchdog_s"], on_expire=report.hung, on_stage=report.progress)
    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.device_kind} ({backend}), "
          f"{getattr(device, 'core_count', '?')} cores", flush=True)  # fmt: skip
    watchdog.stage("ceilings")
    report.limits.update(ceilings(settings["ceiling_size"], settings["repeats"]))
    print("  ceilings:", {k: round(v, 1) for k, v in report.limits.items()}, flush=True)
    if not args.skip_checks:
        print("checks:", flush=True)
        run_checks(settings, interpret=not on_gpu, watchdog=watchdog, results=report.checks)
    if not args.skip_timings:
        run_timings(settings, on_gpu, watchdog, report.rows)
    watchdog.stop()
    print(report.save())
    return 1 if any(not c["ok"] for c in report.checks) else 0


if __name__ == "__main__":
    sys.exit(main())
