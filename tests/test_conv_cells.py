"""ConvLSTM and ConvGRU against float64 NumPy loops (tests/references.py), and their use
everywhere a cell goes: lengths, reverse, stacked and bidirectional layers, remat,
hoisting, gradient analysis, Flax's ConvLSTMCell.

Tolerances (relative error: max |difference| / max |reference|, tests/references.py):
    float32 seqlab vs float64 NumPy, T = 4:              1e-5
    float64 seqlab vs float64 NumPy:                     1e-12
    bfloat16 inputs and parameters vs float64 NumPy:     5e-2  (8-bit mantissas: a few
        roundings of about 4e-3 per step; accumulation is float32)
    one implementation against another (alone vs batched, remat, hoisting, RNNLayer vs
        scans by hand), float32:                          1e-6
    hidden_grad_norms vs central differences, float64:   1e-8
    Flax's nn.RNN(ConvLSTMCell) vs the converted cell, float32: 1e-5
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import seqlab
from seqlab.analysis import hidden_grad_norms
from seqlab.cells import LSTMState
from seqlab.interop import from_flax_linen
from seqlab.layers import RNNLayer
from tests.references import (
    conv_lstm_reference_step,
    conv_reference_scan,
    relative_error,
    same_convolution,
)

FLOAT32_TOLERANCE = 1e-5
FLOAT64_TOLERANCE = 1e-12
BFLOAT16_TOLERANCE = 5e-2
SAME_MATH_TOLERANCE = 1e-6
GRAD_NORM_TOLERANCE = 1e-8
FLAX_TOLERANCE = 1e-5

INPUT_SIZE = 2
HIDDEN = 3

# 1-D and 2-D maps, with and without peepholes, odd and even kernels, one kernel larger
# than the map it slides over.
CONFIGS = {
    "lstm-1d-k3-peephole": ("conv_lstm", dict(spatial_shape=(5,), kernel_size=3, peephole=True)),
    "lstm-1d-k4": ("conv_lstm", dict(spatial_shape=(5,), kernel_size=4)),
    "lstm-2d-k2x3-peephole": (
        "conv_lstm",
        dict(spatial_shape=(4, 3), kernel_size=(2, 3), peephole=True),
    ),
    "lstm-2d-k3": ("conv_lstm", dict(spatial_shape=(3, 4), kernel_size=3)),
    "gru-1d-k2": ("conv_gru", dict(spatial_shape=(5,), kernel_size=2)),
    "gru-2d-k3x2": ("conv_gru", dict(spatial_shape=(4, 3), kernel_size=(3, 2))),
    "gru-2d-k4-wider-than-map": ("conv_gru", dict(spatial_shape=(3, 2), kernel_size=4)),
}


def _make(name, **overrides):
    kind, options = CONFIGS[name]
    return seqlab.cells.make(kind, hidden_size=HIDDEN, **{**options, **overrides})


def _random_params(cell, input_size, rng, dtype=np.float32):
    """Every parameter random and nonzero, peepholes included, drawn by NumPy (no eager
    JAX ops to compile): kernels N(0, 1 / fan-in), biases and peepholes N(0, 0.5²)."""
    shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    params = {}
    for name, leaf in shapes.items():
        fan_in = math.prod(leaf.shape[:-1])
        scale = 1 / math.sqrt(fan_in) if name in ("w_x", "w_h") else 0.5
        params[name] = jnp.asarray(scale * rng.normal(size=leaf.shape), dtype)
    return params


def _random_layer_params(layer, input_size, rng, dtype=np.float32):
    """``_random_params`` for every layer and direction of an RNNLayer."""
    params, size = [], input_size
    for cell in layer.cells:
        params.append({d: _random_params(cell, size, rng, dtype) for d in layer.directions})
        size = HIDDEN * len(layer.directions)
    params = tuple(params)
    shapes = jax.eval_shape(lambda key: layer.init(key, input_size), jax.random.key(0))
    assert jax.tree_util.tree_map(jnp.shape, shapes) == jax.tree_util.tree_map(jnp.shape, params)
    return params


def _inputs(rng, cell, batch_size, num_steps, dtype=np.float32):
    return rng.normal(size=(batch_size, num_steps, *cell.spatial_shape, INPUT_SIZE)).astype(dtype)


def _carry_leaves(carry):
    """(h, c) for ConvLSTM, (h,) for ConvGRU: comparable with the references' carries."""
    return (carry.h, carry.c) if isinstance(carry, LSTMState) else (carry,)


