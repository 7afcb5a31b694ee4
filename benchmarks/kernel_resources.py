"""What each fused kernel costs a Hopper SM, found without a GPU: registers, spills, shared memory.

Each kernel (forward and backward) is lowered for CUDA on this machine, as
tests/test_kernels.py::TestLowering does; the Triton IR that XLA would compile is taken
from the lowered custom call, with its ``num_warps`` and ``num_stages``, and compiled to PTX
and a cubin for sm_90 by the ``triton`` package from PyPI (its bundled ``ptxas``), in a
subprocess so that its LLVM stays apart from jaxlib's. Per kernel it reports registers per
thread, local memory (spills), shared memory, the tensor-core instructions the matmuls
became, and whether the PTX carries the step barrier as designed: acquire-release atomics
at GPU scope and volatile loads of the shared state, both only when a batch block has more
than one program.

Caveat: PyPI's Triton is not the Triton inside XLA, so a kernel that compiles here could
still fail there, and the numbers can differ. It is a cross-check until a GPU runs
``gpu_scan.py``, and a quick way to see which tile settings spill.

    pip install triton==3.9.0
    python benchmarks/kernel_resources.py --preset ci     # ~1 min: every kernel, H100 grid
    python benchmarks/kernel_resources.py --preset tiles  # block_hidden x num_warps, LSTM

Writes ``kernel_resources_<preset>_<date>.{md,json}`` to ``--out`` (default
benchmarks/results). Exit status 1 when, in the ``ci`` preset (the default tiles), a kernel
fails to compile, spills, or its PTX lacks the barrier it needs (the ``tiles`` survey only
reports them); 2 when ``triton`` is not installed or this jax does not hand XLA the Triton
IR. jax 0.10, 0.11 and 0.12 all do (``seqlab.kernels.lower_for_gpu`` names the H100 as the
target where jax asks for one, 0.11 on).
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
from _common import (  # (also puts the checkout on sys.path)
    preset_parser,
    provenance,
    provenance_markdown,
)
from gpu_scan import KINDS, kernel_pair  # noqa: E402

from seqlab import kernels  # noqa: E402
from seqlab.kernels import testing  # noqa: E402
from seqlab.kernels._lowering import H100_SMS  # noqa: E402  (one program per SM resident)

SM90_REGISTERS_PER_THREAD = 255

PRESETS = {
    # (B, H) of the three anchor shapes in gpu_scan.py; T does not change the kernels' code.
    "ci": dict(
        shapes=[(64, 1024), (16, 512), (64, 256)],
        kinds=list(KINDS),
        dtypes=["float32", "bfloat16"],
        tiles=[kernels.Tiles(max_programs=H100_SMS)],
        strict=True,  # the default tiles: every kernel must be clean
    ),
    "tiles": dict(
        shapes=[(64, 1024)],
        kinds=["lstm", "gru_original"],
        dtypes=["float32", "bfloat16"],
        tiles=[
            kernels.Tiles(block_hidden=bh, block_k=bk, num_warps=w, max_programs=H100_SMS)
            for bh in (16, 32, 64)
            for bk in (32, 64)
            for w in (4, 8)
        ],
        strict=False,  # a survey: some settings are expected to spill
    ),
}


@dataclasses.dataclass(frozen=True)
class TritonKernel:
    """One kernel as XLA would receive it: its Triton IR and launch settings."""

    name: str
    ir: str
    num_warps: int
    num_stages: int
    grid: tuple[int, int, int]


def triton_kernels(function, *args) -> list[TritonKernel]:
    """The Triton kernels in ``jax.jit(function)(*args)`` lowered for CUDA, in order.

    Reads the ``__gpu$xla.gpu.triton`` custom calls of the lowered StableHLO (their
    backend config holds the Triton module as MLIR bytecode) and prints each module as
    text, which other MLIR versions can parse where the bytecode would not."""
    from jax._src.interpreters import mlir
    from jax._src.lib.mlir import ir
    from jax._src.lib.triton import dialect as triton_dialect

    lowered = kernels.lower_for_gpu(function, *args)
    module = lowered.compiler_ir("stablehlo")
    context = mlir.make_ir_context()
    triton_dialect.register_dialect(context)
    found = []

    def visit(operation):
        operation = getattr(operation, "operation", operation)
        if operation.name == "stablehlo.custom_call":
            target = ir.StringAttr(operation.attributes["call_target_name"]).value
            if target == "__gpu$xla.gpu.triton":
                config = ir.DictAttr(operation.attributes["mhlo.backend_config"])
                data = ir.StringAttr(config["ir"]).value_bytes
                triton_module = ir.Module.parse(data, context=context)

                def number(key):
                    return ir.IntegerAttr(config[key]).value

                found.append(
                    TritonKernel(
                        name=ir.StringAttr(config["name"]).value,
                        ir=triton_module.operation.get_asm(enable_debug_info=False),
                        num_warps=number("num_warps"),
                        num_stages=number("num_stages"),
                        grid=(number("grid_x"), number("grid_y"), number("grid_z")),
                    )
                )
        for region in operation.regions:
            for block in region.blocks:
                for inner in block.operations:
                    visit(inner)

    visit(module.operation)
    return found


def kernel_gradient_kernels(kind: str, batch: int, hidden: int, dtype, tiles) -> list:
    """The forward and backward Triton kernels of one recurrence (T = 4, lowered for CUDA)."""
    kernel, _, gates = kernel_pair(kind, tiles, False)
    steps = 4
    dtype = jnp.dtype(dtype)
    arrays = (
        jnp.ones((steps, batch, gates * hidden), dtype),
        jnp.ones((hidden, gates * hidden), dtype),
        jnp.ones((batch, hidden), jnp.float32),
        jnp.ones((batch, hidden), jnp.float32),
    )
    lengths = jnp.full((batch,), steps, jnp.int32)

    def loss(*a):
        leaves = jax.tree_util.tree_leaves(kernel(*a, lengths))
        return sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in leaves)

    found = triton_kernels(jax.grad(loss, argnums=(0, 1, 2)), *arrays)
    if len(found) != 2:
        raise RuntimeError(
            f"expected a forward and a backward Triton kernel in the lowered gradient, found "
            f"{len(found)}: this jax ({jax.__version__}) does not hand XLA the Triton IR "
            "(jax 0.10 to 0.12 do), so there is nothing to read"
        )
    return found


def triton_ir_available() -> bool:
    """Whether this jax lowers the kernels to Triton IR that this tool can read (jax 0.10,
    0.11 and 0.12 do; jax 0.10.2's source has a branch for later jaxlibs that would compile
    it to PTX while lowering instead, and no released jaxlib up to 0.12 takes it)."""
    try:
        kernel_gradient_kernels("tanh", 16, 32, "float32", kernels.Tiles())
    except Exception:  # the RuntimeError above, or a lowering that compiles and fails
        return False
    return True


# --- compiling with PyPI's Triton, in a subprocess -----------------------------------------

_COMPILE = r"""
import json, os, pathlib, re, subprocess, sys
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
import triton
from triton.backends.compiler import GPUTarget

