"""``implementation="parallel"`` (``seqlab.parallel``) against the sequential scan.

Reference: ``implementation="xla"``, the sequential ``lax.scan`` (itself tested against
autodiff and PyTorch elsewhere). Inputs, parameters and initial carries are random (never
zero); losses weight every output and every leaf of the final carry with random numbers.

Tolerances (float32, converged solves at the default tolerance 64·eps): outputs and final
carries 1e-5 relative to the largest entry, gradients 1e-4 (the issue's contract; the
adjoint is summed by an associative scan in another order than the sequential backward).
The quasi-DEER (diagonal Jacobian) solve of a dense cell converges linearly, so its error
is bounded by the tolerance divided by the contraction gap: it runs at a tolerance of 1e-7
there. Long linear recurrences: float32 parallel against a float64 sequential reference,
1e-4 at T = 65,536.

The sequential fallback would make every comparison pass even if Newton never converged,
and any Jacobian, even a wrong one, reaches the answer after T iterations. So comparisons
run the solve as ``STRICT``: no fallback (an unconverged solve returns NaN) and a cap of 12
iterations, below T (``test_a_broken_jacobian_fails_the_comparisons`` shows that a broken
Newton step then fails them).
"""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import relative_error

import seqlab
from seqlab.parallel import Parallel
from tests.helpers import random_params, to_float64

# Every registered cell over feature vectors, both directions; two more configurations in
# one direction. (The convolutional cells read frames: tests/test_conv_cells.py runs them
# through the parallel solve.)
PARALLEL_CELLS = {
    name: seqlab.cells.make(name, hidden_size=6)
    for name in seqlab.cells.registered()
    if "spatial_shape" not in (seqlab.cells.option_types(name) or {})
}
MORE_CELLS = {
    "lstm_proj": seqlab.cells.LSTM(6, proj_size=4),
    "initial_state_diag_gru": seqlab.cells.TrainableInitialState(seqlab.cells.DiagGRU(6)),
}
CASES = [(name, reverse) for name in PARALLEL_CELLS for reverse in (False, True)] + [
    (name, False) for name in MORE_CELLS
]
BATCH, STEPS, INPUTS = 4, 23, 3


@pytest.fixture(autouse=True)
def release_compiled_programs_per_test():
    """Each parallel-scan gradient program maps about 480 memory regions on XLA's CPU
    backend (Linux allows 65,530 per process); drop this module's after every test."""
    yield
    jax.clear_caches()
    gc.collect()


LENGTHS = np.array([23, 0, 9, 1])
# No fallback (an unconverged solve gives NaN), and fewer iterations than the T = 23 steps:
# any Jacobian, even a wrong one, reaches the answer in T iterations (each makes one more
# step exact), so only a cap below T lets a broken Newton step fail. Exact Jacobians take
# at most 8 here (test_newton_iterations_match_the_structure).
STRICT = Parallel(fallback=False, max_iterations=12)


def leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def problem(cell, seed=0, dtype=jnp.float32):
    key = jax.random.PRNGKey(seed)
    k_params, k_xs, k_carry, k_weights = jax.random.split(key, 4)
    params = random_params(cell, k_params, INPUTS, scale=0.2)
    xs = jax.random.normal(k_xs, (BATCH, STEPS, INPUTS))
    carry = cell.initial_carry(params, (BATCH,))
    carry = jax.tree_util.tree_map(
        lambda leaf: 0.5 * jax.random.normal(k_carry, leaf.shape, leaf.dtype), carry
    )
    if dtype == jnp.float64:
        params, xs, carry = to_float64(params), to_float64(xs), to_float64(carry)
    return params, xs, carry, k_weights


def weighted_loss(cell, key, **scan_kwargs):
    """A scalar touching every output and every final-carry leaf with random weights, and
    the scan's result as auxiliary output."""

    def loss(params, xs, carry):
        result = seqlab.scan(cell, params, xs, carry, **scan_kwargs)
        total = 0.0
        for index, leaf in enumerate(leaves(result)):
            weights = jax.random.normal(jax.random.fold_in(key, index), leaf.shape)
            total = total + jnp.sum(weights.astype(leaf.dtype) * leaf)
        return total, result

    return loss


def compare(cell, params, xs, carry, key, *, parallel=STRICT, **kwargs):
    """(forward error, gradient error) of the parallel scan against the sequential one:
    outputs and final carry, and the gradients w.r.t. params, xs and the initial carry."""
    results = {}
    for implementation in ("xla", parallel):
        loss = weighted_loss(cell, key, implementation=implementation, **kwargs)
        run = jax.jit(jax.grad(loss, (0, 1, 2), has_aux=True))
        results[implementation] = run(params, xs, carry)
    (expected_grads, expected), (actual_grads, actual) = results["xla"], results[parallel]
    forward = relative_error(leaves(actual), leaves(expected))
    gradient = max(
        relative_error(a, e)
        for a, e in zip(leaves(actual_grads), leaves(expected_grads), strict=True)
    )
    return forward, gradient


