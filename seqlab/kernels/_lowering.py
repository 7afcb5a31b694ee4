"""Lowering the kernels for a GPU on a machine that has none (ahead-of-time checks).

``jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",))`` builds the Triton IR of
every Pallas kernel in ``f`` without a GPU. The Triton lowering needs to know which GPU it
targets (the compute capability decides, for example, which matrix instructions a dot
becomes), and jax versions find that out differently:

- jax 0.10 looks for a local GPU and, when there is none, assumes compute capability 9.0
  (Hopper).
- jax 0.11 and 0.12 read the target from the abstract device of the current abstract mesh
  (``jax.sharding.use_abstract_mesh``) when there is one, else from the local GPU, and
  raise "No supported GPU devices found, please specify an abstract GPU device using
  AbstractDevice" when there is neither.

``lower_for_gpu`` takes the abstract-device route wherever the Triton lowering reads it
(naming the device explicitly) and the plain route elsewhere. Either way the custom call
carries the Triton IR (``__gpu$xla.gpu.triton``) for XLA to compile.
"""

from __future__ import annotations

import contextlib
import importlib.util

import jax

from seqlab._checks import require

#: The device kind of an H100 SXM as jax reports it; jax 0.11 on maps it to sm_90.
H100 = "NVIDIA H100 80GB HBM3"
H100_SMS = 132  # streaming multiprocessors of an H100 SXM


def abstract_device_route() -> bool:
    """Whether this jax's Pallas Triton lowering takes its target from an abstract device
    (jax 0.11 on, where the lowering asks ``jax._src.pallas.triton.gpu_info``)."""
    try:
        return importlib.util.find_spec("jax._src.pallas.triton.gpu_info") is not None
    except ImportError:  # no Pallas Triton backend at all
        return False


def gpu_target(device_kind: str = H100, num_cores: int | None = H100_SMS):
    """A context in which lowering for CUDA targets ``device_kind`` (a name as
    ``jax.Device.device_kind`` spells it, e.g. ``"NVIDIA H100 80GB HBM3"``).

    On a jax without abstract devices this is a no-op, and the Triton lowering falls back
    to compute capability 9.0 by itself, so only an H100-class target (the default) is
    accepted there."""
    require(
        isinstance(device_kind, str) and device_kind.startswith("NVIDIA"),
        f"device_kind must be an NVIDIA device kind such as {H100!r}, got {device_kind!r}",
    )
    if not abstract_device_route():
        require(
            any(name in device_kind for name in ("H100", "H200", "GH200")),
            f"jax {jax.__version__} lowers Pallas Triton kernels without a GPU for sm_90 "
            f"only (it has no abstract devices), so it cannot target {device_kind!r}",
        )
        return contextlib.nullcontext()
    device = jax.sharding.AbstractDevice(
        device_kind=device_kind, num_cores=num_cores, platform="gpu"
    )
    mesh = jax.sharding.AbstractMesh((1,), ("gpu",), abstract_device=device)
    return jax.sharding.use_abstract_mesh(mesh)


def lower_for_gpu(function, *args, device_kind: str = H100) -> jax.stages.Lowered:
    """``jax.jit(function)`` traced with ``args`` and lowered for CUDA, GPU or not.

    ``args`` may be arrays or ``jax.ShapeDtypeStruct``s. The result's ``as_text()`` holds
    each Pallas kernel as a ``__gpu$xla.gpu.triton`` custom call carrying its Triton IR; it
    is not compiled to PTX (``benchmarks/kernel_resources.py`` does that with PyPI's
    Triton)."""
    with gpu_target(device_kind):
        return jax.jit(function).trace(*args).lower(lowering_platforms=("cuda",))
