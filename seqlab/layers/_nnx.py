"""Flax NNX modules around seqlab's pure-function layers and models.

The pure description stays the source of truth: the module only holds its parameters as
``nnx.Param`` leaves and calls ``apply``, so a seqlab layer drops into a Flax model and
trains with ``nnx.Optimizer`` like any other module.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx


def _is_variable(node) -> bool:
    return isinstance(node, nnx.Variable)


class NNXModule(nnx.Module):
    """Wrap any seqlab layer or model (``init(key, input_size)`` and ``apply``).

    Example::

        layer = seqlab.layers.RNNLayer(seqlab.cells.LSTM(64), num_layers=2, dropout=0.1)
        module = seqlab.layers.NNXModule(layer, input_size=16, rngs=nnx.Rngs(0))
        outputs, state = module(xs, seq_lengths=lengths)               # eval
        outputs, state = module(xs, seq_lengths=lengths, train=True)   # dropout keys from rngs

    Args:
      layer: the pure description.
      input_size: D, passed to ``layer.init``.
      rngs: ``nnx.Rngs``; its ``params`` stream initializes the parameters and its
        ``dropout`` stream (when present) draws the dropout keys in training.
    """

    def __init__(self, layer: Any, input_size: int, *, rngs: nnx.Rngs):
        self.layer = layer
        params = layer.init(rngs.params(), input_size)
        self.params = nnx.data(jax.tree_util.tree_map(nnx.Param, params))
        self.rngs = rngs

    @property
    def pure_params(self):
        """The parameters as plain arrays, in the layout ``layer.apply`` takes."""
        return jax.tree_util.tree_map(lambda v: v[...], self.params, is_leaf=_is_variable)

    def __call__(self, *args, train: bool = False, **kwargs):
        if train and "key" not in kwargs:
            kwargs["key"] = self.rngs.dropout()
        return self.layer.apply(self.pure_params, *args, train=train, **kwargs)
