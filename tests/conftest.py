"""Strict JAX settings for the whole test suite: silent broadcasts and promotions fail."""

import gc

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


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