@pytest.mark.parametrize(
    ("name", "reverse"), CASES, ids=[f"{n}-{'reverse' if r else 'forward'}" for n, r in CASES]
)
def test_parallel_equals_sequential_ragged(name, reverse):
    cell = {**PARALLEL_CELLS, **MORE_CELLS}[name]
    params, xs, carry, key = problem(cell)
    if not reverse:  # the comparison below is of the parallel solve, not of its fallback
        record = seqlab.parallel.convergence(cell, params, xs, carry, seq_lengths=LENGTHS)
        assert record.converged, record
    forward, gradient = compare(
        cell, params, xs, carry, key, seq_lengths=jnp.asarray(LENGTHS), reverse=reverse
    )
    assert forward < 1e-5
    assert gradient < 1e-4


@pytest.mark.parametrize(
    ("name", "jacobian"),
    [("lstm", "diagonal"), ("diag_lstm", "diagonal"), ("diag_lstm", "full")],
    ids=["quasi-deer-dense", "quasi-deer-blocks", "full-from-blocks"],
)
def test_float64_other_jacobian_options(name, jacobian):
    """The non-default Jacobians (the default ones are tested above) reach the sequential
    answer; float64 to 1e-10."""
    cell = PARALLEL_CELLS[name]
    with jax.enable_x64(True):
        params, xs, carry, key = problem(cell, seed=1, dtype=jnp.float64)
        options = Parallel(jacobian=jacobian, tolerance=1e-13, max_iterations=200, fallback=False)
        record = seqlab.parallel.convergence(
            cell, params, xs, carry, seq_lengths=LENGTHS, options=options
        )
        assert record.converged, record
        forward, gradient = compare(
            cell, params, xs, carry, key, parallel=options, seq_lengths=LENGTHS
        )
        assert forward < 1e-10
        assert gradient < 1e-10


def test_newton_iterations_match_the_structure():
    """Exact Jacobians converge quadratically (a handful of iterations); the diagonal
    approximation of a dense cell needs many more; a linear cell needs exactly one."""
    params, xs, carry, _ = problem(PARALLEL_CELLS["lstm"], seed=2)
    exact = seqlab.parallel.convergence(PARALLEL_CELLS["lstm"], params, xs, carry)
    quasi = seqlab.parallel.convergence(
        PARALLEL_CELLS["lstm"], params, xs, carry, options=Parallel(jacobian="diagonal")
    )
    assert exact.converged and quasi.converged
    assert exact.jacobian == "dense" and quasi.jacobian == "elementwise"
    assert exact.iterations <= 8 < quasi.iterations
    assert len(exact.residuals) == exact.iterations
    assert exact.residuals[-1] <= exact.tolerance < exact.residuals[0]
    assert exact.initial_residual > exact.residuals[0]
    cell = PARALLEL_CELLS["diag_lstm"]
    params, xs, carry, _ = problem(cell, seed=2)
    record = seqlab.parallel.convergence(cell, params, xs, carry)
    assert record.jacobian == "block" and record.converged and record.iterations <= 6
    cell = PARALLEL_CELLS["mingru"]
    params, xs, carry, _ = problem(cell, seed=2)
    record = seqlab.parallel.convergence(cell, params, xs, carry)
    assert (record.iterations, record.converged, record.structure) == (
        1,
        True,
        "linear-diagonal",
    )


def _orthogonal_rnn(gamma, hidden=8, steps=300):
    cell = seqlab.cells.RNN(hidden)
    params = cell.init(jax.random.PRNGKey(3), INPUTS)
    orthogonal = jax.nn.initializers.orthogonal()(jax.random.PRNGKey(4), (hidden, hidden))
    params = dict(params, w_hh=gamma * orthogonal)
    xs = jax.random.normal(jax.random.PRNGKey(5), (2, steps, INPUTS))
    return cell, params, xs


