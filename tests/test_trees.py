"""seqlab.trees: every tree cell against a float64 recursion written from its paper
(tests/references.py), gradients by finite differences, the chain reduction to the
sequence cells, inert padding, transformations, low precision, malformed input, builders.

Tolerances (relative error: max abs difference / max abs reference value, per leaf):
    float32 tree_scan vs float64 recursion, random trees of <= 20 nodes:  1e-5
    float64 tree_scan vs float64 recursion:                               1e-12
    float32 chain through a tree cell vs seqlab.scan of the sequence cell,
      values and gradients:                                               1e-5
    padded vs unpadded batch, remat vs not, vmap vs a loop (float32):     1e-6
    bfloat16 params and inputs vs float64 recursion on the same (rounded)
      params and inputs:                                                  5e-2
XLA's CPU float32 matmuls are exact float32 (no TF32), so no matmul precision is set.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import seqlab
from seqlab.trees import (
    ChildSumTreeLSTM,
    NaryTreeLSTM,
    Tree,
    TreeBatch,
    TreeGRU,
    TreeRNN,
    from_nested,
    parse_brackets,
    tree_scan,
)
from tests.helpers import random_params, to_float64
from tests.references import (
    child_sum_tree_lstm_reference,
    nary_tree_lstm_reference,
    relative_error,
    tree_gru_reference,
    tree_rnn_reference,
)

FLOAT32_TOLERANCE = 1e-5
FLOAT64_TOLERANCE = 1e-12
CHAIN_TOLERANCE = 1e-5
SAME_TOLERANCE = 1e-6
BFLOAT16_TOLERANCE = 5e-2

HIDDEN = 8
INPUT = 5

TREE_CELLS = {
    "tree_rnn2": TreeRNN(HIDDEN, arity=2),
    "child_sum": ChildSumTreeLSTM(HIDDEN),
    "nary2": NaryTreeLSTM(HIDDEN, arity=2),
    "nary3": NaryTreeLSTM(HIDDEN, arity=3),
    "tree_gru": TreeGRU(HIDDEN),
}

# Tree sizes of the random batches: a single leaf, a pair, ragged sizes up to 20.
SIZES = (1, 2, 7, 13, 20)


def random_children(rng, size, max_arity):
    """A random tree of ``size`` nodes, every inner node 1 .. ``max_arity`` children, as
    per-node child tuples children first (root last). Grown from the root by giving a
    random leaf children; then numbered in post-order."""
    kids, leaves = [[]], [0]
    while len(kids) < size:
        node = leaves.pop(int(rng.integers(len(leaves))))
        count = int(rng.integers(1, min(max_arity, size - len(kids)) + 1))
        kids[node] = list(range(len(kids), len(kids) + count))
        leaves.extend(kids[node])
        kids.extend([] for _ in range(count))
    order, stack = [], [(0, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(kids[node]))
    position = {node: i for i, node in enumerate(order)}
    return tuple(tuple(position[child] for child in kids[node]) for node in order)


def random_trees(rng, cell, sizes=SIZES):
    arity = cell.arity or 3
    return [Tree(random_children(rng, size, arity), (None,) * size) for size in sizes]


def reference(cell, params, children, xs):
    """The float64 recursion for ``cell`` on one tree: a tuple of (N, H) arrays, (h,) or
    (h, c)."""
    if isinstance(cell, TreeRNN):
        return (tree_rnn_reference(params, children, xs, cell.arity),)
    if isinstance(cell, ChildSumTreeLSTM):
        return child_sum_tree_lstm_reference(params, children, xs)
    if isinstance(cell, NaryTreeLSTM):
        return nary_tree_lstm_reference(params, children, xs, cell.arity)
    if isinstance(cell, TreeGRU):
        return (tree_gru_reference(params, children, xs),)
    raise TypeError(type(cell))


def leaves(state):
    """A cell's state as a tuple of arrays: (h,) or (h, c)."""
    return tuple(state) if isinstance(state, tuple) else (state,)


def scan_of(cell, batch, remat=False):
    """``tree_scan`` over ``batch`` (closed over: concrete) as one jitted function of
    (params, xs): one compilation instead of one per operation."""
    return jax.jit(lambda params, xs: tree_scan(cell, params, batch, inputs=xs, remat=remat))