def _reference_leaves(carry):
    return carry if isinstance(carry, tuple) else (carry,)


def test_same_convolution_reference_is_numpy_correlate():
    """The reference's padding and orientation, pinned to NumPy's own cross-correlation:
    (k - 1) // 2 zeros before, the rest after, no kernel flip."""
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 4, 7):
        x, w = rng.normal(size=5), rng.normal(size=k)
        full = np.correlate(np.pad(x, (k - 1, k - 1)), w, mode="valid")  # length 5 + k - 1
        low = (k - 1) // 2
        expected = full[k - 1 - low : k - 1 - low + 5]
        got = same_convolution(x[:, None], w[:, None, None])[:, 0]
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_matches_numpy_reference(name, dtype, rng):
    cell = _make(name)
    xs = _inputs(rng, cell, batch_size=2, num_steps=4, dtype=np.float64)
    tolerance = {
        "float32": FLOAT32_TOLERANCE,
        "float64": FLOAT64_TOLERANCE,
        "bfloat16": BFLOAT16_TOLERANCE,
    }[dtype]
    with jax.enable_x64(dtype == "float64"):
        params = _random_params(cell, INPUT_SIZE, rng, dtype)
        assert set(params) == (
            {"w_x", "w_h", "b", "w_ci", "w_cf", "w_co"}
            if getattr(cell, "peephole", False)
            else {"w_x", "w_h", "b"}
        )
        xs_jax = jnp.asarray(xs, dtype)
        outputs, final = seqlab.scan(cell, params, xs_jax)
        assert outputs.dtype == jnp.dtype(dtype)
        assert outputs.shape == (2, 4, *cell.spatial_shape, HIDDEN)
        # the reference reads the values seqlab read (rounded to bfloat16 there)
        expected, expected_final = conv_reference_scan(cell, params, np.asarray(xs_jax, np.float64))
    assert relative_error(outputs, expected) < tolerance
    assert relative_error(_carry_leaves(final), _reference_leaves(expected_final)) < tolerance


@pytest.mark.parametrize("name", ["lstm-2d-k2x3-peephole", "gru-1d-k2"])
def test_reverse_with_lengths_matches_numpy_reference(name, rng):
    cell = _make(name)
    params = _random_params(cell, INPUT_SIZE, rng)
    xs = _inputs(rng, cell, batch_size=3, num_steps=4)
    lengths = np.array([4, 1, 3])
    outputs, final = seqlab.scan(cell, params, jnp.asarray(xs), seq_lengths=lengths, reverse=True)
    expected, expected_final = conv_reference_scan(
        cell, params, xs, seq_lengths=lengths, reverse=True
    )
    assert relative_error(outputs, expected) < FLOAT32_TOLERANCE
    assert relative_error(_carry_leaves(final), _reference_leaves(expected_final)) < (
        FLOAT32_TOLERANCE
    )


