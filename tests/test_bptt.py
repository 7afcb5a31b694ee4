"""Truncated BPTT, clipping, and rematerialized scans.

Tolerances: remat against plain in float32, 1e-6 relative (same operations, regrouped);
in float64, 1e-12. Truncated BPTT against hand-built equivalents, float32: 1e-6.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seqlab
from seqlab.bptt import clipping, truncated_bptt
from seqlab.layers import RNNLayer
from tests.helpers import CELLS, random_params
from tests.references import relative_error


def _stream(rng, batch=2, steps=12):
    inputs = jnp.asarray(rng.normal(size=(batch, steps, 3)), jnp.float32)
    targets = jnp.asarray(rng.normal(size=(batch, steps, 4)), jnp.float32)
    return inputs, targets


def _chunk_loss(layer):
    def chunk_loss(params, carry, chunk):
        inputs, targets = chunk
        outputs, final = layer.apply(params, inputs, carry=carry)
        return jnp.mean((outputs - targets) ** 2), final

    return chunk_loss


def test_one_chunk_is_full_bptt(rng, standard_promotion):
    layer = RNNLayer(seqlab.cells.LSTM(4))
    params = layer.init(jax.random.key(0), 3)
    stream = _stream(rng)
    optimizer = optax.sgd(0.1)
    carry = layer.initial_carry(params, (2,))
    result = truncated_bptt(
        _chunk_loss(layer),
        params,
        optimizer.init(params),
        optimizer,
        carry,
        stream,
        chunk_length=12,
    )
    grads = jax.grad(lambda p: _chunk_loss(layer)(p, carry, stream)[0])(params)
    expected = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    for got, want in zip(
        jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(expected), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_state_flows_across_chunks_and_gradient_stops_at_borders(rng, standard_promotion):
    layer = RNNLayer(seqlab.cells.GRU(4))
    params = layer.init(jax.random.key(0), 3)
    inputs, targets = _stream(rng)
    optimizer = optax.sgd(0.0)  # params stay put: compare against the full roll-out
    carry = layer.initial_carry(params, (2,))
    result = jax.jit(
        lambda p, s, c: truncated_bptt(
            _chunk_loss(layer), p, s, optimizer, c, (inputs, targets), chunk_length=4
        )
    )(params, optimizer.init(params), carry)
    full_outputs, full_final = layer.apply(params, inputs)
    # The carry after three chunks is the carry after the whole stream.
    np.testing.assert_allclose(result.carry[0]["forward"], full_final[0]["forward"], rtol=1e-6)
    # Chunk 2's loss uses the state the full roll-out has at step 8.
    np.testing.assert_allclose(
        result.losses[2], jnp.mean((full_outputs[:, 8:] - targets[:, 8:]) ** 2), rtol=1e-6
    )
    # Its gradient treats the incoming state as a constant ...
    _, state_at_8 = layer.apply(params, inputs[:, :8])
    constant_state = jax.tree_util.tree_map(np.asarray, state_at_8)
    truncated = jax.grad(
        lambda p: _chunk_loss(layer)(p, constant_state, (inputs[:, 8:], targets[:, 8:]))[0]
    )(params)
    np.testing.assert_allclose(result.grad_norms[2], optax.tree.norm(truncated), rtol=1e-5)
    # ... unlike the gradient of the same loss through the whole stream.
    through = jax.grad(
        lambda p: jnp.mean((layer.apply(p, inputs)[0][:, 8:] - targets[:, 8:]) ** 2)
    )(params)
    assert abs(float(optax.tree.norm(through)) - float(result.grad_norms[2])) > 1e-4


def test_truncated_bptt_rejects_bad_chunks(rng):
    layer = RNNLayer(seqlab.cells.GRU(4))
    params = layer.init(jax.random.key(0), 3)
    optimizer = optax.sgd(0.1)
    with pytest.raises(ValueError, match="dividing T = 12"):
        truncated_bptt(
            _chunk_loss(layer),
            params,
            optimizer.init(params),
            optimizer,
            layer.initial_carry(params, (2,)),
            _stream(rng),
            chunk_length=5,
        )


def test_clipping_by_norm_and_value(standard_promotion):
    grads = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([12.0])}  # global norm 13
    by_norm = clipping(optax.sgd(1.0), max_norm=1.0)
    updates, _ = by_norm.update(grads, by_norm.init(grads))
    np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)
    np.testing.assert_allclose(updates["a"], [-3 / 13, 4 / 13], rtol=1e-6)
    by_value = clipping(optax.sgd(1.0), max_value=3.5)
    updates, _ = by_value.update(grads, by_value.init(grads))
    np.testing.assert_allclose(updates["a"], [-3.0, 3.5])
    np.testing.assert_allclose(updates["b"], [-3.5])
    with pytest.raises(ValueError, match="max_norm must be positive"):
        clipping(optax.sgd(1.0), max_norm=0.0)


@pytest.mark.parametrize("remat", [True, 5])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_remat_gives_the_same_gradients(remat, bidirectional, rng):
    cell = CELLS["lstm"]
    plain = RNNLayer(cell, num_layers=2, bidirectional=bidirectional)
    rematted = RNNLayer(cell, num_layers=2, bidirectional=bidirectional, remat=remat)
    params = plain.init(jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(3, 23, 3)), jnp.float32)
    lengths = jnp.array([23, 9, 16])

    def loss(layer, params, xs):
        return jnp.sum(jnp.sin(layer.apply(params, xs, seq_lengths=lengths)[0]))

    for argnum in (0, 1):
        want = jax.grad(lambda *a: loss(plain, *a), argnums=argnum)(params, xs)
        got = jax.grad(lambda *a: loss(rematted, *a), argnums=argnum)(params, xs)
        for g, w in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True
        ):
            assert relative_error(g, w) < 1e-6


def test_remat_float64_is_exact_without_lengths(rng):
    cell = CELLS["gru_original"]
    xs = rng.normal(size=(2, 17, 3))
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(
            lambda leaf: jnp.asarray(leaf, jnp.float64), random_params(cell, jax.random.key(0), 3)
        )

        def loss(params, remat):
            outputs, _ = seqlab.scan(cell, params, jnp.asarray(xs), reverse=True, remat=remat)
            return jnp.sum(outputs**3)

        want = jax.grad(loss)(params, False)
        got = jax.grad(loss)(params, 4)
        for key in want:
            assert relative_error(got[key], want[key]) < 1e-12


def test_remat_rejects_bad_block():
    cell = CELLS["rnn_tanh"]
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="remat must be a bool or a positive int"):
        seqlab.scan(cell, params, jnp.ones((1, 4, 3)), remat=0)