def loss_of(cell, batch, remat=False):
    """A scalar of every node's and root's state, for gradients."""

    def loss(params, xs):
        node_states, root_states = tree_scan(cell, params, batch, inputs=xs, remat=remat)
        return sum(jnp.sum(jnp.sin(leaf)) for leaf in leaves(node_states) + leaves(root_states))

    return loss


def check_against_reference(cell, params, trees, xs, node_states, root_states, tolerance):
    for b, tree in enumerate(trees):
        count = len(tree)
        expected = reference(cell, params, tree.children, np.asarray(xs[b, :count], np.float64))
        got = tuple(leaf[b, :count] for leaf in leaves(node_states))
        assert relative_error(got, expected) < tolerance, (b, count)
        got_root = tuple(leaf[b] for leaf in leaves(root_states))
        assert relative_error(got_root, tuple(e[-1] for e in expected)) < tolerance, b
        for leaf in leaves(node_states):  # padding nodes hold the leaf state (zeros)
            np.testing.assert_array_equal(np.asarray(leaf[b, count:]), 0)


@pytest.mark.parametrize("name", sorted(TREE_CELLS))
def test_tree_cell_matches_recursion_float32(name, rng):
    cell = TREE_CELLS[name]
    trees = random_trees(rng, cell)
    batch = TreeBatch.from_trees(trees)
    params = random_params(cell, jax.random.key(0), input_size=INPUT)
    xs = rng.normal(size=(len(trees), batch.max_nodes, INPUT)).astype(np.float32)
    node_states, root_states = scan_of(cell, batch)(params, jnp.asarray(xs))
    assert leaves(node_states)[0].dtype == jnp.float32
    check_against_reference(cell, params, trees, xs, node_states, root_states, FLOAT32_TOLERANCE)


@pytest.mark.parametrize("name", sorted(TREE_CELLS))
def test_tree_cell_matches_recursion_float64(name, rng):
    cell = TREE_CELLS[name]
    trees = random_trees(rng, cell)
    batch = TreeBatch.from_trees(trees)
    xs = rng.normal(size=(len(trees), batch.max_nodes, INPUT))
    with jax.enable_x64(True):
        params = to_float64(random_params(cell, jax.random.key(1), input_size=INPUT))
        node_states, root_states = scan_of(cell, batch)(params, jnp.asarray(xs))
        assert leaves(node_states)[0].dtype == jnp.float64
        check_against_reference(
            cell, params, trees, xs, node_states, root_states, FLOAT64_TOLERANCE
        )


def test_vector_inputs_stored_in_the_batch_are_read(rng):
    """inputs=None reads the (B, N, D) vectors ``from_trees(input_size=D)`` laid out."""
    cell = TREE_CELLS["child_sum"]
    shapes = [random_children(rng, size, 3) for size in (4, 9)]
    xs = [rng.normal(size=(len(children), INPUT)) for children in shapes]
    trees = [Tree(children, tuple(x)) for children, x in zip(shapes, xs, strict=True)]
    batch = TreeBatch.from_trees(trees, input_size=INPUT)
    params = random_params(cell, jax.random.key(2), input_size=INPUT)
    node_states, root_states = tree_scan(cell, params, batch)  # eager, inputs=None
    padded = np.zeros((2, batch.max_nodes, INPUT))
    for b, x in enumerate(xs):
        padded[b, : len(x)] = x
    check_against_reference(
        cell, params, trees, padded, node_states, root_states, FLOAT32_TOLERANCE
    )


@pytest.mark.parametrize("name", sorted(TREE_CELLS))
def test_tree_cell_gradients_match_finite_differences(name, rng):
    cell = TREE_CELLS[name]
    trees = random_trees(rng, cell, sizes=(1, 4, 7))
    batch = TreeBatch.from_trees(trees)
    xs = rng.normal(size=(len(trees), batch.max_nodes, 3))
    with jax.enable_x64(True):
        params = to_float64(random_params(cell, jax.random.key(3), input_size=3))
        loss = jax.jit(loss_of(cell, batch))
        check_grads(loss, (params, jnp.asarray(xs)), order=1, modes=["rev"], eps=1e-6)