def _loss(cell, weights, final_weights):
    """A scalar of every output and the final state (each leaf of it), for gradients."""

    def loss(params, xs, **scan_options):
        outputs, final = seqlab.scan(cell, params, xs, **scan_options)
        value = jnp.sum(jnp.sin(outputs) * weights[: xs.shape[0], : xs.shape[1]])
        for leaf in _carry_leaves(final):
            value = value + jnp.sum(leaf * final_weights[: xs.shape[0]])
        return value, outputs

    return loss


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["lstm-2d-k2x3-peephole", "gru-1d-k2"])
def test_lengths_with_nan_padding_equal_each_sequence_alone(name, reverse, rng):
    """Outputs and gradients (inputs and parameters) of a padded batch with NaN and inf
    past each length equal those of each sequence run alone on its valid steps."""
    cell = _make(name)
    params = _random_params(cell, INPUT_SIZE, rng)
    lengths = [4, 2, 0]
    xs = _inputs(rng, cell, batch_size=3, num_steps=4)
    for b, length in enumerate(lengths):
        xs[b, length:] = np.nan
        xs[b, length + 1 :] = np.inf
    shape = (3, 4, *cell.spatial_shape, HIDDEN)
    weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
    final_weights = jnp.asarray(rng.normal(size=(3, *shape[2:])), jnp.float32)
    grad = jax.value_and_grad(_loss(cell, weights, final_weights), argnums=(0, 1), has_aux=True)
    grad = jax.jit(grad, static_argnames="reverse")

    (_, outputs), (params_grad, xs_grad) = grad(
        params, jnp.asarray(xs), seq_lengths=jnp.asarray(lengths), reverse=reverse
    )
    assert np.all(np.isfinite(outputs)) and np.all(np.isfinite(xs_grad))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(params_grad))
    summed = jax.tree_util.tree_map(jnp.zeros_like, params)
    for b, length in enumerate(lengths):
        np.testing.assert_array_equal(outputs[b, length:], 0.0)
        np.testing.assert_array_equal(xs_grad[b, length:], 0.0)
        alone = _loss(cell, weights[b:], final_weights[b:])
        (_, outputs_b), (params_grad_b, xs_grad_b) = jax.jit(
            jax.value_and_grad(alone, argnums=(0, 1), has_aux=True), static_argnames="reverse"
        )(params, jnp.asarray(xs[b : b + 1, :length]), reverse=reverse)
        if length:
            assert relative_error(outputs[b : b + 1, :length], outputs_b) < SAME_MATH_TOLERANCE
            assert relative_error(xs_grad[b : b + 1, :length], xs_grad_b) < SAME_MATH_TOLERANCE
        summed = jax.tree_util.tree_map(jnp.add, summed, params_grad_b)
    for name_ in params:
        assert relative_error(params_grad[name_], summed[name_]) < SAME_MATH_TOLERANCE, name_


def test_stacked_bidirectional_layer_equals_scans_by_hand(rng):
    """A ConvLSTM (peepholes) layer under a ConvGRU layer, both bidirectional, with
    lengths: each direction is seqlab.scan, the backward one reversed within each length,
    the next layer reading [forward, backward] channels."""
    cells = (_make("lstm-1d-k3-peephole"), _make("gru-1d-k2"))
    layer = RNNLayer(cells, num_layers=2, bidirectional=True)
    params = _random_layer_params(layer, INPUT_SIZE, rng)
    xs = jnp.asarray(_inputs(rng, cells[0], batch_size=3, num_steps=4))
    lengths = jnp.array([4, 3, 1])
    outputs, finals = layer.apply(params, xs, seq_lengths=lengths)
    assert outputs.shape == (3, 4, *cells[0].spatial_shape, 2 * HIDDEN)

    hidden = xs
    for index, cell in enumerate(cells):
        forward, final_forward = seqlab.scan(
            cell, params[index]["forward"], hidden, seq_lengths=lengths
        )
        backward, final_backward = seqlab.scan(
            cell, params[index]["backward"], hidden, seq_lengths=lengths, reverse=True
        )
        got = finals[index]
        for want, direction in ((final_forward, "forward"), (final_backward, "backward")):
            err = relative_error(_carry_leaves(got[direction]), _carry_leaves(want))
            assert err < SAME_MATH_TOLERANCE, (index, direction, err)
        hidden = jnp.concatenate([forward, backward], axis=-1)
    assert relative_error(outputs, hidden) < SAME_MATH_TOLERANCE


