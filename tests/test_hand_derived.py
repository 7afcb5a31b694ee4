"""The built-in cells' hand-derived backward (``implementation="xla"``) against autodiff.

Reference: ``implementation="xla-autodiff"``, JAX's autodiff through the same masked
``lax.scan``. Inputs, parameters and initial carries are random (never zero); the loss
weights every output and every leaf of the final carry with random numbers, so every
cotangent the backward receives is nonzero.

Tolerances: float32, 1e-5 relative to the largest entry of each gradient (the sums run
in a different order: per chunk and then over chunks, instead of step by step); float64
(``jax.enable_x64``), 1e-12. ``BPTT_CHUNK`` is set to 4 in most tests so that T = 11 runs
two whole chunks and a shorter one (every code path of the chunking).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from references import relative_error

import seqlab
from seqlab.unroll import _bptt, _policy
from tests.helpers import CELLS, random_params, to_float64

WRAPPED = {
    "initial_state_lstm": seqlab.cells.TrainableInitialState(seqlab.cells.LSTM(6)),
    "initial_state_gru": seqlab.cells.TrainableInitialState(seqlab.cells.GRU(6)),
    "gru_no_bias": seqlab.cells.GRU(6, use_bias=False),
    "lstm_no_bias": seqlab.cells.LSTM(6, use_bias=False),
}
ALL_CELLS = {**CELLS, **WRAPPED}
BATCH, STEPS, INPUTS = 4, 11, 5
LENGTHS = np.array([11, 0, 6, 3])  # full, empty, inside the second chunk, inside the first
F32_TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(_bptt, "BPTT_CHUNK_ROWS", 4 * BATCH)  # chunks of 4 steps


def _problem(cell, dtype=jnp.float32, seed=0):
    key = jax.random.key(seed)
    params = random_params(cell, key, INPUTS)
    xs = jax.random.normal(jax.random.fold_in(key, 2), (BATCH, STEPS, INPUTS))
    carry = jax.tree_util.tree_map(
        lambda leaf: 0.5 * jax.random.normal(jax.random.fold_in(key, 3), leaf.shape),
        cell.initial_carry(params, (BATCH,)),
    )
    if dtype == jnp.float64:
        params, xs, carry = to_float64((params, xs, carry))
    return params, xs, carry


def _loss(cell, implementation, **options):
    def loss(params, xs, carry, weights):
        outputs, final = seqlab.scan(
            cell, params, xs, carry, implementation=implementation, **options
        )
        total = jnp.sum(outputs * weights[0])
        for leaf, weight in zip(jax.tree_util.tree_leaves(final), weights[1:], strict=True):
            total = total + jnp.sum(jnp.sin(leaf) * weight)
        return total

    return loss


def _weights(cell, params, xs, carry, seed=7, **options):
    outputs, final = jax.eval_shape(
        lambda: seqlab.scan(cell, params, xs, carry, implementation="xla-autodiff", **options)
    )
    shapes = [outputs, *jax.tree_util.tree_leaves(final)]
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return [
        jax.random.normal(k, s.shape).astype(s.dtype) for k, s in zip(keys, shapes, strict=True)
    ]


def _assert_close(got, expected, tolerance=F32_TOLERANCE):
    leaves = jax.tree_util.tree_leaves(got)
    expected_leaves = jax.tree_util.tree_leaves(expected)
    for a, b in zip(leaves, expected_leaves, strict=True):
        assert a.dtype == b.dtype
        assert relative_error(a, b) < tolerance, (a, b)


def _compare(cell, params, xs, carry, tolerance, **options):
    weights = _weights(cell, params, xs, carry, **options)
    results = {}
    for implementation in ("xla", "xla-autodiff"):
        function = jax.jit(
            jax.value_and_grad(_loss(cell, implementation, **options), argnums=(0, 1, 2))
        )
        results[implementation] = function(params, xs, carry, weights)
    (value, grads), (value_ref, grads_ref) = results["xla"], results["xla-autodiff"]
    assert relative_error(value, value_ref) < tolerance
    _assert_close(grads, grads_ref, tolerance)


# float64 below runs the other two combinations (full forward, ragged reverse).
@pytest.mark.parametrize(
    "lengths, reverse", [(True, False), (False, True)], ids=["ragged-forward", "full-reverse"]
)
@pytest.mark.parametrize("name", sorted(ALL_CELLS))
def test_gradients_equal_autodiff_float32(name, lengths, reverse):
    cell = ALL_CELLS[name]
    params, xs, carry = _problem(cell)
    options = {"reverse": reverse, "seq_lengths": LENGTHS if lengths else None}
    _compare(cell, params, xs, carry, F32_TOLERANCE, **options)


@pytest.mark.parametrize("name", sorted(ALL_CELLS))
def test_gradients_equal_autodiff_float64(name):
    cell = ALL_CELLS[name]
    with jax.enable_x64(True):
        params, xs, carry = _problem(cell, jnp.float64)
        _compare(cell, params, xs, carry, 1e-12, seq_lengths=LENGTHS, reverse=True)
        _compare(cell, params, xs, carry, 1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"remat": 3},
        {"remat": True, "seq_lengths": LENGTHS, "reverse": True},
        {"hoist_input_projection": True, "seq_lengths": LENGTHS},
        {"hoist_input_projection": False, "unroll": 3},
        {"time_major": True},
    ],
    ids=["remat3", "remat_ragged_reverse", "hoisted", "unroll3", "time_major"],
)
@pytest.mark.parametrize("name", ["lstm_proj", "gru_original", "mgu", "rnn_relu"])
def test_options_compose(name, options):
    cell = ALL_CELLS[name]
    params, xs, carry = _problem(cell)
    if options.get("time_major"):
        xs = jnp.swapaxes(xs, 0, 1)
    _compare(cell, params, xs, carry, F32_TOLERANCE, **options)


@pytest.mark.parametrize("chunk_rows", [1, 3 * BATCH, 100 * BATCH], ids=["1", "3", "whole"])
def test_any_chunk_length_gives_the_same_gradients(monkeypatch, chunk_rows):
    monkeypatch.setattr(_bptt, "BPTT_CHUNK_ROWS", chunk_rows)
    cell = ALL_CELLS["lstm"]
    params, xs, carry = _problem(cell)
    _compare(cell, params, xs, carry, F32_TOLERANCE, seq_lengths=LENGTHS)


def test_vmap_over_the_hand_derived_backward():
    cell = ALL_CELLS["gru_cudnn"]
    params, xs, _ = _problem(cell)
    stacked = jnp.stack([xs, 2 * xs[::-1]])

    def grad_of(implementation):
        def loss(params, xs):
            scan = seqlab.scan(cell, params, xs, seq_lengths=LENGTHS, implementation=implementation)
            return jnp.sum(jnp.tanh(scan[0]))

        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, stacked)

    _assert_close(grad_of("xla"), grad_of("xla-autodiff"))


def test_bfloat16_inputs_with_float32_parameters(standard_promotion):
    cell = ALL_CELLS["lstm"]
    params, xs, carry = _problem(cell)
    xs = xs.astype(jnp.bfloat16)
    weights = _weights(cell, params, xs, carry)
    grads = {
        impl: jax.jit(jax.grad(_loss(cell, impl, seq_lengths=LENGTHS), argnums=(0, 1, 2)))(
            params, xs, carry, weights
        )
        for impl in ("xla", "xla-autodiff")
    }
    (d_params, d_xs, d_carry), expected = grads["xla"], grads["xla-autodiff"]
    assert d_xs.dtype == jnp.bfloat16
    _assert_close((d_params, d_carry), (expected[0], expected[2]))
    # d xs is rounded to bfloat16 at the end by both (8 bits of mantissa).
    assert relative_error(d_xs.astype(jnp.float32), expected[1].astype(jnp.float32)) < 1e-2


@pytest.mark.parametrize("bidirectional", [False, True], ids=["stacked", "bidirectional"])
def test_stacked_and_bidirectional_layers(bidirectional):
    def make(implementation):
        cells = (seqlab.cells.LSTM(6, proj_size=3), seqlab.cells.GRU(5, variant="original"))
        return seqlab.layers.RNNLayer(
            cells, num_layers=2, bidirectional=bidirectional, implementation=implementation
        )

    layer = make("xla")
    params = random_params(layer, jax.random.key(3), INPUTS)
    xs = jax.random.normal(jax.random.key(4), (BATCH, STEPS, INPUTS))
    outputs = jax.eval_shape(layer.apply, params, xs)[0]
    weights = jax.random.normal(jax.random.key(5), outputs.shape)

    def grads(layer):
        def loss(params, xs):
            outputs, _ = layer.apply(params, xs, seq_lengths=LENGTHS)
            return jnp.sum(outputs * weights)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)

    _assert_close(grads(layer), grads(make("xla-autodiff")))


SMOOTH = ["rnn_tanh", "lstm", "lstm_proj", "gru_cudnn", "gru_original", "mgu"]


@pytest.mark.parametrize("name", SMOOTH)
def test_second_order_reverse_mode(name):
    """The backward is plain JAX, so it differentiates again (reverse over reverse)."""
    cell = ALL_CELLS[name]
    with jax.enable_x64(True):
        params, xs, carry = _problem(cell, jnp.float64)
        xs, carry = xs[:2, :5], jax.tree_util.tree_map(lambda leaf: leaf[:2], carry)
        lengths = np.array([5, 2])

        def loss(params, xs):
            outputs, final = seqlab.scan(cell, params, xs, carry, seq_lengths=lengths)
            last = jax.tree_util.tree_leaves(final)[-1]
            return jnp.sum(jnp.sin(outputs)) + jnp.sum(jnp.cos(last))

        check_grads(loss, (params, xs), order=2, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_forward_mode_raises_and_autodiff_offers_it():
    cell = ALL_CELLS["lstm"]
    params, xs, _ = _problem(cell)

    def outputs(xs, implementation):
        return seqlab.scan(cell, params, xs, implementation=implementation)[0]

    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: outputs(x, "xla"), (xs,), (xs,))
    primal, tangent = jax.jvp(lambda x: outputs(x, "xla-autodiff"), (xs,), (xs,))
    assert float(jnp.max(jnp.abs(tangent))) > 0


def _uses_hand_derived(cell, params, xs, implementation="xla"):
    """Whether ``scan`` dispatched to the hand-derived recurrence (a spy on the function
    the front door calls, not a string search in the jaxpr)."""
    from unittest import mock

    from seqlab.unroll import _scan

    with mock.patch.object(_scan, "scan_bptt", wraps=_bptt.scan_bptt) as spy:
        jax.make_jaxpr(lambda p: seqlab.scan(cell, p, xs, implementation=implementation))(params)
    return spy.call_count == 1


def test_which_cells_get_the_hand_derived_backward():
    xs = jnp.ones((2, 3, INPUTS))
    for cell in ALL_CELLS.values():
        params = cell.init(jax.random.key(0), INPUTS)
        assert _uses_hand_derived(cell, params, xs)
        assert not _uses_hand_derived(cell, params, xs, "xla-autodiff")

    @dataclasses.dataclass(frozen=True)
    class PeepholeLSTM(seqlab.cells.LSTM):  # a subclass may change the step: autodiff
        pass

    subclass = PeepholeLSTM(6)
    assert not _uses_hand_derived(subclass, subclass.init(jax.random.key(0), INPUTS), xs)
    perturbed = seqlab.cells.PerturbedHidden(seqlab.cells.GRU(6), INPUTS)
    params = perturbed.init(jax.random.key(0), INPUTS)
    assert not _uses_hand_derived(perturbed, params, jnp.ones((2, 3, INPUTS + 6)))


def test_chunk_length_follows_the_batch_size():
    rows = _policy.BPTT_CHUNK_ROWS
    assert _bptt.chunk_length(rows, batch_size=1, num_steps=10_000) == rows
    assert _bptt.chunk_length(rows, batch_size=32, num_steps=10_000) == rows // 32
    assert _bptt.chunk_length(rows, batch_size=4 * rows, num_steps=100) == 1
    assert _bptt.chunk_length(rows, batch_size=1, num_steps=7) == 7


def test_small_problems_hoist_on_cpu():
    if jax.default_backend() != "cpu":
        pytest.skip("the size rule is the CPU's")
    limit = _policy.HOIST_MAX_VALUES["cpu"]
    assert _policy.hoist_small(limit) and not _policy.hoist_small(limit + 1)
    cell = seqlab.cells.LSTM(8)
    params = cell.init(jax.random.key(0), 3)

    def projects_first(batch, steps):  # hoisted: one projection of all (T, B, D) inputs
        xs = jnp.ones((batch, steps, 3))
        shapes = []
        project = type(cell).project_inputs

        def spy(self, params, inputs):
            shapes.append(tuple(inputs.shape))
            return project(self, params, inputs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(type(cell), "project_inputs", spy)
            jax.make_jaxpr(lambda p: seqlab.scan(cell, p, xs)[0])(params)
        assert shapes, "the input projection was never called"
        return (steps, batch, 3) in shapes  # per step it sees (B, D) only

    assert projects_first(4, 5)
    assert not projects_first(limit // 32 + 1, 1)