# A chain (node t's one child is node t - 1, node 0 a leaf) is a sequence: each tree cell
# reduces to its sequence cell with the same parameters.
CHAIN_PAIRS = {
    "child_sum": (ChildSumTreeLSTM(HIDDEN), seqlab.cells.LSTM(HIDDEN)),
    "nary1": (NaryTreeLSTM(HIDDEN, arity=1), seqlab.cells.LSTM(HIDDEN)),
    "tree_gru": (TreeGRU(HIDDEN), seqlab.cells.GRU(HIDDEN, variant="original")),
    "tree_rnn1": (TreeRNN(HIDDEN, arity=1), seqlab.cells.RNN(HIDDEN)),
}


def chain(length):
    return Tree(((),) + tuple((t - 1,) for t in range(1, length)), (None,) * length)


@pytest.mark.parametrize("name", sorted(CHAIN_PAIRS))
def test_chain_reduces_to_sequence_cell(name, rng):
    tree_cell, sequence_cell = CHAIN_PAIRS[name]
    lengths = np.array([7, 4, 1])
    batch = TreeBatch.from_trees([chain(int(n)) for n in lengths])
    params = random_params(sequence_cell, jax.random.key(4), input_size=INPUT)
    tree_shapes = jax.tree.map(jnp.shape, tree_cell.init(jax.random.key(0), INPUT))
    assert tree_shapes == jax.tree.map(jnp.shape, params)
    xs = jnp.asarray(rng.normal(size=(3, 7, INPUT)), jnp.float32)
    real = jnp.asarray(np.arange(7)[None, :] < lengths[:, None], jnp.float32)[..., None]
    weights = jnp.asarray(rng.normal(size=(3, 7, HIDDEN)), jnp.float32) * real
    root_weights = [jnp.asarray(rng.normal(size=(3, HIDDEN)), jnp.float32) for _ in range(2)]

    def tree_run(params, xs):
        node_states, root_states = tree_scan(tree_cell, params, batch, inputs=xs)
        return tree_cell.output(node_states), leaves(root_states)

    def sequence_run(params, xs):
        outputs, final = seqlab.scan(sequence_cell, params, xs, seq_lengths=lengths)
        return outputs, leaves(final)

    def loss(run):
        def value(params, xs):
            outputs, final = run(params, xs)
            total = jnp.sum(weights * jnp.tanh(outputs))
            return total + sum(jnp.sum(w * f) for w, f in zip(root_weights, final, strict=False))

        return value

    got_outputs, got_final = jax.jit(tree_run)(params, xs)
    want_outputs, want_final = jax.jit(sequence_run)(params, xs)
    assert relative_error(got_outputs * real, want_outputs) < CHAIN_TOLERANCE
    assert relative_error(got_final, want_final) < CHAIN_TOLERANCE
    got_grads = jax.jit(jax.grad(loss(tree_run), argnums=(0, 1)))(params, xs)
    want_grads = jax.jit(jax.grad(loss(sequence_run), argnums=(0, 1)))(params, xs)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        assert float(jnp.max(jnp.abs(want))) > 0
        assert relative_error(got, want) < CHAIN_TOLERANCE