@pytest.mark.parametrize("name", ["lstm-2d-k2x3-peephole", "gru-2d-k3x2"])
def test_remat_and_hoisting_change_nothing(name, rng):
    cell = _make(name)
    params = _random_params(cell, INPUT_SIZE, rng)
    xs = jnp.asarray(_inputs(rng, cell, batch_size=2, num_steps=5))
    lengths = jnp.array([5, 3])
    shape = (2, 5, *cell.spatial_shape, HIDDEN)
    weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
    final_weights = jnp.asarray(rng.normal(size=(2, *shape[2:])), jnp.float32)
    grad = jax.value_and_grad(_loss(cell, weights, final_weights), argnums=(0, 1), has_aux=True)
    grad = jax.jit(grad, static_argnames=("hoist_input_projection", "remat"))

    def run(**options):
        (_, outputs), grads = grad(params, xs, seq_lengths=lengths, **options)
        return outputs, grads

    base_outputs, base_grads = run(hoist_input_projection=False, remat=False)
    # the settings take effect: the input convolution leaves the loop, blocks are remat'ed
    for hoist, remat in ((False, False), (True, False), (True, True)):
        jaxpr = jax.make_jaxpr(
            lambda p, x, hoist=hoist, remat=remat: seqlab.scan(
                cell, p, x, hoist_input_projection=hoist, remat=remat
            )
        )(params, xs)
        # the cells convolve by lax's convolution, or by one matmul over stacked taps on
        # the backends in BY_TAPS_BACKENDS: either way one contraction outside the loop
        contractions = ("conv_general_dilated", "dot_general")
        outside = [e for e in jaxpr.eqns if e.primitive.name in contractions]
        assert len(outside) == int(hoist), (hoist, remat)
        assert ("remat" in str(jaxpr)) == remat, (hoist, remat)
    for options in (
        dict(hoist_input_projection=True, remat=False),
        dict(hoist_input_projection=True, remat=True),  # blocks of 2 steps: 2 + 2 + 1
    ):
        outputs, grads = run(**options)
        assert relative_error(outputs, base_outputs) < SAME_MATH_TOLERANCE, options
        for got, want in zip(
            jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(base_grads), strict=True
        ):
            assert relative_error(got, want) < SAME_MATH_TOLERANCE, options


@pytest.mark.parametrize(
    "kind, options",
    [
        ("conv_lstm", dict(spatial_shape=(3,), kernel_size=2, peephole=True)),
        ("conv_gru", dict(spatial_shape=(2, 3), kernel_size=(2, 3))),
    ],
)
def test_gradients_match_finite_differences_float64(kind, options, rng):
    cell = seqlab.cells.make(kind, hidden_size=2, **options)
    xs = rng.normal(size=(1, 3, *cell.spatial_shape, 2))
    with jax.enable_x64(True):
        params = _random_params(cell, 2, rng, np.float64)

        def loss(params, xs):
            outputs, final = seqlab.scan(cell, params, xs)
            leaves = _carry_leaves(final)
            return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(leaf**2) for leaf in leaves)

        check_grads(jax.jit(loss), (params, jnp.asarray(xs)), order=1, modes=["rev"], eps=1e-6)


def _numpy_stack_loss(cells, params, xs, lengths, weights, deltas):
    """L = Σ weights ⊙ sin(top outputs) of a unidirectional stack of ConvLSTMs run by the
    NumPy reference, with deltas[l][b, t] added to layer l's h after step t."""
    hidden = xs
    for cell, layer, delta in zip(cells, params, deltas, strict=True):
        out = np.zeros((*hidden.shape[:-1], cell.hidden_size))
        for b in range(hidden.shape[0]):
            h = c = np.zeros(out.shape[2:])
            for t in range(lengths[b]):
                (h, c), _ = conv_lstm_reference_step(cell, layer["forward"], (h, c), hidden[b, t])
                h = h + delta[b, t]
                out[b, t] = h
        hidden = out
    return float(np.sum(weights * np.sin(hidden)))


