"""What the benchmark scripts share: the checkout on the import path, timing, errors.

Importing this module first lets a script run from a checkout without seqlab installed
(``python benchmarks/gpu_scan.py`` on the device machine, where the tree is copied but
not installed): it puts the repository root on ``sys.path``.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def block(tree):
    """``tree`` once every array in it is computed."""
    return jax.tree_util.tree_map(lambda leaf: leaf.block_until_ready(), tree)


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
