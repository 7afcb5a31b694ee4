"""Padding past each sequence's length: the valid-step mask, and inputs made inert there.

Shared by every front door that takes ``seq_lengths`` (``seqlab.scan``,
``seqlab.parallel.convergence``), so that no implementation ever sees what the padding of
``xs`` holds.
"""

from __future__ import annotations

import jax.numpy as jnp

from seqlab.typing import Array


def valid_steps(seq_lengths: Array, num_steps: int) -> Array:
    """(T, B) bool, time-major: step t of sequence b is valid when t < seq_lengths[b].

    ``seq_lengths`` must already be int32 (``seqlab._checks.check_seq_lengths``): a time
    index in a narrower dtype would wrap."""
    return jnp.arange(num_steps, dtype=jnp.int32)[:, None] < seq_lengths[None, :]


def zero_padding(xs: Array, seq_lengths: Array | None) -> Array:
    """Time-major ``xs`` (T, B, ...) with every step past its sequence's length set to 0.

    Outputs past a length are zero and carries frozen whatever the padding holds, but a
    gradient is a product: NaN or inf in the padding times a zero cotangent is NaN (the
    input-weight gradient ``xsᵀ · d_pre``, autodiff's ``where``). Zeroing the inputs with
    ``where`` (whose gradient is exactly zero at padded steps) keeps padding content out
    of every forward and backward computation, in every implementation.
    """
    if seq_lengths is None:
        return xs
    valid = valid_steps(seq_lengths, xs.shape[0])
    return jnp.where(valid.reshape(valid.shape + (1,) * (xs.ndim - 2)), xs, jnp.zeros_like(xs))