@pytest.mark.parametrize("name", sorted(TREE_CELLS))
def test_padding_is_inert(name, rng):
    """More nodes, batch rows, child slots, levels and level width; NaN and inf in every
    padding node's input: the real nodes' states do not change, no gradient is NaN, and
    padding inputs get exactly zero gradient."""
    cell = TREE_CELLS[name]
    trees = random_trees(rng, cell, sizes=(3, 11, 1, 6))
    batch = TreeBatch.from_trees(trees)
    padded = batch.pad(
        batch_size=batch.batch_size + 2,
        max_nodes=batch.max_nodes + 5,
        arity=batch.arity + 1,
        num_levels=batch.num_levels + 2,
        width=batch.order.shape[2] + 3,
    )
    params = random_params(cell, jax.random.key(5), input_size=INPUT)
    xs = rng.normal(size=(len(trees), batch.max_nodes, INPUT)).astype(np.float32)
    big = rng.normal(size=(padded.batch_size, padded.max_nodes, INPUT)).astype(np.float32)
    big[: len(trees), : batch.max_nodes] = xs
    padding = padded.level < 0  # the filler rows' node 0 is a real one-leaf tree: finite
    assert padding.sum() > 0 and (padded.level[len(trees) :, 0] == 0).all()
    big[padding] = np.nan
    big[padding, 0] = np.inf
    big[padding, 1] = -np.inf

    states, roots = scan_of(cell, batch)(params, jnp.asarray(xs))
    padded_states, padded_roots = scan_of(cell, padded)(params, jnp.asarray(big))
    for b, tree in enumerate(trees):
        count = len(tree)
        for want, got in zip(leaves(states), leaves(padded_states), strict=True):
            np.testing.assert_allclose(got[b, :count], want[b, :count], rtol=0, atol=1e-6)
        for want, got in zip(leaves(roots), leaves(padded_roots), strict=True):
            np.testing.assert_allclose(got[b], want[b], rtol=0, atol=1e-6)
    for leaf in leaves(padded_states):
        np.testing.assert_array_equal(np.asarray(leaf)[padding], 0)
    d_params, d_xs = jax.jit(jax.grad(loss_of(cell, padded), argnums=(0, 1)))(
        params, jnp.asarray(big)
    )
    for leaf in jax.tree.leaves(d_params):
        assert np.isfinite(np.asarray(leaf)).all()
    d_xs = np.asarray(d_xs)
    assert np.isfinite(d_xs).all()
    np.testing.assert_array_equal(d_xs[padding], 0)
    assert np.abs(d_xs[~padding]).min() > 0


@pytest.mark.parametrize("name", sorted(TREE_CELLS))
def test_remat_changes_nothing(name, rng):
    cell = TREE_CELLS[name]
    batch = TreeBatch.from_trees(random_trees(rng, cell, sizes=(5, 12, 1)))
    params = random_params(cell, jax.random.key(6), input_size=INPUT)
    xs = jnp.asarray(rng.normal(size=(3, batch.max_nodes, INPUT)), jnp.float32)
    plain = scan_of(cell, batch)(params, xs)
    remat = scan_of(cell, batch, remat=True)(params, xs)
    assert relative_error(jax.tree.leaves(remat), jax.tree.leaves(plain)) < SAME_TOLERANCE
    want = jax.jit(jax.grad(loss_of(cell, batch), argnums=(0, 1)))(params, xs)
    got = jax.jit(jax.grad(loss_of(cell, batch, remat=True), argnums=(0, 1)))(params, xs)
    assert relative_error(jax.tree.leaves(got), jax.tree.leaves(want)) < SAME_TOLERANCE


@pytest.mark.parametrize("name", ["tree_rnn2", "child_sum", "nary3"])
def test_jit_and_vmap_over_params_compose(name, rng):
    cell = TREE_CELLS[name]
    trees = random_trees(rng, cell, sizes=(6, 9, 1))
    batch = TreeBatch.from_trees(trees, arity=cell.arity or 3)  # the traced batch: K fits
    xs = jnp.asarray(rng.normal(size=(3, batch.max_nodes, INPUT)), jnp.float32)
    param_sets = [random_params(cell, jax.random.key(k), input_size=INPUT) for k in (7, 8)]
    stacked = jax.tree.map(lambda *p: jnp.stack(p), *param_sets)

    def run(params, batch, xs):
        return tree_scan(cell, params, batch, inputs=xs)

    loop = [scan_of(cell, batch)(p, xs) for p in param_sets]  # the batch concrete
    jitted = jax.jit(run)(param_sets[0], batch, xs)  # the batch traced too
    assert relative_error(jax.tree.leaves(jitted), jax.tree.leaves(loop[0])) < SAME_TOLERANCE
    vmapped = jax.jit(jax.vmap(run, in_axes=(0, None, None)))(stacked, batch, xs)
    for k, want in enumerate(loop):
        got = jax.tree.map(lambda leaf, k=k: leaf[k], vmapped)
        assert relative_error(jax.tree.leaves(got), jax.tree.leaves(want)) < SAME_TOLERANCE
    grads = jax.jit(jax.vmap(jax.grad(loss_of(cell, batch)), in_axes=(0, None)))(stacked, xs)
    grad = jax.jit(jax.grad(loss_of(cell, batch)))
    for k, params in enumerate(param_sets):
        want = grad(params, xs)
        got = jax.tree.map(lambda leaf, k=k: leaf[k], grads)
        assert relative_error(jax.tree.leaves(got), jax.tree.leaves(want)) < SAME_TOLERANCE


