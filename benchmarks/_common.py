"""What the benchmark scripts share: the checkout on the import path, timing, errors, and
the provenance every result file records.

Importing this module first lets a script run from a checkout without seqlab installed
(``python benchmarks/gpu_scan.py`` on the device machine, where the tree is copied but
not installed): it puts the repository root on ``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# The packages whose versions a result records: seqlab itself, JAX and the libraries the
# benchmarks compare against or compile with.
PROVENANCE_PACKAGES = ("seqlab", "jax", "jaxlib", "flax", "optax", "optuna", "torch", "triton")


def provenance() -> dict:
    """Where and how this run ran, for the result files it writes (a JSON file's top-level
    ``"provenance"`` key; ``provenance_markdown`` for a Markdown file)::

        commit        git HEAD of the checkout, 40 hex digits ("unknown": no git, no repo)
        dirty         whether the checkout differs from it (None: unknown); untracked
                      files under benchmarks/results/ (results being written) do not count
        versions      {package: version or None when not installed}, PROVENANCE_PACKAGES
        python        the interpreter's version
        backend       jax.default_backend(): "cpu", "gpu", "tpu"
        device_kind   jax.devices()[0].device_kind
        device_count  jax.device_count()
        cpu_model     /proc/cpuinfo's "model name", else platform.processor() or machine()
        cpu_count     os.cpu_count()
        command       sys.argv, shell-quoted
        date          now, UTC, ISO 8601 to the second

    Never raises: a field that cannot be found is None (or "unknown" for the commit), so a
    benchmark still runs on a machine without git or without some package. Initializes
    JAX's backend if nothing has yet.
    """
    commit = _quietly(lambda: _git("rev-parse", "HEAD"))
    dirty = _quietly(
        lambda: any(
            not line.startswith("?? benchmarks/results/")
            for line in _git("status", "--porcelain").splitlines()
        )
    )
    return {
        "commit": commit if commit and len(commit) == 40 else "unknown",
        "dirty": dirty,
        "versions": {
            name: _quietly(lambda name=name: _version(name)) for name in PROVENANCE_PACKAGES
        },
        "python": platform.python_version(),
        "backend": _quietly(jax.default_backend),
        "device_kind": _quietly(lambda: jax.devices()[0].device_kind),
        "device_count": _quietly(jax.device_count),
        "cpu_model": _quietly(_cpu_model),
        "cpu_count": os.cpu_count(),
        "command": _quietly(lambda: shlex.join(sys.argv)),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def provenance_markdown(record: dict) -> str:
    """``record`` (from ``provenance()``) as a "## Provenance" section, to append to a
    Markdown result (it starts with a blank line and ends with a newline)."""
    versions = record.get("versions") or {}
    dirty = {True: " (dirty: uncommitted changes)", False: " (clean)"}.get(record.get("dirty"), "")
    lines = [
        "",
        "## Provenance",
        "",
        f"- commit: {record.get('commit')}{dirty}",
        "- versions: "
        + ", ".join(f"{name} {version or 'not installed'}" for name, version in versions.items()),
        f"- python: {record.get('python')}",
        f"- device: {record.get('device_count')} x {record.get('device_kind')} "
        f"(backend {record.get('backend')})",
        f"- cpu: {record.get('cpu_model')}, {record.get('cpu_count')} cores",
        f"- command: `{record.get('command')}`",
        f"- date: {record.get('date')}",
    ]
    return "\n".join(lines) + "\n"


def _quietly(find: Callable[[], object]):
    """``find()``, or None if it raises: provenance must never stop a benchmark."""
    try:
        return find()
    except Exception:
        return None


def _git(*arguments: str) -> str:
    result = subprocess.run(
        ["git", *arguments], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine() or None


def block(tree):
    """``tree`` once every array in it is computed."""
    return jax.tree_util.tree_map(lambda leaf: leaf.block_until_ready(), tree)


def interleaved_times(fns: dict, rounds: int, warmups: int) -> dict[object, list[float]]:
    """Each callable's ms in each round, called once per round in turn (so a slow stretch
    of a shared machine hits all of them), after ``warmups`` untimed calls of each (the
    first compiles)."""
    for fn in fns.values():
        for _ in range(warmups):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn, repeats: int, *, warmups: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls, after
    ``warmups`` untimed calls (the first compiles). ``fn`` must block until its work is
    done (``block``)."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max(max |expected|, 1e-30), in float64 (bfloat16 and
    float32 arrays are compared exactly as they are)."""
    actual = np.asarray(jnp.asarray(actual, jnp.float32), np.float64)
    expected = np.asarray(jnp.asarray(expected, jnp.float32), np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def forward_and_backward(loss, *args):
    """Two timed callables for ``loss(*args)``: the jitted forward pass, and the jitted
    gradient with respect to the first two arguments (parameters and inputs); each blocks
    until its result is computed."""
    forward = jax.jit(loss)
    backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return (lambda: block(forward(*args))), (lambda: block(backward(*args)))


def preset_parser(description: str, presets) -> argparse.ArgumentParser:
    """The command line every benchmark shares: ``--preset`` (default "ci", the size CI
    runs) and ``--out`` (default benchmarks/results)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", choices=sorted(presets), default="ci")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    return parser


def torch_fns(cell_name: str, shape, *, bf16: bool = False):
    """PyTorch's fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (cuDNN on a GPU, oneDNN on
    CPU) at (B, T, H) = ``shape``: timed (forward, forward+backward) callables, or None
    when torch is not installed."""
    try:
        import torch  # optional: only the benchmarks that compare against it need it
    except ImportError:
        return None
    batch, steps, hidden = shape
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if bf16 else torch.float32
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell_name](
        hidden, hidden, batch_first=True
    ).to(device, dtype)
    xs = torch.randn(batch, steps, hidden, device=device, dtype=dtype, requires_grad=True)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            module(xs)[0].float().sum()
        sync()

    def backward():
        module.zero_grad()
        xs.grad = None
        module(xs)[0].float().sum().backward()
        sync()

    return forward, backward