def test_expanding_rnn_falls_back_to_the_sequential_answer():
    """W_hh = 3·Q (positive Lyapunov exponent): Newton does not converge, no NaN leaks, and
    the scan returns the sequential answer (values and gradients) through the fallback."""
    cell, params, xs = _orthogonal_rnn(3.0)
    options = Parallel(max_iterations=12)
    record = seqlab.parallel.convergence(cell, params, xs, options=options)
    assert not record.converged
    assert record.iterations == 12
    assert np.all(record.residuals > record.tolerance)
    expected = seqlab.scan(cell, params, xs, implementation="xla")
    actual = seqlab.scan(cell, params, xs, implementation=options)
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(actual))
    assert relative_error(leaves(actual), leaves(expected)) < 1e-6
    key = jax.random.PRNGKey(6)
    carry = cell.initial_carry(params, (2,))
    grads, _ = jax.grad(weighted_loss(cell, key, implementation=options), (0, 1), has_aux=True)(
        params, xs, carry
    )
    reference, _ = jax.grad(weighted_loss(cell, key, implementation="xla"), (0, 1), has_aux=True)(
        params, xs, carry
    )
    # A chaotic trajectory: float32 gradients depend on the summation order at the 1e-4
    # level (2.6e-4 measured between the two orders), so 1e-3 here.
    for actual_grad, expected_grad in zip(leaves(grads), leaves(reference), strict=True):
        assert np.all(np.isfinite(actual_grad))
        assert relative_error(actual_grad, expected_grad) < 1e-3


def test_contracting_rnn_converges_in_few_iterations():
    """W_hh = 0.5·Q: full-Jacobian Newton in at most 4 iterations, flat in T."""
    counts = []
    for steps in (64, 512):
        cell, params, xs = _orthogonal_rnn(0.5, steps=steps)
        counts.append(seqlab.parallel.convergence(cell, params, xs).iterations)
    assert max(counts) <= 4 and counts[0] == counts[1], counts


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_long_linear_recurrence_float32_against_float64(name):
    cell = PARALLEL_CELLS[name]
    steps = 65_536
    params = random_params(cell, jax.random.PRNGKey(7), INPUTS)
    xs = jax.random.normal(jax.random.PRNGKey(8), (2, steps, INPUTS))
    outputs, final = seqlab.scan(cell, params, xs, implementation="parallel")
    with jax.enable_x64(True):
        expected, expected_final = seqlab.scan(
            cell, to_float64(params), to_float64(xs), implementation="xla"
        )
        expected, expected_final = np.asarray(expected), np.asarray(expected_final)
    assert relative_error(outputs, expected) < 1e-4
    assert relative_error(final, expected_final) < 1e-4


def test_declared_structures_match_full_jacobians():
    """Each new cell's Jacobian has the declared zero pattern (and MinGRU/MinLSTM are
    affine in the carry), checked on full Jacobians at a random carry."""
    for name in ("mingru", "minlstm", "diag_gru", "diag_lstm"):
        cell = PARALLEL_CELLS[name]
        params, xs, carry, _ = problem(cell, seed=9)
        flat, unravel = jax.flatten_util.ravel_pytree(
            jax.tree_util.tree_map(lambda leaf: leaf[0], carry)
        )

        def next_state(flat, x=xs[0, 0], cell=cell, params=params, unravel=unravel):
            new, _ = cell.step(params, unravel(flat), x)
            return jax.flatten_util.ravel_pytree(new)[0]

        jacobian = np.asarray(jax.jacfwd(next_state)(flat))
        size = flat.shape[0]
        hidden = 6
        allowed = np.zeros((size, size), bool)
        for i in range(size):
            for j in range(size):
                allowed[i, j] = (i % hidden) == (j % hidden)
        if seqlab.cells.jacobian_structure(cell) != "block-diagonal":
            allowed = np.eye(size, dtype=bool)
        assert np.all(jacobian[~allowed] == 0), name
        assert np.all(np.abs(np.diag(jacobian)) > 0), name
        if seqlab.cells.jacobian_structure(cell) == "linear-diagonal":
            other = jax.jacfwd(next_state)(flat + 1.0)
            np.testing.assert_allclose(other, jacobian, rtol=1e-6)
    assert seqlab.cells.jacobian_structure(seqlab.cells.LSTM(4)) == "dense"
    assert seqlab.cells.jacobian_structure(MORE_CELLS["initial_state_diag_gru"]) == "diagonal"


