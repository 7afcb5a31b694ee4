"""The fused kernels compiled for a Hopper GPU without one (benchmarks/kernel_resources.py).

The Triton IR XLA would compile is taken from the kernels lowered for CUDA and compiled to
PTX and a cubin for sm_90 by PyPI's ``triton`` (skipped where it is not installed; CI
installs it; jax 0.10, 0.11 and 0.12 all hand XLA the IR, and a jax that compiled it while
lowering instead would skip them, saying so). They hold every kernel to: it compiles, it
does not spill, its matmuls run on tensor cores (TF32 for float32 at JAX's default
precision, none at "highest", bf16 for bfloat16), and its PTX carries the step barrier
exactly when a batch block has more than one program: acquire-release atomics at GPU scope,
volatile loads.
PyPI's Triton is not XLA's own, so this is a cross-check, not the GPU run.
"""

import pathlib
import sys

import jax
import pytest

pytest.importorskip("triton")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import kernel_resources  # noqa: E402

from seqlab import kernels  # noqa: E402

pytestmark = pytest.mark.skipif(
    not kernel_resources.triton_ir_available(),
    reason=f"jax {jax.__version__} does not hand XLA the Triton IR of Pallas kernels when "
    "lowering for CUDA: nothing to compile with PyPI's triton",
)
H100 = kernels.Tiles(max_programs=kernel_resources.H100_SMS)


def compiled(kind, batch, hidden, dtype, tiles=H100):
    found = kernel_resources.kernel_gradient_kernels(kind, batch, hidden, dtype, tiles)
    _, results = kernel_resources.compile_for_sm90(found)
    assert [kernel.name for kernel in found] == [
        f"seqlab_{'rnn' if kind in ('tanh', 'relu') else kind.split('_')[0]}_{d}"
        for d in ("forward", "backward")
    ]
    return found, results


@pytest.mark.parametrize(
    "kind, dtype, mma",
    [
        ("lstm", "float32", "wgmma.mma_async m64n32k8.f32.tf32.tf32"),
        ("lstm", "bfloat16", "wgmma.mma_async m64n32k16.f32.bf16.bf16"),
        ("gru", "float32", "wgmma.mma_async m64n32k8.f32.tf32.tf32"),
        ("gru_original", "bfloat16", "wgmma.mma_async m64n32k16.f32.bf16.bf16"),
        ("tanh", "float32", "wgmma.mma_async m64n32k8.f32.tf32.tf32"),
        ("relu", "bfloat16", "wgmma.mma_async m64n32k16.f32.bf16.bf16"),
    ],
)
def test_kernels_compile_for_sm90_without_spills_and_with_their_barrier(kind, dtype, mma):
    """B = 64, H = 256 on an H100 grid: 8 programs share the batch block, so both kernels
    need the barrier; the 64-row blocks make Hopper's warpgroup MMA fit."""
    found, results = compiled(kind, 64, 256, dtype)
    for kernel, result in zip(found, results, strict=True):
        assert result["ok"], result.get("error")
        assert kernel.grid == (1, 8, 1)
        assert result["local"] == 0 and result["stack"] == 0, "spills"
        assert result["registers"] <= kernel_resources.SM90_REGISTERS_PER_THREAD
        summary = kernel_resources.ptx_summary(result["ptx"])
        assert summary["tensor_core"] == [mma]
        assert kernel_resources.barrier_problems(summary, programs=8) == []
        assert summary["acq_rel_atomics"] > 0 and summary["volatile_loads"] > 0


def test_one_program_per_block_has_no_barrier_in_its_ptx():
    """With one program per batch block nothing waits on anyone: no atomics, plain loads."""
    found, results = compiled("gru_original", 16, 64, "float32", kernels.Tiles(max_programs=1))
    for kernel, result in zip(found, results, strict=True):
        assert result["ok"], result.get("error")
        assert kernel.grid == (1, 1, 1)
        summary = kernel_resources.ptx_summary(result["ptx"])
        assert summary["acq_rel_atomics"] == 0 and summary["volatile_loads"] == 0
        assert kernel_resources.barrier_problems(summary, programs=1) == []


def test_highest_precision_keeps_float32_off_tensor_cores():
    """Under ``jax.default_matmul_precision("highest")`` (how the tests compare with the
    references) no matmul is rounded to TF32."""
    with jax.default_matmul_precision("highest"):
        _, results = compiled("lstm", 64, 256, "float32")
    for result in results:
        assert result["ok"], result.get("error")
        assert "tf32" not in result["ptx"]
        assert result["local"] == 0


def test_the_barrier_check_reports_what_is_missing():
    summary = dict(acq_rel_atomics=0, other_atomics=0, volatile_loads=3, tensor_core=[])
    assert kernel_resources.barrier_problems(summary, programs=4) == [
        "no acq_rel atomics: the step barrier is missing"
    ]
    relaxed = dict(summary, acq_rel_atomics=2, other_atomics=1)
    assert kernel_resources.barrier_problems(relaxed, programs=4) == [
        "1 atomics that are not acq_rel at GPU scope"
    ]
    assert kernel_resources.barrier_problems(dict(relaxed, other_atomics=0), programs=1) == [
        "one program per block needs no barrier, yet atomics or volatile loads"
    ]


def test_vmapped_seed_groups_compile_with_their_barrier():
    """Five vmapped seeds on a 16-program budget run as groups of two copies side by side
    (a three-axis grid) and a remainder of one: every one of those kernels compiles and
    keeps the barrier. (Each copy gets its own counter because Pallas broadcasts an aliased
    input along the vmapped axis; that is jax's code, not asserted here.)"""
    steps, batch, hidden, seeds = 4, 32, 128, 5
    tiles = kernels.Tiles(block_batch=16, max_programs=16)
    lengths = jax.numpy.full((batch,), steps, jax.numpy.int32)

    def loss(projected, w_hh, h0, c0):
        hs, cs = kernels.lstm_recurrence(
            projected, w_hh, h0, c0, lengths, options=kernels.Pallas(tiles=tiles, interpret=False)
        )
        return jax.numpy.sum(hs) + jax.numpy.sum(cs)

    ones = jax.numpy.ones
    arrays = (
        ones((seeds, steps, batch, 4 * hidden)),
        ones((seeds, hidden, 4 * hidden)),
        ones((seeds, batch, hidden)),
        ones((seeds, batch, hidden)),
    )
    found = kernel_resources.triton_kernels(jax.vmap(jax.grad(loss, argnums=(0, 1, 2))), *arrays)
    assert sorted(kernel.grid for kernel in found) == sorted(
        [(2, 4, 2)] * 2 + [(2, 4, 1)] * 2
    )  # launch grids: 2 batch blocks, 4 programs each, 2 copies; then 1 copy alone
    _, results = kernel_resources.compile_for_sm90(found)
    for result in results:
        assert result["ok"], result.get("error")
        assert result["local"] == 0 and result["stack"] == 0
        summary = kernel_resources.ptx_summary(result["ptx"])
        assert kernel_resources.barrier_problems(summary, programs=4) == []