def test_hidden_grad_norms_equal_central_differences(rng):
    """‖∂L/∂h_t‖ of a two-layer ConvLSTM (peepholes) layer, per layer, sequence and step
    (the norm over every position and channel of the map), against central differences
    of the NumPy reference with h_t perturbed entry by entry; zero at padded steps."""
    cell = _make("lstm-1d-k3-peephole", spatial_shape=(3,))
    layer = RNNLayer(cell, num_layers=2)
    lengths = np.array([3, 2])
    xs = _inputs(rng, cell, batch_size=2, num_steps=3, dtype=np.float64)
    weights = rng.normal(size=(2, 3, 3, HIDDEN))
    with jax.enable_x64(True):
        params = _random_layer_params(layer, INPUT_SIZE, rng, np.float64)
        norms = hidden_grad_norms(
            layer,
            params,
            jnp.asarray(xs),
            lambda out: jnp.sum(jnp.asarray(weights) * jnp.sin(out)),
            seq_lengths=jnp.asarray(lengths),
        )
    assert norms.shape == (2, 2, 3)
    cells, eps = (cell, cell), 1e-5
    numpy_params = [
        {"forward": {k: np.asarray(v, np.float64) for k, v in per_layer["forward"].items()}}
        for per_layer in params
    ]
    expected = np.zeros((2, 2, 3))
    for index in range(2):
        for b in range(2):
            for t in range(3):
                gradient = np.zeros((3, HIDDEN))
                for k in np.ndindex(3, HIDDEN):
                    deltas = [np.zeros((2, 3, 3, HIDDEN)) for _ in cells]
                    values = []
                    for sign in (1.0, -1.0):
                        deltas[index][(b, t, *k)] = sign * eps
                        values.append(
                            _numpy_stack_loss(cells, numpy_params, xs, lengths, weights, deltas)
                        )
                    gradient[k] = (values[0] - values[1]) / (2 * eps)
                expected[index, b, t] = np.linalg.norm(gradient)
    assert np.all(expected[:, 1, 2] == 0) and np.all(norms[:, 1, 2] == 0)  # padded step
    assert np.all(expected[:, :, :2] > 1e-3)
    np.testing.assert_allclose(norms, expected, rtol=GRAD_NORM_TOLERANCE, atol=1e-12)


@pytest.mark.parametrize("kind", ["conv_lstm", "conv_gru"])
def test_missing_spatial_shape_is_a_clear_error(kind):
    cls = {"conv_lstm": seqlab.cells.ConvLSTM, "conv_gru": seqlab.cells.ConvGRU}[kind]
    for build in (lambda: cls(4), lambda: seqlab.cells.make(kind, hidden_size=4)):
        with pytest.raises(ValueError, match=r"needs spatial_shape.*e\.g\. \(32, 32\) or \(64,\)"):
            build()
    with pytest.raises(ValueError, match="kernel_size must be a positive int or one per spatial"):
        cls(4, spatial_shape=(6, 5), kernel_size=(3,))


@pytest.mark.parametrize("kind", ["conv_lstm", "conv_gru"])
def test_wrong_frames_are_clear_errors(kind, rng):
    cell = seqlab.cells.make(kind, hidden_size=HIDDEN, spatial_shape=(6, 5), kernel_size=3)
    params = _random_params(cell, INPUT_SIZE, rng)
    layer = RNNLayer(cell)
    layer_params = _random_layer_params(layer, INPUT_SIZE, rng)
    name = type(cell).__name__
    wrong_spatial = jnp.ones((2, 3, 6, 4, INPUT_SIZE))
    shape_message = rf"{name} was built for frames of spatial shape \(6, 5\).*spatial \(6, 4\)"
    with pytest.raises(ValueError, match=shape_message):
        seqlab.scan(cell, params, wrong_spatial)
    with pytest.raises(ValueError, match=shape_message):
        layer.apply(layer_params, wrong_spatial)
    rank_message = r"expected shape \(B, T, 6, 5, C\)"
    for wrong_rank in (jnp.ones((2, 3, 6, INPUT_SIZE)), jnp.ones((2, 3, 1, 6, 5, INPUT_SIZE))):
        with pytest.raises(ValueError, match=rank_message):
            seqlab.scan(cell, params, wrong_rank)
        with pytest.raises(ValueError, match=rank_message):
            layer.apply(layer_params, wrong_rank)


# Flax linen's ConvLSTMCell. Flax's nn.RNN reads the number of spatial axes from the
# length of kernel_size, so 1-D kernels are written as 1-tuples.
FLAX_CASES = [((6,), (3,)), ((4, 5), (3, 3)), ((4, 5), (2, 3))]


