"""RNNLayer (stacked, bidirectional, variable lengths, dropout) against the float64 loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqlab
from seqlab.layers import RNNLayer
from tests.helpers import CELLS, random_params
from tests.references import reference_scan, relative_error

TOLERANCE = 2e-5  # float32 against float64, see test_cells.py


def reference_stack(layer, params, xs, seq_lengths):
    """Layer by layer, direction by direction, with the per-sequence loop."""
    hidden = np.asarray(xs, np.float64)
    finals = []
    for cell, layer_params in zip(layer.cells, params, strict=True):
        outputs, layer_finals = [], {}
        for direction in layer.directions:
            out, layer_finals[direction] = reference_scan(
                cell,
                layer_params[direction],
                hidden,
                seq_lengths=seq_lengths,
                reverse=direction == "backward",
            )
            outputs.append(out)
        hidden = np.concatenate(outputs, axis=-1)
        finals.append(layer_finals)
    return hidden, finals


@pytest.mark.parametrize("name", ["lstm_proj", "gru_original", "rnn_tanh", "mgu"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_bidirectional_variable_lengths(name, bidirectional, rng):
    layer = RNNLayer(CELLS[name], num_layers=3, bidirectional=bidirectional)
    params = layer.init(jax.random.key(0), 5)
    params = tuple(
        {
            d: random_params(CELLS[name], jax.random.key(10 * i + j), p[d]["w_ih"].shape[0])
            for j, d in enumerate(p)
        }
        for i, p in enumerate(params)
    )
    xs = rng.normal(size=(4, 9, 5)).astype(np.float32)
    lengths = np.array([9, 1, 6, 0])
    outputs, final_state = layer.apply(params, jnp.asarray(xs), seq_lengths=jnp.asarray(lengths))
    expected, expected_finals = reference_stack(layer, params, xs, lengths)
    assert outputs.shape == expected.shape
    assert relative_error(outputs, expected) < TOLERANCE
    padded = np.arange(9)[None, :] >= lengths[:, None]
    assert np.all(np.asarray(outputs)[padded] == 0.0)
    for got, want in zip(final_state, expected_finals, strict=True):
        for direction in layer.directions:
            got_d = got[direction]
            assert (
                relative_error(tuple(got_d) if isinstance(got_d, tuple) else got_d, want[direction])
                < TOLERANCE
            )


def test_time_major_layer_matches_batch_major(rng):
    xs = jnp.asarray(rng.normal(size=(3, 6, 4)), jnp.float32)
    lengths = jnp.array([6, 2, 5])
    batch_major = RNNLayer(CELLS["gru_cudnn"], num_layers=2, bidirectional=True)
    time_major = RNNLayer(CELLS["gru_cudnn"], num_layers=2, bidirectional=True, time_major=True)
    params = batch_major.init(jax.random.key(0), 4)
    a, _ = batch_major.apply(params, xs, seq_lengths=lengths)
    b, _ = time_major.apply(params, jnp.swapaxes(xs, 0, 1), seq_lengths=lengths)
    np.testing.assert_array_equal(a, jnp.swapaxes(b, 0, 1))


def test_cells_per_layer_with_different_sizes(rng):
    """An LSTM(7) layer under a GRU(3) layer, both bidirectional: the numbers equal the
    per-layer float64 loop (the second layer reads the first's 14 features), not only the
    shapes."""
    layer = RNNLayer([seqlab.cells.LSTM(7), seqlab.cells.GRU(3)], num_layers=2, bidirectional=True)
    params = layer.init(jax.random.key(0), 4)
    assert params[1]["forward"]["w_ih"].shape == (14, 9)
    params = tuple(
        {
            d: random_params(cell, jax.random.key(10 * i + j), p[d]["w_ih"].shape[0])
            for j, d in enumerate(p)
        }
        for i, (cell, p) in enumerate(zip(layer.cells, params, strict=True))
    )
    xs = rng.normal(size=(3, 5, 4)).astype(np.float32)
    lengths = np.array([5, 2, 0])
    outputs, final_state = layer.apply(params, jnp.asarray(xs), seq_lengths=jnp.asarray(lengths))
    assert outputs.shape == (3, 5, 6)
    assert layer.output_size(4) == 6
    expected, expected_finals = reference_stack(layer, params, xs, lengths)
    assert relative_error(outputs, expected) < TOLERANCE
    got = final_state[1]["backward"]
    assert relative_error(got, expected_finals[1]["backward"]) < TOLERANCE


def test_dropout_only_in_training_and_between_layers(rng):
    xs = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
    layer = RNNLayer(CELLS["lstm"], num_layers=2, dropout=0.5)
    plain = RNNLayer(CELLS["lstm"], num_layers=2)
    params = layer.init(jax.random.key(0), 4)
    evaluation, _ = layer.apply(params, xs, key=jax.random.key(1), train=False)
    np.testing.assert_array_equal(evaluation, plain.apply(params, xs)[0])
    train_a, _ = layer.apply(params, xs, key=jax.random.key(1), train=True)
    train_b, _ = layer.apply(params, xs, key=jax.random.key(2), train=True)
    assert not np.allclose(train_a, evaluation)
    assert not np.allclose(train_a, train_b)
    # With one layer there is no inter-layer dropout at all (PyTorch semantics).
    single = RNNLayer(CELLS["lstm"], num_layers=1, dropout=0.5)
    one = single.init(jax.random.key(0), 4)
    np.testing.assert_array_equal(
        single.apply(one, xs, key=jax.random.key(1), train=True)[0], single.apply(one, xs)[0]
    )


def test_dropout_matches_its_definition(rng):
    """Layer 2 sees layer 1's outputs, each zeroed with prob. p or scaled by 1/(1-p)."""
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    layer = RNNLayer(CELLS["gru_cudnn"], num_layers=2, dropout=0.25)
    params = layer.init(jax.random.key(0), 3)
    key = jax.random.key(7)
    got, _ = layer.apply(params, xs, key=key, train=True)
    first, _ = seqlab.scan(CELLS["gru_cudnn"], params[0]["forward"], xs)
    keep = jax.random.bernoulli(jax.random.split(key, 2)[1], 0.75, jnp.swapaxes(first, 0, 1).shape)
    dropped = jnp.swapaxes(jnp.where(keep, jnp.swapaxes(first, 0, 1) / 0.75, 0.0), 0, 1)
    want, _ = seqlab.scan(CELLS["gru_cudnn"], params[1]["forward"], dropped)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_unidirectional_stack_is_a_cell(rng):
    layer = RNNLayer(CELLS["lstm"], num_layers=3)
    params = layer.init(jax.random.key(0), 4)
    xs = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
    outputs, final = layer.apply(params, xs)
    stepped, stepped_final = seqlab.scan(layer, params, xs)  # the stack as one cell
    np.testing.assert_allclose(outputs, stepped, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(final[2]["forward"].c, stepped_final[2]["forward"].c, rtol=1e-6)


def test_given_state_is_used(rng):
    layer = RNNLayer(CELLS["gru_cudnn"], num_layers=2, bidirectional=True)
    params = layer.init(jax.random.key(0), 4)
    xs = jnp.asarray(rng.normal(size=(2, 5, 4)), jnp.float32)
    state = jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), jnp.float32),
        layer.initial_carry(params, (2,)),
    )
    outputs, _ = layer.apply(params, xs, carry=state)
    first, _ = seqlab.scan(
        CELLS["gru_cudnn"], params[0]["backward"], xs, state[0]["backward"], reverse=True
    )
    assert not np.allclose(outputs, layer.apply(params, xs)[0])
    # Layer 1's output depends on layer 0's, so compare layer 0 through a 1-layer stack.
    one = RNNLayer(CELLS["gru_cudnn"], num_layers=1, bidirectional=True)
    got, _ = one.apply(params[:1], xs, carry=state[:1])
    np.testing.assert_allclose(got[..., 6:], first, rtol=1e-6, atol=1e-7)