@pytest.mark.parametrize("name", sorted(TREE_CELLS))
def test_bfloat16_stays_near_float64_recursion(name, rng):
    cell = TREE_CELLS[name]
    trees = random_trees(rng, cell, sizes=(1, 8, 15))
    batch = TreeBatch.from_trees(trees)
    params = jax.tree.map(
        lambda leaf: leaf.astype(jnp.bfloat16),
        random_params(cell, jax.random.key(9), input_size=INPUT),
    )
    xs = jnp.asarray(rng.normal(size=(3, batch.max_nodes, INPUT)), jnp.bfloat16)
    node_states, root_states = scan_of(cell, batch)(params, xs)
    assert leaves(node_states)[0].dtype == jnp.bfloat16
    # the reference reads the same rounded values: only the arithmetic is compared
    check_against_reference(
        cell, params, trees, np.asarray(xs, np.float64), node_states, root_states,
        BFLOAT16_TOLERANCE,
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(TREE_CELLS))
def test_huge_inputs_stay_finite(name, rng):
    """Inputs of scale 1e4 saturate every gate: states and (float32) gradients finite."""
    cell = TREE_CELLS[name]
    batch = TreeBatch.from_trees(random_trees(rng, cell, sizes=(9, 14)))
    params = random_params(cell, jax.random.key(10), INPUT)
    xs = jnp.asarray(1e4 * rng.normal(size=(2, batch.max_nodes, INPUT)), jnp.float32)
    # |h| <= 1, but TreeGRU's h = (1 - z) n + z Σ_k h_k is bounded by the leaves below
    bound = batch.max_nodes if isinstance(cell, TreeGRU) else 1.0
    for dtype in (jnp.float32, jnp.bfloat16):
        cast = jax.tree.map(lambda leaf, dtype=dtype: leaf.astype(dtype), (params, xs))
        node_states, _ = scan_of(cell, batch)(*cast)
        h = np.asarray(cell.output(node_states), np.float64)
        assert np.isfinite(h).all() and np.abs(h).max() <= bound, dtype
        assert np.abs(h).max() > 0.5, dtype  # saturated, not zeroed
        for leaf in leaves(node_states):
            assert np.isfinite(np.asarray(leaf, np.float64)).all(), dtype
    d_params, d_xs = jax.jit(jax.grad(loss_of(cell, batch), argnums=(0, 1)))(params, xs)
    for leaf in [*jax.tree.leaves(d_params), d_xs]:
        assert np.isfinite(np.asarray(leaf)).all()


def three_children():
    return TreeBatch.from_trees([from_nested((1, 2, (3, 4)))])


def run_on(cell, batch):
    params = cell.init(jax.random.key(0), 2)
    return tree_scan(cell, params, batch, inputs=jnp.ones((1, batch.max_nodes, 2)))


def run_jitted_on(cell, batch):
    params = cell.init(jax.random.key(0), 2)
    xs = jnp.ones((1, batch.max_nodes, 2))
    return jax.jit(lambda b: tree_scan(cell, params, b, inputs=xs))(batch)