def test_layers_time_major_vmap_and_bfloat16():
    """Stacked and bidirectional layers, time-major input, vmap and bfloat16 inputs give
    the sequential answers."""
    key = jax.random.PRNGKey(10)
    xs = jax.random.normal(key, (BATCH, STEPS, INPUTS))
    lengths = jnp.asarray(LENGTHS)
    for cell in (seqlab.cells.DiagLSTM(5),):
        layers = {
            impl: seqlab.layers.RNNLayer(
                cell, num_layers=2, bidirectional=True, implementation=impl
            )
            for impl in ("xla", STRICT)
        }
        params = layers["xla"].init(key, INPUTS)
        expected = layers["xla"].apply(params, xs, seq_lengths=lengths)
        actual = layers[STRICT].apply(params, xs, seq_lengths=lengths)
        assert relative_error(leaves(actual), leaves(expected)) < 1e-5
    cell = PARALLEL_CELLS["diag_gru"]
    params, xs, carry, _ = problem(cell, seed=11)
    time_major = jnp.swapaxes(xs, 0, 1)
    expected = seqlab.scan(cell, params, time_major, carry, time_major=True, implementation="xla")
    actual = seqlab.scan(cell, params, time_major, carry, time_major=True, implementation=STRICT)
    assert relative_error(leaves(actual), leaves(expected)) < 1e-5
    stacked = jnp.stack([xs, 2 * xs])  # vmap over a leading axis of whole problems
    run = lambda impl: jax.vmap(  # noqa: E731
        lambda x: seqlab.scan(cell, params, x, carry, implementation=impl)
    )(stacked)
    assert relative_error(leaves(run(STRICT)), leaves(run("xla"))) < 1e-5
    low = xs.astype(jnp.bfloat16)
    with jax.numpy_dtype_promotion("standard"):  # bfloat16 inputs, float32 weights and state
        expected = seqlab.scan(cell, params, low, carry, implementation="xla")
        actual = seqlab.scan(cell, params, low, carry, implementation=STRICT)
    assert actual[0].dtype == expected[0].dtype
    assert relative_error(leaves(actual), leaves(expected)) < 1e-5


def test_bad_settings_are_refused():
    cell = PARALLEL_CELLS["diag_gru"]
    params, xs, carry, _ = problem(cell)
    with pytest.raises(ValueError, match="remat"):
        seqlab.scan(cell, params, xs, implementation="parallel", remat=True)
    with pytest.raises(ValueError, match="jacobian"):
        Parallel(jacobian="dense")
    with pytest.raises(ValueError, match="max_iterations"):
        Parallel(max_iterations=0)
    with pytest.raises(ValueError, match="tolerance"):
        Parallel(tolerance=-1.0)
    with pytest.raises(ValueError, match="Parallel"):
        seqlab.parallel.convergence(cell, params, xs, options="parallel")
    with pytest.raises(ValueError, match="implementation"):
        seqlab.scan(cell, params, xs, implementation="paralel")
    outputs, final = seqlab.scan(cell, params, xs[:, :0], carry, implementation="parallel")
    assert outputs.shape == (BATCH, 0, 6)
    np.testing.assert_array_equal(final, carry)


def test_registry_and_experiment_config_accept_the_new_cells():
    for name in ("mingru", "minlstm", "diag_gru", "diag_lstm"):
        assert name in seqlab.cells.registered()
        assert type(seqlab.cells.make(name, hidden_size=3)) is type(PARALLEL_CELLS[name])
    assert "parallel" in seqlab.unroll.IMPLEMENTATIONS
    config = seqlab.experiments.apply_overrides(
        seqlab.experiments.default_config("adding"),
        ["model.cell=diag_gru", "model.implementation=parallel"],
    )
    assert (config.model.cell, config.model.implementation) == ("diag_gru", "parallel")


@pytest.mark.usefixtures("standard_promotion")
def test_shipped_experiment_trains_like_the_sequential_scan():
    """experiments/adding_parallel.py (DiagGRU, T = 1,000, parallel scan; batches of 16 to
    keep the suite short): its first 12 training losses equal the same run's with the
    sequential scan to 1e-4."""
    from seqlab.experiments import Experiment, apply_overrides, find

    losses = {}
    for implementation in ("parallel", "xla"):
        config = apply_overrides(
            find("adding_parallel"),
            [f"model.implementation={implementation}", "train.batch_size=16"],
        )
        experiment = Experiment.from_config(config)
        state = experiment.init_state()
        history = []
        for step in range(12):
            state, metrics = experiment.train_chunk(state, step, 1)
            history.append(float(np.asarray(metrics["train/loss"])[0]))
        losses[implementation] = np.array(history)
    assert np.all(np.isfinite(losses["parallel"]))
    np.testing.assert_allclose(losses["parallel"], losses["xla"], rtol=1e-4)
    assert losses["parallel"][-1] < losses["parallel"][0]  # it is learning


