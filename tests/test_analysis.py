"""Gradient-flow analysis against the theory where it is exact, and against brute force.

Tolerances: float64 (``jax.enable_x64``) results against closed forms: 1e-9 relative.
float32 against closed forms over 1000 steps: 5e-4 relative (γ itself rounds to float32:
a relative error of 3e-8 in γ grows to about 3e-5 in γ^999; the rest is rounding in the
renormalized products). float32 over 50 steps: 1e-4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqlab
from seqlab.analysis import (
    first_non_finite,
    fit_decay_rate,
    gate_saturation,
    hidden_grad_norms,
    jacobian_norms,
    recurrent_spectrum,
)
from seqlab.layers import RNNLayer
from tests.helpers import CELLS, random_params


def _orthogonal(size, seed=0):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(size, size)))[0]


def _linear_rnn(gamma, size=6, dtype=jnp.float32, activation="identity"):
    cell = seqlab.cells.RNN(size, activation=activation, use_bias=False)
    layer = RNNLayer(cell)
    w_ih = np.random.default_rng(1).normal(size=(3, size))
    params = (
        {
            "forward": {
                "w_ih": jnp.asarray(w_ih, dtype),
                "w_hh": jnp.asarray(gamma * _orthogonal(size), dtype),
            }
        },
    )
    return layer, params


@pytest.mark.parametrize("gamma", [0.9, 1.1])
def test_linear_rnn_jacobian_norms_are_powers_of_gamma_float64(gamma):
    num_steps = 1000
    with jax.enable_x64(True):
        layer, params = _linear_rnn(gamma, dtype=jnp.float64)
        norms = jacobian_norms(layer, params, jnp.zeros((2, num_steps, 3), jnp.float64))
    expected = gamma ** np.arange(num_steps - 1, -1, -1, dtype=np.float64)
    assert norms.shape == (2, num_steps)
    np.testing.assert_allclose(norms, np.broadcast_to(expected, norms.shape), rtol=1e-9)
    if gamma < 1:
        assert 1e-47 < norms[0, 0] < 1e-45  # 0.9^999 ≈ 1.7e-46, far below float32's range


@pytest.mark.parametrize("gamma", [0.9, 1.1])
def test_linear_rnn_jacobian_norms_float32_do_not_underflow(gamma):
    num_steps = 1000
    layer, params = _linear_rnn(gamma)
    norms = jacobian_norms(layer, params, jnp.zeros((1, num_steps, 3)))
    gamma32 = float(np.float32(gamma))
    expected = gamma32 ** np.arange(num_steps - 1, -1, -1, dtype=np.float64)
    np.testing.assert_allclose(norms[0], expected, rtol=5e-4)


@pytest.mark.parametrize("gamma", [0.9, 1.1])
def test_linear_rnn_hidden_grad_norms_float64(gamma):
    """Loss <v, h_{T-1}>: ‖∂L/∂h_t‖ = γ^(T-1-t) ‖v‖ since W_hh = γQ with Q orthogonal."""
    num_steps = 400
    v = np.random.default_rng(2).normal(size=6)
    with jax.enable_x64(True):
        layer, params = _linear_rnn(gamma, dtype=jnp.float64)
        xs = jnp.asarray(np.random.default_rng(3).normal(size=(2, num_steps, 3)))
        norms = hidden_grad_norms(layer, params, xs, lambda out: jnp.sum(out[:, -1] @ v))
    expected = gamma ** np.arange(num_steps - 1, -1, -1, dtype=np.float64) * np.linalg.norm(v)
    assert norms.shape == (1, 2, num_steps) and norms.dtype == np.float64
    np.testing.assert_allclose(norms[0], np.broadcast_to(expected, (2, num_steps)), rtol=1e-9)


@pytest.mark.parametrize("gamma", [0.8, 1.0, 1.3])
def test_tanh_rnn_norms_bounded_by_gamma_powers(gamma):
    """γ^(T-1-t) ≥ ‖∂h_{T-1}/∂h_t‖ ≥ Π_{s>t} γ · min_units tanh'(z_s): the Jacobian is
    Π diag(tanh'(z_s)) γQ with Q orthogonal, so its largest singular value lies between
    the products of the factors' smallest and largest ones (tanh' = 1 − h_s²)."""
    layer, params = _linear_rnn(gamma, activation="tanh")
    xs = jnp.asarray(np.random.default_rng(4).normal(size=(3, 200, 3)), jnp.float32)
    norms = jacobian_norms(layer, params, xs)
    bound = gamma ** np.arange(199, -1, -1, dtype=np.float64)
    assert np.all(norms <= bound * (1 + 1e-4))
    assert np.all(norms[:, :-1] < bound[:-1])  # tanh' < 1 away from 0: strictly below
    hidden = np.asarray(layer.apply(params, xs)[0], np.float64)  # (B, T, H): h_s
    log_factor = np.log(gamma * np.min(1.0 - hidden**2, axis=-1))  # (B, T)
    # lower[b, t] = Π_{s=t+1}^{T-1} γ·min tanh'(z_s): the sums of the later steps' logs
    later = np.concatenate([np.cumsum(log_factor[:, ::-1], axis=1)[:, ::-1][:, 1:],
                            np.zeros((3, 1))], axis=1)  # fmt: skip
    assert np.all(norms >= np.exp(later) * (1 - 1e-4))
    assert norms[0, -1] == pytest.approx(1.0, rel=1e-6)  # ∂h_{T-1}/∂h_{T-1} = I


def test_lstm_with_zero_recurrent_weights_matches_closed_form(rng):
    """W_hh = 0: s_t = (h_t, c_t) with c_t = f_t c_{t-1} + i_t g_t and gates set by x_t only.

    J_t = [[0, diag(a_t f_t)], [0, diag(f_t)]] with a_t = o_t (1 - tanh² c_t), so
    J_{T-1}⋯J_{t+1} = [[0, diag(a_{T-1} Π f)], [0, diag(Π f)]] with Π f = f_{t+1}⋯f_{T-1},
    whose spectral norm is max_j |Π f_j| · sqrt(1 + a_{T-1,j}²) (1 for t = T-1).
    """
    hidden, num_steps = 5, 50
    cell = seqlab.cells.LSTM(hidden)
    params = random_params(cell, jax.random.key(0), 3, scale=0.5)
    params["w_hh"] = jnp.zeros_like(params["w_hh"])
    layer = RNNLayer(cell)
    xs = rng.normal(size=(2, num_steps, 3))
    norms = jacobian_norms(layer, ({"forward": params},), jnp.asarray(xs, jnp.float32))

    w_ih, b = np.asarray(params["w_ih"], np.float64), np.asarray(params["b"], np.float64)
    pre = xs @ w_ih + b
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    i, f, g, o = (pre[..., k * hidden : (k + 1) * hidden] for k in range(4))
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c = np.zeros((2, hidden))
    cs = []
    for t in range(num_steps):
        c = f[:, t] * c + i[:, t] * g[:, t]
        cs.append(c)
    a_last = o[:, -1] * (1 - np.tanh(cs[-1]) ** 2)
    expected = np.ones((2, num_steps))
    for t in range(num_steps - 1):
        product = np.prod(f[:, t + 1 :], axis=1)
        expected[:, t] = np.max(np.abs(product) * np.sqrt(1 + a_last**2), axis=1)
    np.testing.assert_allclose(norms, expected, rtol=1e-4)


def _brute_force_grad_norms(cell, params, xs, loss_fn):
    """One layer: ‖∂L/∂h_t‖ by differentiating, for each t separately, the roll-out from h_t."""
    num_steps = xs.shape[1]
    carry = cell.initial_carry(params, (xs.shape[0],))
    carries, outputs = [], []
    for t in range(num_steps):
        carry, y = cell.step(params, carry, xs[:, t])
        carries.append(carry)
        outputs.append(y)
    norms = np.zeros((xs.shape[0], num_steps))
    for t in range(num_steps):

        def from_hidden(hidden, t=t):
            carry = seqlab.cells.replace_hidden(carries[t], hidden)
            later = [hidden]
            for k in range(t + 1, num_steps):
                carry, y = cell.step(params, carry, xs[:, k])
                later.append(y)
            return loss_fn(jnp.stack(outputs[:t] + later, axis=1))

        grad = jax.grad(from_hidden)(seqlab.cells.hidden_of(carries[t]))
        norms[:, t] = np.linalg.norm(np.asarray(grad, np.float64), axis=-1)
    return norms


@pytest.mark.parametrize("name", ["lstm_proj", "gru_original", "mgu", "rnn_tanh"])
def test_hidden_grad_norms_equal_brute_force(name, rng):
    cell = CELLS[name]
    params = random_params(cell, jax.random.key(5), 3)
    xs = jnp.asarray(rng.normal(size=(2, 7, 3)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(2, 7)), jnp.float32)

    def loss_fn(outputs):  # every step's output contributes
        return jnp.sum(weights * jnp.sum(jnp.sin(outputs), axis=-1))

    norms = hidden_grad_norms(RNNLayer(cell), ({"forward": params},), xs, loss_fn)
    expected = _brute_force_grad_norms(cell, params, xs, loss_fn)
    np.testing.assert_allclose(norms[0], expected, rtol=1e-5, atol=1e-7)


def test_hidden_grad_norms_stacked_bidirectional_layout(rng):
    """Backward-direction norms equal forward norms of the same cell on reversed time."""
    cell = CELLS["gru_cudnn"]
    layer = RNNLayer(cell, num_layers=2, bidirectional=True)
    params = layer.init(jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(2, 6, 3)), jnp.float32)
    lengths = jnp.array([6, 4])
    norms = hidden_grad_norms(layer, params, xs, lambda out: jnp.sum(out**2), seq_lengths=lengths)
    assert norms.shape == (2, 2, 2, 6)
    assert np.all(norms[:, :, 1, 4:] == 0.0)  # padded steps
    assert np.all(norms[:, :, :, :4] > 0.0)
    # top layer, backward direction == a forward-only layer on time-reversed features
    lower = RNNLayer(cell, bidirectional=True)
    features, _ = lower.apply(params[:1], xs)
    single = RNNLayer(cell)
    reversed_norms = hidden_grad_norms(
        single,
        ({"forward": params[1]["backward"]},),
        features[:, ::-1],
        lambda out: (
            jnp.sum(out**2)
            + jnp.sum(RNNLayer(cell).apply(({"forward": params[1]["forward"]},), features)[0] ** 2)
        ),
    )
    np.testing.assert_allclose(norms[1, 1, 0], reversed_norms[0, 0, ::-1], rtol=1e-5)


def test_non_finite_gradients_are_reported_not_zeroed():
    layer, params = _linear_rnn(1.1)
    xs = jnp.asarray(np.random.default_rng(3).normal(size=(1, 1000, 3)), jnp.float32)
    norms = hidden_grad_norms(layer, params, xs, lambda out: jnp.sum(out[:, -1]))
    where = first_non_finite(norms)
    assert where is not None and where.layer == 0
    assert not np.isfinite(norms[0, 0, where.step]) and np.all(
        np.isfinite(norms[0, 0, where.step + 1 :])
    )
    assert "layer 0, step" in str(where)
    assert first_non_finite(np.ones((1, 2, 3))) is None
    with pytest.raises(ValueError, match="finite and positive"):
        fit_decay_rate(norms[0], np.arange(1000))


def test_fit_decay_rate_recovers_known_rates():
    distances = np.arange(50)
    noise = np.random.default_rng(0).normal(scale=0.01, size=(4, 50))
    norms = np.exp(np.log(0.8) * distances + noise)
    fit = fit_decay_rate(norms, distances)
    assert abs(fit.factor - 0.8) < 1e-3
    low, high = fit.interval
    assert low < np.log(0.8) < high and high - low < 1e-2
    assert fit_decay_rate(norms[0], distances).interval is None


def test_recurrent_spectrum_and_pascanu_criterion():
    layer, params = _linear_rnn(0.7, activation="tanh")
    spectrum = recurrent_spectrum(layer.cell, params[0]["forward"])
    np.testing.assert_allclose(spectrum.singular_values["hidden"], np.full(6, 0.7), rtol=1e-6)
    assert spectrum.vanishing_guaranteed and not spectrum.exploding_possible
    layer, params = _linear_rnn(1.2, activation="tanh")
    spectrum = recurrent_spectrum(layer.cell, params[0]["forward"])
    assert spectrum.exploding_possible and not spectrum.vanishing_guaranteed
    lstm = seqlab.cells.LSTM(4)
    lstm_spectrum = recurrent_spectrum(lstm, lstm.init(jax.random.key(0), 3))
    assert set(lstm_spectrum.largest) == {"input", "forget", "cell", "output"}
    assert lstm_spectrum.vanishing_guaranteed is None


def test_gate_saturation_counts_saturated_gates(rng):
    cell = seqlab.cells.LSTM(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    params["b"] = params["b"].at[4:8].set(20.0).at[:4].set(-20.0)  # forget open, input shut
    stats = gate_saturation(cell, params, xs)
    assert stats["forget"]["high"] == 1.0 and stats["input"]["low"] == 1.0
    assert 0.0 <= stats["output"]["high"] < 1.0
    with pytest.raises(ValueError, match="needs a gated cell"):
        gate_saturation(seqlab.cells.RNN(3), {}, xs)


def test_analysis_bad_input(rng):
    layer = RNNLayer(CELLS["lstm"])
    params = layer.init(jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        hidden_grad_norms(layer, params, xs, lambda out: out)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        hidden_grad_norms(layer, params, xs, jnp.sum, seq_lengths=jnp.array([6, 1]))
    with pytest.raises(ValueError, match="expected a seqlab.layers.RNNLayer"):
        hidden_grad_norms(CELLS["lstm"], params, xs, jnp.sum)
    with pytest.raises(ValueError, match="direction must be one of"):
        jacobian_norms(layer, params, xs, direction="backward")
    dict_state = seqlab.cells.Cell(
        init=lambda key, d: {"w": jnp.ones((d, 2))},
        initial_carry=lambda p, shape: {"a": jnp.zeros((*shape, 2))},
        step=lambda p, carry, x: ({"a": jnp.tanh(x @ p["w"]) + carry["a"]}, carry["a"]),
    )
    dict_layer = RNNLayer(dict_state)
    with pytest.raises(ValueError, match="cannot find the hidden state"):
        hidden_grad_norms(dict_layer, dict_layer.init(jax.random.key(0), 3), xs, jnp.sum)


def test_analysis_works_on_a_user_defined_cell(rng):
    """The README's three-function Elman cell, against the same math as a built-in RNN."""

    def init(key, input_size):
        k1, k2 = jax.random.split(key)
        return {
            "w_x": jax.random.normal(k1, (input_size, 5)) / input_size**0.5,
            "w_h": jax.nn.initializers.orthogonal()(k2, (5, 5)),
        }

    def step(params, h, x):
        h = jnp.tanh(x @ params["w_x"] + h @ params["w_h"])
        return h, h

    custom = seqlab.cells.Cell(init, lambda p, shape: jnp.zeros((*shape, 5)), step)
    params = custom.init(jax.random.key(0), 3)
    builtin_params = ({"forward": {"w_ih": params["w_x"], "w_hh": params["w_h"]}},)
    builtin = RNNLayer(seqlab.cells.RNN(5, use_bias=False))
    xs = jnp.asarray(rng.normal(size=(2, 9, 3)), jnp.float32)
    layer = RNNLayer(custom)
    np.testing.assert_allclose(
        hidden_grad_norms(layer, ({"forward": params},), xs, jnp.sum),
        hidden_grad_norms(builtin, builtin_params, xs, jnp.sum),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        jacobian_norms(layer, ({"forward": params},), xs),
        jacobian_norms(builtin, builtin_params, xs),
        rtol=1e-5,
    )