@pytest.mark.parametrize(
    "make_bad, match",
    [
        (
            lambda: parse_brackets("(3 (2 a)"),
            r"unbalanced brackets: the '\(' at position 0 is never closed",
        ),
        (
            lambda: parse_brackets("(3 (2 a)))"),
            r"unbalanced brackets: '\)' at position 9 closes nothing",
        ),
        (lambda: parse_brackets("(3 (2 a) (1 b)"), r"'\(' at position 0 is never closed"),
        (lambda: parse_brackets(""), "an empty tree"),
        (lambda: parse_brackets("   \n"), "an empty tree"),
        (lambda: parse_brackets("(3 (2 a)) (1 b)"), "text after the tree's end at position 10"),
        (
            lambda: parse_brackets("(3 (7 a) (1 b))", num_labels=5),
            r"label 7 at position 4 is out of range \[0, 5\)",
        ),
        (lambda: parse_brackets("(3 (-1 a))", num_labels=5), "starts with '-1', not a label"),
        (lambda: parse_brackets("(3 (\u0663 a))"), "not a label \\(digits 0-9"),
        (lambda: parse_brackets("(1_0 a)"), "starts with '1_0', not a label"),
        (
            lambda: parse_brackets("(3 (x a))"),
            "the node at position 3 starts with 'x', not a label",
        ),
        (lambda: parse_brackets("(2.5 a)"), "starts with '2.5', not a label"),
        (lambda: parse_brackets("(3)"), "node at position 0 has neither a word nor subtrees"),
        (lambda: parse_brackets("(3 a (2 b))"), "node at position 0 has both a word"),
        (lambda: Tree(((1,), (0,)), (None, None)), "its own descendant"),
        (lambda: Tree(((1,), (2,), (0,), ()), (None,) * 4), "its own descendant"),
        (lambda: Tree(((0,),), (None,)), "node 0 lists itself"),
        (lambda: Tree(((), (), (0,), (0, 1)), (None,) * 4), "node 0 has two parents"),
        (lambda: Tree(((), (), (0,), (1,)), (None,) * 4), r"one root; nodes \[2, 3\]"),
        (lambda: Tree(((), (5,)), (None, None)), "node 1 lists child 5, not a node"),
        (lambda: Tree(((), (-1,)), (None, None)), "node 1 lists child -1, not a node"),
        (lambda: Tree((), ()), "an empty tree"),
        (lambda: from_nested([]), "an empty tree"),
        (lambda: from_nested((1, ())), "an empty tree"),
        (lambda: Tree(((), (0,)), (None,)), "a tree of 2 nodes needs 2 inputs"),
        (
            lambda: run_on(TreeRNN(4, arity=2), three_children()),
            "a node has 3 children, above the arity 2 of TreeRNN",
        ),
        (
            lambda: run_on(NaryTreeLSTM(4, arity=2), three_children()),
            "a node has 3 children, above the arity 2 of NaryTreeLSTM",
        ),
        (
            lambda: run_jitted_on(TreeRNN(4, arity=2), three_children()),
            "the batch has 3 child slots, above the arity 2 of TreeRNN",
        ),
        (
            lambda: TreeBatch.from_trees(
                [Tree(((), (), (0, 1)), (1, 2, None), (0, 7, 1))], num_labels=5
            ),
            r"label 7 of node 1 in tree 0 is out of range \[0, 5\)",
        ),  # fmt: skip
        (
            lambda: TreeBatch.from_trees([from_nested(((1, 2), 3))], arity=1),
            "arity=1 is too small: a tree in the batch needs 2",
        ),
        (
            lambda: TreeBatch.from_trees([from_nested(((1, 2), 3))], max_nodes=4),
            "max_nodes=4 is too small: a tree in the batch needs 5",
        ),
        (
            lambda: TreeBatch.from_trees([from_nested(((1, 2), 3))], num_levels=2),
            "num_levels=2 is too small: a tree in the batch needs 3",
        ),
        (lambda: TreeBatch.from_trees([]), "needs at least one tree"),
        (lambda: three_children().pad(max_nodes=2), "pad: max_nodes=2 is smaller"),
        (lambda: TreeBatch.from_trees([from_nested((0, 1))]), "token ids start at 1"),
        (
            lambda: TreeBatch.from_trees([parse_brackets("(1 (2 a) (3 b))")], vocab={"a": 1}),
            "word 'b' .* not in the vocab",
        ),
        (
            lambda: tree_scan(
                TreeRNN(4),
                TreeRNN(4).init(jax.random.key(0), 2),
                TreeBatch.from_trees([from_nested((1, 2))]),
            ),
            "tree_scan needs float inputs of shape",
        ),  # fmt: skip
    ],
)
def test_malformed_input_raises_value_error(make_bad, match):
    with pytest.raises(ValueError, match=match):
        make_bad()


