"""Each built-in cell against a float64 NumPy loop, and its gradients by finite differences.

Tolerances (relative error: max abs difference / max abs reference value):
    float32 seqlab vs float64 NumPy, T = 12:   2e-5   (a few float32 roundings per step)
    float64 seqlab vs float64 NumPy:            1e-12  (same math, different summation order)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import seqlab
from tests.helpers import CELLS, random_params, to_float64
from tests.references import reference_scan, relative_error

FLOAT32_TOLERANCE = 2e-5
FLOAT64_TOLERANCE = 1e-12


@pytest.mark.parametrize("name", sorted(CELLS))
def test_cell_matches_numpy_loop_float32(name, rng):
    cell = CELLS[name]
    params = random_params(cell, jax.random.key(0), input_size=5)
    xs = rng.normal(size=(3, 12, 5)).astype(np.float32)
    outputs, final = seqlab.scan(cell, params, jnp.asarray(xs))
    expected_outputs, expected_final = reference_scan(cell, params, xs)
    assert relative_error(outputs, expected_outputs) < FLOAT32_TOLERANCE
    assert (
        relative_error(tuple(final) if isinstance(final, tuple) else final, expected_final)
        < FLOAT32_TOLERANCE
    )


@pytest.mark.parametrize("name", sorted(CELLS))
def test_cell_matches_numpy_loop_float64(name, rng):
    cell = CELLS[name]
    xs = rng.normal(size=(2, 9, 5))
    with jax.enable_x64(True):
        params = to_float64(random_params(cell, jax.random.key(1), input_size=5))
        outputs, _ = seqlab.scan(cell, params, jnp.asarray(xs, jnp.float64))
        assert outputs.dtype == jnp.float64
        expected, _ = reference_scan(cell, params, xs)
        assert relative_error(outputs, expected) < FLOAT64_TOLERANCE


@pytest.mark.parametrize("name", sorted(CELLS))
def test_cell_gradients_match_finite_differences(name, rng):
    cell = CELLS[name]
    xs = rng.normal(size=(2, 4, 3))
    with jax.enable_x64(True):
        params = to_float64(random_params(cell, jax.random.key(2), input_size=3))
        if name == "rnn_relu":  # keep pre-activations away from relu's kink
            params["b"] = params["b"] + 2.0

        def loss(params, xs):
            outputs, _ = seqlab.scan(cell, params, xs)
            return jnp.sum(jnp.sin(outputs))

        check_grads(loss, (params, jnp.asarray(xs)), order=1, modes=["rev"], eps=1e-6)


def test_lstm_forget_bias_initializes_forget_gate_bias():
    params = seqlab.cells.LSTM(4, forget_bias=1.5).init(jax.random.key(0), 3)
    np.testing.assert_array_equal(params["b"][4:8], np.full(4, 1.5))
    np.testing.assert_array_equal(params["b"][:4], np.zeros(4))


def test_recurrent_init_is_orthogonal_per_gate():
    params = seqlab.cells.GRU(5).init(jax.random.key(0), 3)
    for gate in range(3):
        block = np.asarray(params["w_hh"][:, 5 * gate : 5 * (gate + 1)], np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(5), atol=1e-5)


def test_user_defined_cell_runs_everywhere(rng):
    """The README's ten-line cell: a plain Elman cell written as three functions."""

    def init(key, input_size):
        k1, k2 = jax.random.split(key)
        return {
            "w_x": jax.random.normal(k1, (input_size, 7)) / input_size**0.5,
            "w_h": jax.nn.initializers.orthogonal()(k2, (7, 7)),
        }

    def initial_carry(params, batch_shape):
        return jnp.zeros((*batch_shape, params["w_h"].shape[0]))

    def step(params, h, x):
        h = jnp.tanh(x @ params["w_x"] + h @ params["w_h"])
        return h, h

    custom = seqlab.cells.Cell(init, initial_carry, step)
    builtin = seqlab.cells.RNN(7, use_bias=False)
    params = custom.init(jax.random.key(0), 4)
    xs = jnp.asarray(rng.normal(size=(3, 8, 4)), jnp.float32)
    lengths = jnp.array([8, 5, 1])
    got, got_final = seqlab.scan(custom, params, xs, seq_lengths=lengths, reverse=True)
    same_params = {"w_ih": params["w_x"], "w_hh": params["w_h"]}
    want, want_final = seqlab.scan(builtin, same_params, xs, seq_lengths=lengths, reverse=True)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_final, want_final, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru_cudnn", "rnn_tanh"])
