"""Strict JAX settings for the whole test suite: silent broadcasts and promotions fail."""

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