def test_parse_brackets_builds_children_first():
    tree = parse_brackets("(3 (2 It) (4 (2 's) (4 good)))", num_labels=5)
    assert len(tree) == 5
    assert tree.children == ((), (), (), (1, 2), (0, 3))
    assert tree.inputs == ("It", "'s", "good", None, None)
    assert tree.labels == (2, 2, 4, 4, 3)
    np.testing.assert_array_equal(tree.levels(), [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(tree.depths(), [1, 2, 2, 1, 0])
    assert tree.height == 2 and tree.arity == 2
    batch = TreeBatch.from_trees(
        [tree, parse_brackets("(1 word)")], vocab={"It": 1, "'s": 2, "<unk>": 3}
    )
    np.testing.assert_array_equal(batch.inputs, [[1, 2, 3, 0, 0], [3, 0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.labels, [[2, 2, 4, 4, 3], [1, -1, -1, -1, -1]])
    np.testing.assert_array_equal(batch.order[0], [[3], [4]])
    np.testing.assert_array_equal(batch.order[1], [[-1], [-1]])
    np.testing.assert_array_equal(batch.root, [4, 0])
    np.testing.assert_array_equal(batch.num_nodes, [5, 1])
    np.testing.assert_array_equal(batch.level[1], [0, -1, -1, -1, -1])
    assert from_nested(((1, 2), 3)).children == ((), (), (0, 1), (), (2, 3))


def test_parent_first_tree_is_reordered_children_first(rng):
    """The tree of the bracket example, root first: same structure, same root state."""
    xs = rng.normal(size=(5, INPUT))
    # node 0 root over (1, 2); 2 over (3, 4); children first that is 1, 3, 4, 2, 0
    parent_first = Tree(((1, 2), (), (3, 4), (), ()), tuple(xs), labels=(3, 2, 4, 2, 4))
    post = [1, 3, 4, 2, 0]
    children_first = Tree(((), (), (), (1, 2), (0, 3)), tuple(xs[post]), labels=(2, 2, 4, 4, 3))
    assert parent_first.children == children_first.children
    assert parent_first.labels == children_first.labels
    np.testing.assert_array_equal(np.stack(parent_first.inputs), xs[post])
    cell = TREE_CELLS["nary2"]
    params = random_params(cell, jax.random.key(11), input_size=INPUT)
    roots = [
        jax.jit(lambda p, b: tree_scan(cell, p, b)[1])(
            params, TreeBatch.from_trees([tree], input_size=INPUT)
        )
        for tree in (parent_first, children_first)
    ]
    np.testing.assert_array_equal(roots[0].h, roots[1].h)
    np.testing.assert_array_equal(roots[0].c, roots[1].c)
    # and it is the root the recursion computes for the children-first tree
    expected_h, _ = nary_tree_lstm_reference(params, children_first.children, xs[post], 2)
    assert relative_error(roots[0].h[0], expected_h[-1]) < FLOAT32_TOLERANCE


def test_bucketed_batch_rounds_shapes_up_and_keeps_values(rng):
    trees = [Tree(random_children(rng, size, 2), (None,) * size) for size in (5, 9, 1)]
    exact = TreeBatch.from_trees(trees)
    bucketed = TreeBatch.from_trees(trees, bucketed=True)
    # K is not rounded: a positional cell needs its arity exact
    assert bucketed.arity == exact.arity
    for have, need in [
        (bucketed.max_nodes, exact.max_nodes),
        (bucketed.num_levels, exact.num_levels),
        (bucketed.order.shape[2], exact.order.shape[2]),
    ]:
        assert have >= need and have & (have - 1) == 0, (have, need)
    assert bucketed.max_nodes == 16 and bucketed.order.shape[2] >= 4
    assert seqlab.trees.bucket(5) == 8 and seqlab.trees.bucket(1) == 4
    assert seqlab.trees.bucket(3, floor=1) == 4 and seqlab.trees.bucket(16) == 16
    xs = rng.normal(size=(3, 16, INPUT)).astype(np.float32)
    for cell in (TREE_CELLS["child_sum"], TREE_CELLS["nary2"]):
        params = random_params(cell, jax.random.key(12), input_size=INPUT)
        want, _ = scan_of(cell, exact)(params, jnp.asarray(xs[:, : exact.max_nodes]))
        got, _ = scan_of(cell, bucketed)(params, jnp.asarray(xs))
        for tree_index, tree in enumerate(trees):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(
                    g[tree_index, : len(tree)], w[tree_index, : len(tree)], rtol=0, atol=1e-6
                )


def test_deep_chain_builds_and_runs_without_recursion(rng):
    length = 2500
    children = ((),) + tuple((t - 1,) for t in range(1, length))
    tree = Tree(children, (None,) * length)
    root_first = Tree(tuple((t + 1,) for t in range(length - 1)) + ((),), (None,) * length)
    assert root_first.children == tree.children  # reordered children first
    assert tree.height == length - 1 and tree.depths()[0] == length - 1
    bracketed = parse_brackets("(1 " * (length - 1) + "(0 w)" + ")" * (length - 1))
    assert bracketed.children == tree.children and bracketed.labels[0] == 0
    batch = TreeBatch.from_trees([tree, chain(3)])
    assert batch.num_levels == length and batch.order.shape == (2, length - 1, 1)
    cell, sequence_cell = CHAIN_PAIRS["tree_rnn1"]
    params = random_params(sequence_cell, jax.random.key(13), input_size=2)
    xs = jnp.asarray(rng.normal(size=(2, length, 2)), jnp.float32)
    _, root = scan_of(cell, batch)(params, xs)
    _, final = seqlab.scan(sequence_cell, params, xs, seq_lengths=np.array([length, 3]))
    assert relative_error(root, final) < CHAIN_TOLERANCE


def test_child_sum_cells_take_no_arity_and_deep_nesting_builds():
    """The child-sum cells take any number of children: their second positional argument
    is the forget bias (Child-Sum) and they have no arity field; nested literals deeper
    than Python's recursion limit still build."""
    cell = seqlab.trees.ChildSumTreeLSTM(8, 0.5)
    assert cell.forget_bias == 0.5 and cell.arity is None
    with pytest.raises(TypeError):
        seqlab.trees.TreeGRU(4, 1)
    nested = 1
    for _ in range(3000):
        nested = (nested, 2)
    tree = from_nested(nested)
    assert len(tree) == 6001 and tree.height == 3000 and tree.children[-1] == (5998, 5999)


def test_hand_built_batches_are_checked_and_coercions_refused():
    """A TreeBatch edited by hand is validated before tree_scan reads it (a child in
    another tree, an inner node left out of ``order``, a root on padding); floats are
    not integers, negative labels are not labels, vocab ids start at 1."""
    good = TreeBatch.from_trees([from_nested(((1, 2), 3)), from_nested((4, 5))])
    cell = seqlab.trees.ChildSumTreeLSTM(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((2, good.max_nodes, 3))
    tree_scan(cell, params, good, inputs=xs)
    arrays = good.as_dict()
    cases = [
        ("children", (0, 4, 0), 6, "node 4 lists child 6, not an earlier node"),
        ("order", (0, 0, 0), -1, "order lists nodes \\[\\] at level 1"),
        ("root", (1,), 1, "root 1 is not its last real node 2"),
        ("level", (0, 2), 0, "node 2 has level 0, its children give 1"),
    ]
    for field, index, value, message in cases:
        broken = {k: np.array(v) for k, v in arrays.items()}
        broken[field][index] = value
        with pytest.raises(ValueError, match=message):
            tree_scan(cell, params, TreeBatch.from_dict(broken), inputs=xs)
    with pytest.raises(ValueError, match="must be an integer, got 2.9"):
        TreeBatch.from_trees([Tree(((), (0,)), (1, 2), labels=(0, 2.9))])
    with pytest.raises(ValueError, match="label -5 of node 0 in tree 0 is negative"):
        TreeBatch.from_trees([Tree(((), (0,)), (1, 2), labels=(-5, 1))])
    with pytest.raises(ValueError, match="a child index must be an integer, got 0.5"):
        Tree(((), (0.5,)), (1, 2))
    with pytest.raises(ValueError, match="ids start at 1"):
        TreeBatch.from_trees([parse_brackets("(1 (2 a) (3 b))")], vocab={"a": 0, "b": 4})
    with pytest.raises(ValueError, match="give input_size= to from_trees"):
        TreeBatch.from_trees([from_nested((np.ones(3), np.ones(3)))])
    with pytest.raises(ValueError, match="inputs have 5 features; the cell's parameters expect 3"):
        tree_scan(cell, params, good, inputs=jnp.ones((2, good.max_nodes, 5)))
