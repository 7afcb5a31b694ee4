"""Gradient norms over tree depth: ‖∂L/∂h_node‖ for every node of a batch of trees."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import require
from seqlab.trees import TreeBatch, tree_scan


def tree_grad_norms(cell, params, batch: TreeBatch, loss_fn, *, inputs=None, numpy=True):
    """‖∂L/∂h_node‖₂ for every node, with L = ``loss_fn(node_states, root_states)``.

    ∂L/∂h_node is the total derivative through the node's parent, grandparent, ... up to
    the root and through any loss on the node itself, computed in one backward pass by a
    zero perturbation of every node's state (``tree_scan(perturbation=)``); h is the
    cell's ``output`` part of the state (for the Tree-LSTMs, h and not c).

    Returns:
      (norms, depth): (B, N) norms (float64 NumPy unless ``numpy=False``; exactly 0 on
      padding nodes) and (B, N) int depth of each node from its root (-1 on padding).
      ``norms_by_depth`` lines them up for ``seqlab.analysis.fit_decay_rate``.
    """
    node_states, _ = jax.eval_shape(lambda p: tree_scan(cell, p, batch, inputs=inputs), params)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), node_states)

    def loss(perturbation):
        nodes, roots = tree_scan(cell, params, batch, inputs=inputs, perturbation=perturbation)
        return loss_fn(nodes, roots)

    grads = jax.grad(loss)(zeros)
    h = cell.output(grads) if hasattr(cell, "output") else grads
    norms = jnp.sqrt(jnp.sum(jnp.square(h.astype(jnp.float32)), axis=-1))
    if not numpy:
        return norms, jnp.asarray(batch.depth)
    return np.asarray(norms, np.float64), np.asarray(batch.depth)


def norms_by_depth(norms, depth) -> tuple[np.ndarray, np.ndarray]:
    """(means (D,), counts (D,)): the mean norm over the nodes at each depth d = 0 .. D - 1
    from the root (padding excluded), and how many nodes there are."""
    norms, depth = np.asarray(norms, np.float64), np.asarray(depth)
    require(norms.shape == depth.shape, f"norms {norms.shape} and depth {depth.shape} differ")
    real = depth >= 0
    span = int(depth.max(initial=-1)) + 1
    counts = np.bincount(depth[real], minlength=span)
    totals = np.bincount(depth[real], weights=norms[real], minlength=span)
    return totals / np.maximum(counts, 1), counts
