"""Shared test helpers."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

import seqlab

# Every built-in cell configuration the core tests run over.
CELLS = {
    "rnn_tanh": seqlab.cells.RNN(6),
    "rnn_relu": seqlab.cells.RNN(6, activation="relu"),
    "rnn_identity": seqlab.cells.RNN(6, activation="identity"),
    "lstm": seqlab.cells.LSTM(6),
    "lstm_proj": seqlab.cells.LSTM(6, proj_size=4),
    "gru_cudnn": seqlab.cells.GRU(6),
    "gru_original": seqlab.cells.GRU(6, variant="original"),
    "mgu": seqlab.cells.MGU(6),
}


def random_params(cell, key, input_size, scale=0.3):
    """``cell.init`` plus random noise on every leaf, so no bias is zero."""
    params = cell.init(key, input_size)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [
        leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def to_float64(tree):
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, jnp.float64), tree)


def xla_flags(*flags: str) -> str:
    """``XLA_FLAGS`` for a subprocess: the suite's own (tests/conftest.py) plus ``flags``."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()