def test_gradients_through_bidirectional_stack_with_lengths(rng):
    layer = RNNLayer(CELLS["lstm"], num_layers=2, bidirectional=True)
    params = layer.init(jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    lengths = jnp.array([5, 2])
    grad = jax.jit(
        jax.grad(lambda xs: jnp.sum(layer.apply(params, xs, seq_lengths=lengths)[0] ** 2))
    )(xs)
    assert np.all(np.asarray(grad)[1, 2:] == 0.0)
    assert np.all(np.abs(np.asarray(grad)[:, :2]) > 0.0)


@pytest.mark.parametrize(
    "make_bad, match",
    [
        (lambda: RNNLayer(CELLS["lstm"], num_layers=0), "num_layers must be a positive int"),
        (lambda: RNNLayer(CELLS["lstm"], dropout=1.0), r"dropout must be a rate in \[0, 1\)"),
        (lambda: RNNLayer([CELLS["lstm"]], num_layers=2), "one per layer"),
        (lambda: RNNLayer("lstm"), "a cell must have callable"),
    ],
)
def test_bad_layer_arguments(make_bad, match):
    with pytest.raises(ValueError, match=match):
        make_bad()


def test_bad_apply_arguments(rng):
    layer = RNNLayer(CELLS["lstm"], num_layers=2, bidirectional=True, dropout=0.2)
    params = layer.init(jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        layer.apply(params, xs, train=True)
    with pytest.raises(ValueError, match="sequence of 2 per-layer dicts"):
        layer.apply(params[:1], xs)
    with pytest.raises(ValueError, match="must be a dict with keys"):
        layer.apply(({"forward": params[0]["forward"]}, params[1]), xs)
    with pytest.raises(ValueError, match="carry must be a sequence of 2"):
        layer.apply(params, xs, carry=layer.initial_carry(params, (2,))[:1])
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        layer.apply(params, xs[0])
    with pytest.raises(ValueError, match="no single step"):
        layer.step(params, layer.initial_carry(params, (2,)), xs[:, 0])