def test_trainable_initial_state_is_used_and_learned(name, rng):
    cell = seqlab.cells.TrainableInitialState(CELLS[name])
    params = cell.init(jax.random.key(0), 3)
    params["initial_state"] = jax.tree_util.tree_map(
        lambda leaf: leaf + jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype),
        params["initial_state"],
    )
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    outputs, _ = seqlab.scan(cell, params, xs)
    batched = cell.initial_carry(params, (2,))
    expected, _ = reference_scan(
        CELLS[name],
        params["cell"],
        np.asarray(xs),
        carry=tuple(batched) if isinstance(batched, tuple) else batched,
    )
    assert relative_error(outputs, expected) < FLOAT32_TOLERANCE
    grads = jax.grad(lambda p: jnp.sum(seqlab.scan(cell, p, xs)[0] ** 2))(params)
    assert all(
        float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads["initial_state"])
    )


def test_make_looks_cells_up_by_name():
    assert seqlab.cells.make("gru", hidden_size=3, variant="original") == seqlab.cells.GRU(
        3, variant="original"
    )
    assert set(seqlab.cells.registered()) >= {"rnn", "lstm", "gru", "mgu"}
    wrapped = seqlab.cells.make("mgu", hidden_size=3, trainable_initial_state=True)
    assert wrapped == seqlab.cells.TrainableInitialState(seqlab.cells.MGU(3))


@pytest.mark.parametrize(
    "make_bad, match",
    [
        (lambda: seqlab.cells.make("transformer", hidden_size=3), "unknown cell 'transformer'"),
        (lambda: seqlab.cells.RNN(4, activation="sigmoid"), "activation must be one of"),
        (lambda: seqlab.cells.GRU(4, variant="keras"), "variant must be one of"),
        (lambda: seqlab.cells.LSTM(0), "hidden_size must be a positive int, got 0"),
        (lambda: seqlab.cells.LSTM(4, proj_size=4), "proj_size must be smaller"),
        (lambda: seqlab.cells.LSTM(4).init(jax.random.key(0), 2.5), "input_size must be"),
        (lambda: seqlab.cells.register("lstm", seqlab.cells.LSTM), "registered already"),
    ],
)
def test_bad_cell_arguments_raise_value_error(make_bad, match):
    with pytest.raises(ValueError, match=match):
        make_bad()


# The cells built for parallel-in-time solves, against float64 loops written from their
# papers' equations (tests/references.py), both directions, ragged lengths; gradients
# against central differences of that reference along random directions. Tolerances:
# float32 outputs 2e-5 relative (as above); float64 gradients 1e-6 relative (differences
# with step 1e-5 are exact to about 1e-9 here).
PARALLEL_CELLS = {
    "mingru": seqlab.cells.MinGRU(5),
    "minlstm": seqlab.cells.MinLSTM(5),
    "diag_gru": seqlab.cells.DiagGRU(5),
    "diag_lstm": seqlab.cells.DiagLSTM(5),
}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", sorted(PARALLEL_CELLS))
def test_parallel_cells_match_their_papers_equations(name, reverse, rng):
    cell = PARALLEL_CELLS[name]
    xs = rng.normal(size=(3, 6, 3))
    lengths = np.array([6, 2, 4])
    params = random_params(cell, jax.random.key(4), input_size=3)
    outputs, final = seqlab.scan(
        cell, params, jnp.asarray(xs, jnp.float32), seq_lengths=lengths, reverse=reverse
    )
    expected, expected_final = reference_scan(
        cell, params, xs, seq_lengths=lengths, reverse=reverse
    )
    assert relative_error(outputs, expected) < FLOAT32_TOLERANCE
    final = tuple(final) if isinstance(final, tuple) else final
    assert relative_error(final, expected_final) < FLOAT32_TOLERANCE

    weights = rng.normal(size=expected.shape)
    with jax.enable_x64(True):
        params64 = to_float64(params)

        def loss(params):
            outputs, _ = seqlab.scan(
                cell, params, jnp.asarray(xs), seq_lengths=lengths, reverse=reverse
            )
            return jnp.sum(jnp.asarray(weights) * outputs)

        grads = jax.grad(loss)(params64)
    for name_, leaf in params64.items():
        direction = rng.normal(size=leaf.shape)
        shifted = [
            {**params64, name_: np.asarray(leaf) + sign * 1e-5 * direction} for sign in (1, -1)
        ]
        losses = [
            np.sum(weights * reference_scan(cell, q, xs, seq_lengths=lengths, reverse=reverse)[0])
            for q in shifted
        ]
        numeric = (losses[0] - losses[1]) / 2e-5
        analytic = float(np.sum(np.asarray(grads[name_]) * direction))
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (name_, analytic, numeric)
