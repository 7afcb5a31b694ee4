"""Strict JAX settings for the whole test suite: silent broadcasts and promotions fail.

One persistent compilation cache for a whole test run: the controller (or the lone
process, without xdist) makes a fresh folder and puts it in the environment, which every
xdist worker and every subprocess a test starts (the command line, sweep workers, killed
and resumed runs) inherits; identical programs are then compiled once per run instead of
once per process. It starts empty each run, so no result depends on an earlier run, and
the controller removes it at the end.
"""

import gc
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

CACHE_VARIABLES = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
if "SEQLAB_TEST_JAX_CACHE" not in os.environ:  # the controller, or a run without xdist
    os.environ["SEQLAB_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="seqlab-tests-jax-cache-")
    os.environ["SEQLAB_TEST_JAX_CACHE_OWNER"] = str(os.getpid())
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["SEQLAB_TEST_JAX_CACHE"]
    os.environ.update(CACHE_VARIABLES)
jax.config.update("jax_compilation_cache_dir", os.environ["SEQLAB_TEST_JAX_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# XLA's CPU backend at optimization level 0: the suite's programs are tiny, so compiling
# them is most of its time, and level 0 compiles them about 40% faster (tests/test_parallel_
# precision.py and tests/test_hand_derived.py: 361 against 217 s of CPU). Numbers are
# compared against references with tolerances, never against default-level timings; the
# benchmarks (.ci/run runs every CI preset) compile at the default level. Read when the
# backend starts, so set before any test computes; subprocesses inherit it
# (tests/helpers.py's xla_flags keeps it when a test adds flags).
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
    ).strip()

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


# Test files, slowest first (CPU seconds on the 2-core machine, 2026-12-03): xdist's
# loadfile mode hands files to workers in collection order, so the longest start first and
# the run does not end with one worker on a long file while the other waits. Files not
# listed follow in their usual order.
SLOWEST_FIRST = (
    "test_parallel",
    "test_experiments",
    "test_cli",
    "test_hand_derived",
    "test_sweep_workers",
    "test_kernels",
    "test_parallel_precision",
    "test_unroll",
    "test_distributed",
    "test_models",
)


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable within a file


def pytest_sessionfinish(session):
    if os.environ.get("SEQLAB_TEST_JAX_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["SEQLAB_TEST_JAX_CACHE"], ignore_errors=True)


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed, for random (never zero) test inputs."""
    return np.random.default_rng(20261124)


@pytest.fixture
def standard_promotion():
    """optax's Adam mixes int32 step counts with floats: relax promotion for training tests
    (seqlab's own code stays under the strict setting everywhere else)."""
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Drop every compiled program after each test module.

    XLA's CPU backend maps hundreds of memory regions per compiled program (about 480 for
    a parallel-scan gradient, measured with /proc/self/maps), and Linux allows 65,530 per
    process by default: one process running the whole suite crashed with a segmentation
    fault in XLA's compiler once tests/test_parallel.py had added its programs. Nothing
    is shared between modules, so clearing costs no recompilation that matters.
    """
    yield
    jax.clear_caches()
    gc.collect()