@pytest.mark.parametrize("spatial_shape, kernel_size", FLAX_CASES)
def test_from_flax_linen_conv_lstm_matches_flax_rnn(spatial_shape, kernel_size, rng):
    from flax import linen

    flax_cell = linen.ConvLSTMCell(features=HIDDEN, kernel_size=kernel_size)
    rnn = linen.RNN(flax_cell, return_carry=True)
    x = jnp.asarray(rng.normal(size=(3, 4, *spatial_shape, INPUT_SIZE)), jnp.float32)
    lengths = jnp.array([4, 2, 3])
    valid = jnp.asarray(np.arange(4)[None, :] < np.asarray(lengths)[:, None])
    valid = valid.reshape((3, 4) + (1,) * (len(spatial_shape) + 1))
    variables = rnn.init(jax.random.key(0), x)
    variables = jax.tree_util.tree_map(  # flax initializes biases at zero: perturb them
        lambda leaf: leaf + 0.1 * jnp.asarray(rng.normal(size=leaf.shape), jnp.float32), variables
    )
    weights = jnp.asarray(rng.normal(size=(3, 4, *spatial_shape, HIDDEN)), jnp.float32)

    def flax_loss(variables, x):
        (c, h), out = rnn.apply(variables, x, seq_lengths=lengths)
        return jnp.sum(jnp.where(valid, jnp.sin(out) * weights, 0.0)) + jnp.sum(c * h), out

    def seqlab_loss(variables, x):
        cell, params = from_flax_linen(
            flax_cell, variables["params"]["cell"], spatial_shape=spatial_shape
        )
        out, final = seqlab.scan(cell, params, x, seq_lengths=lengths)
        return jnp.sum(jnp.sin(out) * weights) + jnp.sum(final.c * final.h), out

    cell, _ = from_flax_linen(flax_cell, variables["params"]["cell"], spatial_shape=spatial_shape)
    assert cell.spatial_shape == spatial_shape and cell.kernel_size == kernel_size
    assert not cell.peephole
    grads = {}
    for name, loss in (("flax", flax_loss), ("seqlab", seqlab_loss)):
        grads[name] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(variables, x)
    (want_loss, want_out), (want_dvars, want_dx) = grads["flax"]
    (got_loss, got_out), (got_dvars, got_dx) = grads["seqlab"]
    valid_np = np.broadcast_to(np.asarray(valid), want_out.shape)
    assert relative_error(np.asarray(got_out)[valid_np], np.asarray(want_out)[valid_np]) < (
        FLAX_TOLERANCE
    )
    assert abs(float(got_loss) - float(want_loss)) <= FLAX_TOLERANCE * abs(float(want_loss))
    assert relative_error(got_dx, want_dx) < FLAX_TOLERANCE
    flat_want = jax.tree_util.tree_leaves_with_path(want_dvars)
    flat_got = jax.tree_util.tree_leaves_with_path(got_dvars)
    assert [p for p, _ in flat_got] == [p for p, _ in flat_want]
    for (path, got), (_, want) in zip(flat_got, flat_want, strict=True):
        assert relative_error(got, want) < FLAX_TOLERANCE, jax.tree_util.keystr(path)


def test_from_flax_linen_conv_lstm_without_bias(rng):
    from flax import linen

    flax_cell = linen.ConvLSTMCell(features=HIDDEN, kernel_size=(3,), use_bias=False)
    x = jnp.asarray(rng.normal(size=(2, 5, INPUT_SIZE)), jnp.float32)
    carry = flax_cell.initialize_carry(jax.random.key(0), x.shape)
    variables = flax_cell.init(jax.random.key(1), carry, x)
    assert set(variables["params"]["ih"]) == {"kernel"}
    cell, params = from_flax_linen(flax_cell, variables, spatial_shape=(5,))
    expected_bias = np.zeros(4 * HIDDEN, np.float32)
    expected_bias[HIDDEN : 2 * HIDDEN] = 1.0  # flax's runtime +1 on the forget gate
    np.testing.assert_array_equal(params["b"], expected_bias)
    state = LSTMState(
        h=jnp.asarray(rng.normal(size=(2, 5, HIDDEN)), jnp.float32),
        c=jnp.asarray(rng.normal(size=(2, 5, HIDDEN)), jnp.float32),
    )
    (want_c, want_h), want = flax_cell.apply(variables, (state.c, state.h), x)
    got_state, got = cell.step(params, state, x)
    assert relative_error(got, want) < FLAX_TOLERANCE
    assert relative_error((got_state.h, got_state.c), (want_h, want_c)) < FLAX_TOLERANCE