def test_cell_options_reach_the_cell_and_bad_ones_are_refused():
    from seqlab.experiments import Experiment, apply_overrides, default_config
    from seqlab.experiments._config import validate

    config = apply_overrides(
        default_config("adding"),
        ["model.cell=diag_gru", "model.cell_options.max_timescale=100", "model.hidden_size=4"],
    )
    validate(config)
    cell = Experiment.from_config(config).model.encoder.cell
    assert cell == seqlab.cells.DiagGRU(4, max_timescale=100)
    update_bias = np.asarray(cell.init(jax.random.PRNGKey(0), 2)["b"][4:8])
    np.testing.assert_allclose(update_bias, np.log(np.geomspace(2, 100, 4) - 1), rtol=1e-6)
    with pytest.raises(ValueError, match="cell_options.*max_timescle"):
        apply_overrides(config, ["model.cell_options.max_timescle=100"])


# ---------------------------------------------------------------- derivatives of derivatives
def _gradient_norm(cell, xs, implementation):
    def norm(params):
        def loss(params):
            outputs, _ = seqlab.scan(cell, params, xs, implementation=implementation)
            return jnp.sum(jnp.sin(outputs))

        return sum(jnp.sum(g**2) for g in leaves(jax.grad(loss)(params)))

    return norm


@pytest.mark.parametrize("name", ["gru", "diag_gru", "diag_lstm"])
def test_gradient_of_a_gradient_through_newton_says_what_to_use(name):
    cell = PARALLEL_CELLS[name]
    params, xs, _, _ = problem(cell)
    with pytest.raises(ValueError, match="implementation='xla' or 'xla-autodiff'"):
        jax.grad(_gradient_norm(cell, xs, "parallel"))(params)
    with pytest.raises(ValueError, match="not supported for"):
        jax.hessian(lambda p: jnp.sum(seqlab.scan(cell, p, xs, implementation="parallel")[0]))(
            params
        )


def test_gradient_of_a_gradient_of_a_linear_cell_matches_autodiff():
    """MinGRU's one associative scan has no iterations: reverse over reverse works."""
    cell = PARALLEL_CELLS["mingru"]
    params, xs, _, _ = problem(cell)
    expected = jax.grad(_gradient_norm(cell, xs, "xla-autodiff"))(params)
    actual = jax.grad(_gradient_norm(cell, xs, "parallel"))(params)
    assert relative_error(leaves(actual), leaves(expected)) < 1e-4


def test_convergence_takes_the_cells_scan_takes():
    """An unhashable cell (a mutable dataclass) runs under ``scan(..., "parallel")``, so
    ``seqlab.parallel.convergence`` takes it too."""
    import dataclasses

    @dataclasses.dataclass
    class Elman:
        hidden_size: int = 3

        def init(self, key, input_size):
            return {"w": 0.3 * jax.random.normal(key, (input_size + self.hidden_size, 3))}

        def initial_carry(self, params, batch_shape):
            return jnp.zeros((*batch_shape, self.hidden_size))

        def step(self, params, h, x):
            h = jnp.tanh(jnp.concatenate([x, h], axis=-1) @ params["w"])
            return h, h

    cell = Elman()
    params = cell.init(jax.random.PRNGKey(0), 2)
    xs = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 2))
    expected = seqlab.scan(cell, params, xs, implementation="xla")
    actual = seqlab.scan(cell, params, xs, implementation=STRICT)
    assert relative_error(leaves(actual), leaves(expected)) < 1e-5
    record = seqlab.parallel.convergence(cell, params, xs)
    assert record.converged and record.iterations >= 2


def test_a_broken_jacobian_fails_the_comparisons(monkeypatch):
    """The fallback hides a broken solve: with Newton's Jacobians sign-flipped and doubled
    the default ``"parallel"`` still returns the right outputs (after T = 23 iterations,
    or through the fallback), but ``STRICT``, which every comparison here uses, returns
    NaN and fails them."""
    from seqlab.parallel import _solve

    jacobians = _solve.jacobians
    monkeypatch.setattr(_solve, "jacobians", lambda *args: -2 * jacobians(*args))
    cell = PARALLEL_CELLS["diag_gru"]
    params, xs, carry, key = problem(cell)
    assert not seqlab.parallel.convergence(cell, params, xs, carry, options=STRICT).converged
    forward, _ = compare(cell, params, xs, carry, key, parallel="parallel")
    assert forward < 1e-5  # the forward comparison alone would pass (the adjoint, which
    # uses the same Jacobians, does not: its gradients are wrong whatever the options)
    forward, gradient = compare(cell, params, xs, carry, key)
    assert not (forward < 1e-5) and not (gradient < 1e-4)
    outputs, final = seqlab.scan(cell, params, xs, carry, implementation=STRICT)
    assert np.all(np.isnan(outputs)) and np.all(np.isnan(final))