folder = pathlib.Path(sys.argv[1])
tools = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
results = []
for job in json.loads((folder / "jobs.json").read_text()):
    try:
        compiled = triton.compile(
            str(folder / job["file"]), target=GPUTarget("cuda", 90, 32),
            options=dict(num_warps=job["num_warps"], num_stages=job["num_stages"]),
        )
        cubin = folder / (job["file"] + ".cubin")
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", str(cubin)],
                               capture_output=True, text=True, check=True).stdout
        found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
        results.append(dict(ok=True, registers=int(found[1]), stack=int(found[2]),
                            local=int(found[4]), shared=int(compiled.metadata.shared),
                            ptx=compiled.asm["ptx"]))
    except Exception as error:
        results.append(dict(ok=False, error=f"{type(error).__name__}: {str(error)[:500]}"))
print(json.dumps(dict(triton=triton.__version__, results=results)))
"""


def triton_available() -> bool:
    result = subprocess.run(
        [sys.executable, "-c", "import triton"], capture_output=True, text=True, check=False
    )
    return result.returncode == 0


def compile_for_sm90(found: list[TritonKernel]) -> tuple[str, list[dict]]:
    """Compile each kernel with PyPI's Triton for sm_90: (triton version, one dict each:
    ok, registers, local (spilled bytes per thread), stack, shared (bytes), ptx; or error)."""
    with tempfile.TemporaryDirectory() as folder:
        jobs = []
        for index, kernel in enumerate(found):
            name = f"kernel{index}.ttir"
            (pathlib.Path(folder) / name).write_text(kernel.ir)
            jobs.append(dict(file=name, num_warps=kernel.num_warps, num_stages=kernel.num_stages))
        (pathlib.Path(folder) / "jobs.json").write_text(json.dumps(jobs))
        environment = dict(os.environ, TRITON_CACHE_DIR=str(pathlib.Path(folder) / "cache"))
        result = subprocess.run(
            [sys.executable, "-c", _COMPILE, folder],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"the Triton compile subprocess failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["triton"], report["results"]


def ptx_summary(ptx: str) -> dict:
    """What the PTX says about the barrier and the matmuls."""
    return dict(
        acq_rel_atomics=len(re.findall(r"atom\.global\.gpu\.acq_rel\.add", ptx)),
        other_atomics=len(re.findall(r"atom\.(?!global\.gpu\.acq_rel\.add)", ptx)),
        volatile_loads=len(re.findall(r"ld\.volatile\.global", ptx)),
        cta_barriers=len(re.findall(r"\bbar\.sync\b|\bbarrier\.sync\b", ptx)),
        tensor_core=sorted(
            {
                f"{kind} {shape}"
                for kind, shape in re.findall(
                    r"\b(wgmma\.mma_async|mma)\.sync\.aligned\.([\w.]+)", ptx
                )
            }
        ),
    )


def barrier_problems(summary: dict, programs: int) -> list[str]:
    """Why the PTX does not match the barrier design for a grid with ``programs`` per block."""
    problems = []
    if summary["other_atomics"]:
        problems.append(f"{summary['other_atomics']} atomics that are not acq_rel at GPU scope")
    if programs > 1:
        if not summary["acq_rel_atomics"]:
            problems.append("no acq_rel atomics: the step barrier is missing")
        if not summary["volatile_loads"]:
            problems.append("no volatile loads: shared state could be read from a stale L1")
    elif summary["acq_rel_atomics"] or summary["volatile_loads"]:
        problems.append("one program per block needs no barrier, yet atomics or volatile loads")
    return problems


def problems_of(result: dict, programs: int) -> list[str]:
    """What is wrong with one compiled kernel (empty when nothing is)."""
    if not result["ok"]:
        return ["does not compile"]
    problems = []
    if result["local"] or result["stack"]:
        problems.append(
            f"spills ({result['stack']} B stack frame, {result['local']} B local per thread)"
        )
    if result["registers"] > SM90_REGISTERS_PER_THREAD:
        problems.append("more registers than a thread may hold")
    return problems + barrier_problems(ptx_summary(result["ptx"]), programs)


def describe(row: dict) -> str:
    """One progress line."""
    head = (
        f"  {row['kind']:12} {row['dtype']:8} B={row['batch']:3} H={row['hidden']:4} "
        f"{row['direction']} bh={row['block_hidden']} bk={row['block_k']} "
        f"warps={row['num_warps']}: "
    )
    if not row["ok"]:
        return head + row["error"]
    return (
        head
        + f"{row['registers']} regs, {row['stack']} B stack, {row['local']} B local, "
        + f"{row['shared']} B shared, {row['tensor_core']}"
        + (f"  PROBLEMS: {row['problems']}" if row["problems"] else "")
    )


def measure(preset: dict) -> list[dict]:
    """Compile every (shape, tiles, kind, dtype) of the preset; one row per kernel."""
    rows = []
    for (batch, hidden), tiles, kind, dtype in itertools.product(
        preset["shapes"], preset["tiles"], preset["kinds"], preset["dtypes"]
    ):
        layout = testing.make_layout(4, batch, hidden, tiles, interpret=False)
        found = kernel_gradient_kernels(kind, batch, hidden, dtype, tiles)
        _, results = compile_for_sm90(found)
        for direction, kernel, result in zip(("fwd", "bwd"), found, results, strict=True):
            row = dict(
                kind=kind,
                dtype=dtype,
                batch=batch,
                hidden=hidden,
                direction=direction,
                block_batch=layout.tiles.block_batch,
                block_hidden=tiles.block_hidden,
                block_k=tiles.block_k,
                num_warps=kernel.num_warps,
                grid=list(kernel.grid),
                programs_per_block=layout.hidden_programs,
            )
            row.update({key: value for key, value in result.items() if key != "ptx"})
            if result["ok"]:
                row.update(ptx_summary(result["ptx"]))
            row["problems"] = problems_of(result, layout.hidden_programs)
            rows.append(row)
            print(describe(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| kernel | dtype | B, H | tiles (bb, bh, bk, warps) | grid | regs | stack, local B "
        "| shared B | tensor cores | barrier in PTX | problems |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        barrier = (
            f"{r['acq_rel_atomics']} acq_rel atom, {r['volatile_loads']} ld.volatile"
            if r["ok"]
            else "-"
        )
        lines.append(
            f"| {r['kind']} {r['direction']} | {r['dtype']} | {r['batch']}, {r['hidden']} "
            f"| {r['block_batch']}, {r['block_hidden']}, {r['block_k']}, {r['num_warps']} "
            f"| {tuple(r['grid'])} | {r.get('registers', '-')} "
            f"| {r.get('stack', '-')}, {r.get('local', '-')} "
            f"| {r.get('shared', '-')} | {', '.join(r.get('tensor_core', [])) or '-'} "
            f"| {barrier} | {'; '.join(r['problems']) or '-'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args(argv)
    if not triton_available():
        print("kernel_resources needs the triton package: pip install triton", file=sys.stderr)
        return 2
    if not triton_ir_available():
        print(
            f"kernel_resources reads the Triton IR that jax hands to XLA in the lowered "
            f"custom call; jax {jax.__version__} does not (it compiles while lowering, or "
            "the lowering failed)",
            file=sys.stderr,
        )
        return 2
    rows = measure(PRESETS[args.preset])
    version, _ = compile_for_sm90([])
    date = datetime.date.today().isoformat()
    failing = [r for r in rows if r["problems"]]
    report = (
        f"# kernel_resources, preset {args.preset}, {date}\n\n"
        f"jax {jax.__version__} lowering for CUDA on {platform.machine()} "
        f"({os.cpu_count()} CPU cores, no GPU); compiled for sm_90 by triton {version} from "
        "PyPI, not XLA's own Triton. Grids as on an H100 (132 programs resident).\n\n"
        f"{len(rows) - len(failing)} of {len(rows)} kernels compile without spills and carry "
        "the barrier they need.\n\n" + table(rows) + "\n"
    )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"kernel_resources_{args.preset}_{date}"
    recorded = provenance()
    (out / f"{stem}.md").write_text(report + provenance_markdown(recorded))
    (out / f"{stem}.json").write_text(
        json.dumps(
            dict(jax=jax.__version__, triton=version, date=date, rows=rows, provenance=recorded),
            indent=1,
        )
    )
    print(report)
    return 1 if failing and PRESETS[args.preset]["strict"] else 0


if __name__ == "__main__":
    sys.exit(main())