def test_from_flax_linen_conv_lstm_refuses_what_does_not_convert():
    from flax import linen

    variables = {}  # refused before the parameters are read
    conv = linen.ConvLSTMCell
    with pytest.raises(ValueError, match=r"needs spatial_shape= for a ConvLSTMCell"):
        from_flax_linen(conv(features=3, kernel_size=(3, 3)), variables)
    with pytest.raises(ValueError, match=r"one size per spatial axis.*\(2\), got \(5,\)"):
        from_flax_linen(conv(features=3, kernel_size=(3, 3)), variables, spatial_shape=(5,))
    with pytest.raises(ValueError, match=r"only stride 1 converts.*strides=\(2, 1\)"):
        from_flax_linen(
            conv(features=3, kernel_size=(3, 3), strides=(2, 1)), variables, spatial_shape=(4, 4)
        )
    for padding in ("VALID", "CIRCULAR", ((1, 1), (1, 1))):
        with pytest.raises(ValueError, match=r"only padding='SAME' converts.*padding="):
            from_flax_linen(
                conv(features=3, kernel_size=(3, 3), padding=padding),
                variables,
                spatial_shape=(4, 4),
            )
    with pytest.raises(ValueError, match=r"computing in its parameters' dtype.*bfloat16"):
        from_flax_linen(
            conv(features=3, kernel_size=(3,), dtype=jnp.bfloat16), variables, spatial_shape=(4,)
        )
    with pytest.raises(ValueError, match=r"spatial_shape is for flax.linen.ConvLSTMCell only"):
        from_flax_linen(linen.LSTMCell(features=3), variables, spatial_shape=(4,))


@pytest.mark.parametrize(
    "x_shape, kernel_shape",
    [((3, 4, 10, 5), (3, 5, 7)), ((2, 6, 7, 3), (2, 3, 3, 5)), ((2, 9, 4), (4, 4, 6))],
)
def test_both_convolution_methods_give_the_same_numbers(x_shape, kernel_shape, rng):
    """The cells convolve by taps on a CPU (BY_TAPS_BACKENDS) and by lax's convolution
    elsewhere: the two agree, values and gradients, odd and even kernels, 1-D and 2-D."""
    from seqlab._convolution import convolve, convolve_by_taps

    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=convolve(x, kernel).shape), jnp.float32)

    def loss(method):
        return lambda x, k: jnp.sum(method(x, k) * cotangent)

    np.testing.assert_allclose(
        convolve_by_taps(x, kernel), convolve(x, kernel), rtol=1e-5, atol=1e-5
    )
    for by_taps, by_lax in zip(
        jax.grad(loss(convolve_by_taps), argnums=(0, 1))(x, kernel),
        jax.grad(loss(convolve), argnums=(0, 1))(x, kernel),
        strict=True,
    ):
        np.testing.assert_allclose(by_taps, by_lax, rtol=1e-5, atol=1e-4)


def test_the_parallel_solve_gives_the_sequential_answer(rng):
    """implementation="parallel" (Newton with full Jacobians of the flattened map) on a
    small 1-D map: outputs and gradients equal the sequential scan's, with lengths. (One
    cell: the solve's compilation is the slowest part of this file.)"""
    cell = seqlab.cells.make("conv_gru", hidden_size=3, spatial_shape=(4,), kernel_size=3)
    params = _random_params(cell, 2, rng)
    xs = jnp.asarray(rng.normal(size=(2, 6, 4, 2)), jnp.float32)
    lengths = jnp.array([6, 4])
    weights = jnp.asarray(rng.normal(size=(2, 6, 4, 3)), jnp.float32)

    def loss(params, implementation):
        outputs, _ = seqlab.scan(
            cell, params, xs, seq_lengths=lengths, implementation=implementation
        )
        return jnp.sum(outputs * weights), outputs

    # no fallback (an unconverged solve gives NaN) and fewer iterations than steps, so the
    # comparison is of the parallel solve itself, not of the sequential scan behind it
    strict = seqlab.parallel.Parallel(fallback=False, max_iterations=5)
    (_, parallel), parallel_grads = jax.value_and_grad(loss, has_aux=True)(params, strict)
    (_, sequential), sequential_grads = jax.value_and_grad(loss, has_aux=True)(params, "xla")
    np.testing.assert_allclose(parallel, sequential, rtol=1e-5, atol=1e-5)
    for name in sequential_grads:
        np.testing.assert_allclose(
            parallel_grads[name], sequential_grads[name], rtol=1e-4, atol=1e-4, err_msg=name
        )
