"""``tree_scan``: a tree cell over a batch of trees, one vectorized step per level.

Every real node is first computed as a leaf (its children absent), in one step over all
B·N nodes, with the input projection hoisted when the cell offers it. Then a
``lax.scan`` over the levels 1 .. L - 1 (``TreeBatch.order``) gathers the children's
states of that level's nodes across the whole batch, runs the cell once on the (B, W)
nodes, and writes their states as one block of a state table (``dynamic_update_slice``;
each node knows the row its state lands in). The sequential depth is the tallest tree's
height, not the node count; ``jax.grad`` through it is backpropagation through structure.
Each level is as wide as the widest level of any tree in the batch (W): the padding slots
compute and are never read.
Padding nodes are never read: where their inputs are NaN, outputs and gradients stay
finite and unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import is_concrete, require
from seqlab.trees._batch import TreeBatch
from seqlab.trees._cells import ChildSumTreeLSTM, TreeGRU, is_tree_cell


def _fit_arity(cell, children):
    """``children`` (B, N, K) with K widened or cut to the cell's fixed arity, if any. A
    concrete batch (NumPy, or JAX outside a trace) with more slots than the arity is cut
    when the extra slots are empty: bucketed batches round K up."""
    arity = getattr(cell, "arity", None)
    have = children.shape[-1]
    if arity is None or arity == have:
        return jnp.asarray(children)
    if have < arity:
        children = jnp.asarray(children)
        pad = jnp.full((*children.shape[:-1], arity - have), -1, children.dtype)
        return jnp.concatenate([children, pad], axis=-1)
    if is_concrete(children):
        host = np.asarray(children)
        used = int(np.max(np.sum(host >= 0, axis=-1)))
        require(
            bool(np.all(host[..., arity:] < 0)),
            f"a node has {used} children, above the arity {arity} of {type(cell).__name__}",
        )
        return jnp.asarray(host[..., :arity])
    raise ValueError(
        f"the batch has {have} child slots, above the arity {arity} of {type(cell).__name__}, "
        "and is traced: pad it with arity=<= the cell's, or pass it to jit as a constant"
    )


def tree_scan(
    cell, params, batch: TreeBatch, *, inputs=None, remat: bool = False, perturbation=None
):
    """Run ``cell`` over every tree of ``batch``.

    Args:
      cell: a tree cell (``seqlab.trees.ChildSumTreeLSTM``, ..., or a ``TreeCell``).
      params: its parameters.
      batch: a ``TreeBatch`` (NumPy or JAX arrays).
      inputs: (B, N, D) float node inputs; defaults to ``batch.inputs``, which must then
        be float vectors. Every real node reads its row: to give token ids' inner nodes
        (id 0) no input, embed with ``seqlab.layers.Embedding``, whose row 0 is zeros.
        Rows of padding nodes are never read.
      remat: recompute each level's step in the backward pass instead of saving its
        intermediates (``jax.checkpoint``), for deep trees.
      perturbation: None, or a state-shaped tree of (B, N, ...) arrays added to each
        node's state as it is computed (before its parent reads it): the gradient of a
        loss with respect to a zero perturbation is ∂L/∂state of every node
        (``seqlab.analysis.tree_grad_norms``).

    Returns:
      (node_states, root_states): the cell's state at every node, leaves (B, N, ...)
      (padding nodes hold the leaf state), and at each tree's root, leaves (B, ...).
    """
    require(is_tree_cell(cell), f"tree_scan needs a tree cell, got {type(cell).__name__}")
    require(isinstance(batch, TreeBatch), f"batch must be a TreeBatch, got {type(batch).__name__}")
    xs = batch.inputs if inputs is None else inputs
    require(
        hasattr(xs, "ndim") and xs.ndim == 3 and jnp.issubdtype(xs.dtype, jnp.floating),
        f"tree_scan needs float inputs of shape (B, N, D), got "
        f"{getattr(xs, 'shape', type(xs).__name__)} {getattr(xs, 'dtype', '')}: embed token "
        "ids first",
    )
    b, n, _ = batch.children.shape
    require(
        tuple(xs.shape[:2]) == (b, n),
        f"inputs of shape {tuple(xs.shape)} do not fit a batch of {b} trees of {n} nodes",
    )
    if all(is_concrete(a) for a in (batch.children, batch.level, batch.order, batch.root)):
        batch.validate()  # a hand-built batch: wrong structure would give wrong numbers
    width = params.get("w_ih") if isinstance(params, dict) else None
    require(
        width is None or width.shape[0] == xs.shape[-1],
        f"inputs have {xs.shape[-1]} features; the cell's parameters expect "
        f"{getattr(width, 'shape', [None])[0]}",
    )
    children = _fit_arity(cell, batch.children)
    k = children.shape[-1]
    total = b * n  # flat node ids 0 .. total - 1; row `total` of the table: the absent child
    valid = jnp.asarray(batch.level) >= 0
    xs = jnp.where(valid[..., None], xs, jnp.zeros_like(xs)).reshape(total, -1)
    hoisted = hasattr(cell, "project_inputs") and hasattr(cell, "node_step_projected")
    if hoisted:
        xs = cell.project_inputs(params, xs)
        step = cell.node_step_projected
    else:
        step = cell.node_step
    xs = jnp.concatenate([xs, jnp.zeros_like(xs[:1])])

    absent = cell.leaf_state(params, ())
    # every real node as a leaf, at once (the built-in child-sum cells with no child slots
    # at all: a leaf's absent children cost nothing then; any other cell gets K absent
    # slots, as its contract promises)
    slots = 0 if isinstance(cell, ChildSumTreeLSTM | TreeGRU) else k
    no_children = jax.tree.map(lambda a: jnp.broadcast_to(a, (total, slots, *a.shape)), absent)
    as_leaves = step(params, xs[:total], no_children, jnp.zeros((total, slots), bool))
    if perturbation is not None:
        extra = jax.tree.map(lambda p: jnp.reshape(p, (total, *p.shape[2:])), perturbation)
        extra = jax.tree.map(lambda e: jnp.concatenate([e, jnp.zeros_like(e[:1])]), extra)
        as_leaves = jax.tree.map(lambda s, e: s + e[:total], as_leaves, extra)
    flat_valid = valid.reshape(total)

    def with_absent_row(leaf, zero):
        zero = jnp.broadcast_to(zero, leaf.shape[1:])[None]
        real = flat_valid.reshape(-1, *[1] * (leaf.ndim - 1))
        return jnp.concatenate([jnp.where(real, leaf, jnp.broadcast_to(zero, leaf.shape)), zero])

    states = jax.tree.map(with_absent_row, as_leaves, absent)
    offsets = (jnp.arange(b, dtype=jnp.int32) * n)[:, None]
    order = jnp.asarray(batch.order)  # (B, L - 1, W)
    levels, width = order.shape[1], order.shape[2]
    block = b * width  # rows a level writes
    # The state table: rows 0 .. total - 1 hold every node computed as a leaf, row `total`
    # the absent child, then one block of B·W rows per level 1 .. L - 1 (slot order of
    # `order`). Each node reads its children at their rows (`row_of`); a level writes its
    # block with one dynamic_update_slice, so nothing is scattered in the forward pass.
    real = order >= 0
    level_rows = (
        total
        + 1
        + jnp.arange(levels, dtype=jnp.int32)[None, :, None] * block
        + jnp.arange(b, dtype=jnp.int32)[:, None, None] * width
        + jnp.arange(width, dtype=jnp.int32)[None, None, :]
    )
    nodes = jnp.where(real, order + offsets[..., None], total)  # flat node ids, pad: total
    row_of = jnp.arange(total + 1, dtype=jnp.int32)
    row_of = row_of.at[jnp.where(real, nodes, total + 1).reshape(-1)].set(
        level_rows.reshape(-1), mode="drop"
    )
    flat_children = jnp.where(children >= 0, children + offsets[..., None], total)
    child_rows = jnp.concatenate(
        [row_of[flat_children].reshape(total, k), jnp.full((1, k), total, jnp.int32)]
    )
    table = jax.tree.map(
        lambda s: jnp.concatenate([s, jnp.zeros((levels * block, *s.shape[1:]), s.dtype)]), states
    )

    def level(table, scanned):  # one level: its nodes (B·W,) and the row its block starts at
        ids, first = scanned
        kids = child_rows[ids]
        child_states = jax.tree.map(lambda s: s[kids], table)
        new = step(params, xs[ids], child_states, kids != total)
        if perturbation is not None:
            new = jax.tree.map(lambda v, e: v + e[ids], new, extra)

        def write(s, v):
            return jax.lax.dynamic_update_slice_in_dim(s, v.astype(s.dtype), first, axis=0)

        return jax.tree.map(write, table, new), None

    body = jax.checkpoint(level) if remat else level
    firsts = total + 1 + jnp.arange(levels, dtype=jnp.int32) * block
    scanned = (jnp.swapaxes(nodes, 0, 1).reshape(levels, block), firsts)
    table, _ = jax.lax.scan(body, table, scanned)
    rows = row_of[:total].reshape(b, n)
    node_states = jax.tree.map(lambda s: s[rows], table)
    roots = rows[jnp.arange(b), jnp.asarray(batch.root, jnp.int32)]
    root_states = jax.tree.map(lambda s: s[roots], table)
    return node_states, root_states
