"""seqlab.scan: masking and reversal rules, layouts, composition with jit/vmap/grad, bad input.

The packed-sequence semantics are checked against ``tests.references.reference_scan``,
which reads each sequence one at a time for exactly its own length. Tolerance: float32
against the float64 loop, 2e-5 relative (see test_cells.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from tests.helpers import CELLS, random_params
from tests.references import reference_scan, relative_error

TOLERANCE = 2e-5


def _as_tuple(carry):
    return tuple(carry) if isinstance(carry, tuple) else carry


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(["rnn_tanh", "lstm_proj", "gru_cudnn", "mgu"]),
    batch_size=st.integers(1, 4),
    num_steps=st.integers(1, 9),
    reverse=st.booleans(),
    data=st.data(),
)
def test_masking_rules_match_per_sequence_loop(name, batch_size, num_steps, reverse, data):
    cell = CELLS[name]
    lengths = np.array(
        data.draw(st.lists(st.integers(0, num_steps), min_size=batch_size, max_size=batch_size))
    )
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    params = random_params(cell, jax.random.key(seed), input_size=3)
    xs = rng.normal(size=(batch_size, num_steps, 3)).astype(np.float32)
    outputs, final = seqlab.scan(
        cell, params, jnp.asarray(xs), seq_lengths=jnp.asarray(lengths), reverse=reverse
    )
    expected_outputs, expected_final = reference_scan(
        cell, params, xs, seq_lengths=lengths, reverse=reverse
    )
    padded = np.arange(num_steps)[None, :] >= lengths[:, None]
    assert np.all(np.asarray(outputs)[padded] == 0.0), "outputs at padded steps must be exactly 0"
    assert relative_error(outputs, expected_outputs) < TOLERANCE
    assert relative_error(_as_tuple(final), expected_final) < TOLERANCE


@pytest.mark.parametrize("reverse", [False, True])
def test_full_lengths_equal_no_lengths(reverse, rng):
    cell = CELLS["lstm"]
    params = random_params(cell, jax.random.key(0), 4)
    xs = jnp.asarray(rng.normal(size=(3, 7, 4)), jnp.float32)
    a, final_a = seqlab.scan(cell, params, xs, reverse=reverse)
    b, final_b = seqlab.scan(cell, params, xs, reverse=reverse, seq_lengths=jnp.full((3,), 7))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(final_a.c, final_b.c, rtol=1e-6, atol=1e-7)


def test_reverse_without_lengths_matches_loop(rng):
    cell = CELLS["gru_original"]
    params = random_params(cell, jax.random.key(0), 4)
    xs = rng.normal(size=(2, 6, 4)).astype(np.float32)
    outputs, final = seqlab.scan(cell, params, jnp.asarray(xs), reverse=True)
    expected, expected_final = reference_scan(cell, params, xs, reverse=True)
    assert relative_error(outputs, expected) < TOLERANCE
    assert relative_error(final, expected_final) < TOLERANCE


def test_time_major_is_a_transpose(rng):
    cell = CELLS["mgu"]
    params = random_params(cell, jax.random.key(0), 4)
    xs = jnp.asarray(rng.normal(size=(3, 6, 4)), jnp.float32)
    lengths = jnp.array([6, 2, 4])
    batch_major, final_a = seqlab.scan(cell, params, xs, seq_lengths=lengths)
    time_major, final_b = seqlab.scan(
        cell, params, jnp.swapaxes(xs, 0, 1), seq_lengths=lengths, time_major=True
    )
    np.testing.assert_array_equal(batch_major, jnp.swapaxes(time_major, 0, 1))
    np.testing.assert_array_equal(final_a, final_b)


def test_given_carry_is_used(rng):
    cell = CELLS["lstm_proj"]
    params = random_params(cell, jax.random.key(0), 4)
    xs = rng.normal(size=(2, 5, 4)).astype(np.float32)
    h0 = rng.normal(size=(2, 4)).astype(np.float32)
    c0 = rng.normal(size=(2, 6)).astype(np.float32)
    carry = seqlab.cells.LSTMState(jnp.asarray(h0), jnp.asarray(c0))
    outputs, _ = seqlab.scan(cell, params, jnp.asarray(xs), carry)
    expected, _ = reference_scan(cell, params, xs, carry=(h0, c0))
    assert relative_error(outputs, expected) < TOLERANCE


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_hoisted_projection_equals_step_by_step(name, reverse, rng):
    cell = CELLS[name]
    params = random_params(cell, jax.random.key(3), 4)
    xs = jnp.asarray(rng.normal(size=(3, 7, 4)), jnp.float32)
    lengths = jnp.array([7, 3, 0])
    hoisted, _ = seqlab.scan(
        cell, params, xs, seq_lengths=lengths, reverse=reverse, hoist_input_projection=True
    )
    inline, _ = seqlab.scan(
        cell, params, xs, seq_lengths=lengths, reverse=reverse, hoist_input_projection=False
    )
    assert relative_error(hoisted, inline) < 1e-6


def test_unroll_does_not_change_results(rng):
    cell = CELLS["lstm"]
    params = random_params(cell, jax.random.key(0), 4)
    xs = jnp.asarray(rng.normal(size=(2, 11, 4)), jnp.float32)
    lengths = jnp.array([11, 4])
    a, _ = seqlab.scan(cell, params, xs, seq_lengths=lengths, unroll=1)
    b, _ = seqlab.scan(cell, params, xs, seq_lengths=lengths, unroll=4)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_zero_length_time_axis(rng):
    cell = CELLS["lstm"]
    params = random_params(cell, jax.random.key(0), 3)
    carry = seqlab.cells.LSTMState(
        jnp.asarray(rng.normal(size=(2, 6)), jnp.float32),
        jnp.asarray(rng.normal(size=(2, 6)), jnp.float32),
    )
    outputs, final = seqlab.scan(
        cell, params, jnp.zeros((2, 0, 3)), carry, seq_lengths=jnp.array([0, 0]), reverse=True
    )
    assert outputs.shape == (2, 0, 6)
    np.testing.assert_array_equal(final.c, carry.c)


def test_jit_vmap_grad_compose(rng):
    cell = CELLS["gru_cudnn"]
    xs = jnp.asarray(rng.normal(size=(2, 6, 3)), jnp.float32)
    lengths = jnp.array([6, 3])
    seeds_params = jax.vmap(lambda k: cell.init(k, 3))(jax.random.split(jax.random.key(0), 4))

    def loss(params, xs, lengths):
        outputs, _ = seqlab.scan(cell, params, xs, seq_lengths=lengths, reverse=True)
        return jnp.sum(outputs**2)

    batched = jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None)))
    values, grads = batched(seeds_params, xs, lengths)
    for seed in range(4):
        params = jax.tree_util.tree_map(lambda leaf, s=seed: leaf[s], seeds_params)
        value, grad = jax.value_and_grad(loss)(params, xs, lengths)
        np.testing.assert_allclose(values[seed], value, rtol=1e-5)
        np.testing.assert_allclose(grads["w_hh"][seed], grad["w_hh"], rtol=1e-4, atol=1e-6)


def test_gradient_ignores_padded_inputs(rng):
    cell = CELLS["lstm"]
    params = random_params(cell, jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(2, 6, 3)), jnp.float32)
    lengths = jnp.array([6, 2])
    grad = jax.grad(
        lambda xs: jnp.sum(seqlab.scan(cell, params, xs, seq_lengths=lengths, reverse=True)[0])
    )(xs)
    assert np.all(np.asarray(grad)[1, 2:] == 0.0)
    assert np.all(np.abs(np.asarray(grad)[1, :2]) > 0.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda c, p, x: seqlab.scan(c, p, x[0]), r"expected shape \(B, T, D\), got \(5, 3\)"),
        (lambda c, p, x: seqlab.scan(c, p, x[..., :2]), "feature size D = 3"),
        (lambda c, p, x: seqlab.scan(c, p, x.astype(jnp.int32)), "floating dtype"),
        (lambda c, p, x: seqlab.scan(c, p, x, seq_lengths=jnp.array([1, 6])), r"\[0, 5\]"),
        (lambda c, p, x: seqlab.scan(c, p, x, seq_lengths=jnp.array([-1, 2])), "= -1"),
        (lambda c, p, x: seqlab.scan(c, p, x, seq_lengths=jnp.array([1, 2, 3])), r"shape \(B,\)"),
        (lambda c, p, x: seqlab.scan(c, p, x, seq_lengths=jnp.array([1.0, 2.0])), "integer"),
        (lambda c, p, x: seqlab.scan(c, p, x, jnp.zeros((2, 6))), "carry has the wrong structure"),
        (
            lambda c, p, x: seqlab.scan(
                c, p, x, seqlab.cells.LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 6)))
            ),
            r"carry.*must have shape \(2, 6\), got \(2, 4\)",
        ),
        (lambda c, p, x: seqlab.scan(c, p, x, implementation="cudnn"), "implementation must be"),
        (lambda c, p, x: seqlab.scan("lstm", p, x), "a cell must have callable"),
        (lambda c, p, x: seqlab.scan(c, p, x, unroll=0), "unroll must be"),
    ],
)
def test_bad_input_raises_value_error(call, match, rng):
    cell = CELLS["lstm"]
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    with pytest.raises(ValueError, match=match):
        call(cell, params, xs)


def test_user_cell_with_wrong_input_size_raises_value_error():
    cell = seqlab.cells.Cell(
        init=lambda key, d: {"w": jnp.ones((d, 2))},
        initial_carry=lambda p, shape: jnp.zeros((*shape, 2)),
        step=lambda p, h, x: (jnp.tanh(x @ p["w"]) + h, h),
    )
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="cell.step rejected"):
        seqlab.scan(cell, params, jnp.ones((2, 4, 5)))


def test_hoisting_a_cell_without_projection_raises():
    cell = seqlab.cells.Cell(
        init=lambda key, d: {"w": jnp.ones((d, 2))},
        initial_carry=lambda p, shape: jnp.zeros((*shape, 2)),
        step=lambda p, h, x: (jnp.tanh(x @ p["w"]), h),
    )
    with pytest.raises(ValueError, match="hoist_input_projection=True needs"):
        seqlab.scan(cell, cell.init(None, 3), jnp.ones((2, 4, 3)), hoist_input_projection=True)


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
@pytest.mark.parametrize("reverse", [False, True])
def test_traced_lengths_outside_the_range_are_clamped(implementation, reverse, rng):
    """Inside jit (and vmap) a length above T acts as T and one below 0 as 0, in both
    directions and every implementation: outputs, final carry and gradients equal those
    of the clamped lengths, with no NaN (a reverse scan used to index past the end)."""
    cell = seqlab.cells.LSTM(8)
    params = random_params(cell, jax.random.key(3), 3)
    xs = jnp.asarray(rng.normal(size=(3, 5, 3)), jnp.float32)
    implementation = seqlab.kernels.Pallas(interpret=True) if implementation == "pallas" else "xla"

    def loss(params, xs, lengths):
        outputs, carry = seqlab.scan(
            cell, params, xs, seq_lengths=lengths, reverse=reverse, implementation=implementation
        )
        return jnp.sum(jnp.sin(outputs)) + jnp.sum(jnp.cos(carry.c)), (outputs, carry)

    run = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    wild, clamped = jnp.asarray([6, 5, -2]), jnp.asarray([5, 5, 0])
    got, want = run(params, xs, wild), run(params, xs, clamped)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert np.all(np.isfinite(np.asarray(a)))
        np.testing.assert_array_equal(a, b)
    batched = jax.vmap(run, in_axes=(None, None, 0))(params, xs, jnp.stack([wild, clamped]))
    for leaf in jax.tree_util.tree_leaves(batched):
        np.testing.assert_array_equal(leaf[0], leaf[1])


def test_bidirectional_layer_clamps_traced_lengths(rng):
    layer = seqlab.layers.RNNLayer(seqlab.cells.GRU(6), num_layers=2, bidirectional=True)
    head = seqlab.layers.ManyToOne(layer, output_size=2)
    params = head.init(jax.random.key(0), 3)
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    apply = jax.jit(lambda lengths: head.apply(params, xs, seq_lengths=lengths))
    got, want = apply(jnp.asarray([6, 5])), apply(jnp.asarray([5, 5]))
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_array_equal(got, want)


def test_bad_implementation_and_carry_dtype_are_value_errors():
    with pytest.raises(ValueError, match="implementation must be one of"):
        seqlab.layers.RNNLayer(seqlab.cells.GRU(4), implementation="bogus")  # at construction
    cell = seqlab.cells.GRU(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((2, 5, 3), jnp.float32)
    carry = jnp.zeros((2, 4), jnp.float16)
    with jax.numpy_dtype_promotion("standard"):  # the default: step promotes to float32
        with pytest.raises(ValueError, match=r"carry must have dtype float32 .* got float16"):
            seqlab.scan(cell, params, xs, carry)


# ---------------------------------------------------------------- lengths and padding
# Every implementation behind the one front door: what the padding holds and the lengths'
# integer dtype must never change a number.
IMPLEMENTATIONS = ["xla", "xla-autodiff", "parallel", "pallas"]


def strict(implementation):
    """ "parallel" without its sequential fallback (NaN if Newton fails), so that these
    tests check the parallel solve itself."""
    if implementation == "parallel":
        return seqlab.parallel.Parallel(fallback=False)
    return implementation


@pytest.mark.parametrize("implementation", ["xla", "xla-autodiff", "parallel"])
def test_narrow_length_dtypes_do_not_wrap(implementation):
    """uint8 lengths [100, 20] at T = 300 were valid for 88 steps (a uint8 time index
    wraps at 256); int8 for 216."""
    implementation = strict(implementation)
    cell = CELLS["gru_cudnn"]
    params = random_params(cell, jax.random.key(5), 3)
    xs = jax.random.normal(jax.random.key(6), (2, 300, 3))
    run = jax.jit(
        lambda xs, lengths: seqlab.scan(
            cell, params, xs, seq_lengths=lengths, implementation=implementation
        )
    )
    expected = seqlab.scan(
        cell, params, xs, seq_lengths=np.array([100, 20], np.int32), implementation=implementation
    )
    for dtype in (np.uint8, np.int8):  # int16 wraps only past T = 32,767: the same fix
        lengths = np.array([100, 20], dtype)
        for actual in (
            seqlab.scan(cell, params, xs, seq_lengths=lengths, implementation=implementation),
            run(xs, jnp.asarray(lengths)),  # traced lengths too
        ):
            valid_steps = np.sum(np.any(np.asarray(actual[0]) != 0, axis=-1), axis=1)
            assert valid_steps.tolist() == [100, 20], dtype
            assert relative_error(list(actual), list(expected)) < 1e-5  # jit rounds otherwise


def test_lengths_that_do_not_fit_int32_are_refused():
    cell = CELLS["rnn_tanh"]
    params = random_params(cell, jax.random.key(0), 3)
    xs = jnp.ones((3, 5, 3))
    with pytest.raises(ValueError, match=r"must fit int32.*seq_lengths\[0\] = 1099511627776"):
        seqlab.scan(cell, params, xs, seq_lengths=np.array([2**40, 3, 1], np.int64))
    with pytest.raises(ValueError, match="integer dtype"):
        seqlab.scan(cell, params, xs, seq_lengths=np.array([2.0, 3.0, 1.0]))
    layers = seqlab.layers
    mask = layers.valid_mask(np.array([200, 3], np.uint8), 2, 300)
    assert np.asarray(mask).sum(axis=1).tolist() == [200, 3]
    outputs = jnp.broadcast_to(jnp.arange(300.0)[None, :, None], (2, 300, 1))
    last = layers.last_valid_outputs(outputs, np.array([0, 255], np.uint8))
    assert np.asarray(last)[:, 0].tolist() == [0.0, 254.0]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("reverse", [False, True])
def test_garbage_in_padding_never_reaches_a_gradient(implementation, reverse):
    """NaN and inf past each length: outputs, final carries and every gradient equal those
    of zero padding (they were NaN in w_ih on "xla" and everywhere on the others)."""
    implementation = strict(implementation)
    names = ["lstm"] if implementation == "pallas" else ["rnn_tanh", "lstm", "gru_cudnn"]
    lengths = jnp.array([6, 3, 0])
    valid = np.arange(6)[None, :] < np.asarray(lengths)[:, None]
    for name in names:
        cell = CELLS[name]
        params = random_params(cell, jax.random.key(7), 3)
        xs = jax.random.normal(jax.random.key(8), (3, 6, 3))
        clean = jnp.where(valid[..., None], xs, 0.0)
        garbage = jnp.where(valid[..., None], xs, jnp.array([jnp.nan, jnp.inf, -jnp.inf]))

        def loss(params, xs, cell=cell):
            outputs, final = seqlab.scan(
                cell,
                params,
                xs,
                seq_lengths=lengths,
                reverse=reverse,
                implementation=implementation,
            )
            return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(leaf) for leaf in leaves(final))

        run = jax.jit(jax.value_and_grad(loss, (0, 1)))
        expected, actual = run(params, clean), run(params, garbage)
        assert all(np.all(np.isfinite(leaf)) for leaf in leaves(actual)), name
        assert relative_error(leaves(actual), leaves(expected)) == 0.0, name


def test_garbage_in_padding_through_layers_and_architectures():
    """Stacked bidirectional layers and the architectures' heads: padding content cannot
    reach a parameter's gradient."""
    layer = seqlab.layers.RNNLayer(CELLS["lstm"], num_layers=2, bidirectional=True)
    models = [
        seqlab.layers.ManyToOne(layer, output_size=2),
        seqlab.layers.ManyToMany(layer, output_size=2),
    ]
    lengths = jnp.array([5, 2])
    valid = np.arange(5)[None, :] < np.asarray(lengths)[:, None]
    xs = jax.random.normal(jax.random.key(9), (2, 5, 3))
    garbage = jnp.where(valid[..., None], xs, jnp.nan)
    clean = jnp.where(valid[..., None], xs, 0.0)
    for model in models:
        params = model.init(jax.random.key(1), 3)

        def loss(params, xs, model=model):
            outputs = jnp.sin(model.apply(params, xs, seq_lengths=lengths))
            if model.kind == "many_to_many":  # (B, T, F): count valid steps only
                outputs = outputs * model.output_mask(lengths, xs[..., 0])[..., None]
            return jnp.sum(outputs)

        run = jax.jit(jax.value_and_grad(loss))
        expected, actual = run(params, clean), run(params, garbage)
        assert all(np.all(np.isfinite(leaf)) for leaf in leaves(actual)), model.kind
        assert relative_error(leaves(actual), leaves(expected)) == 0.0, model.kind


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_empty_batches_and_empty_sequences_in_every_implementation(implementation):
    """B = 0 raised ZeroDivisionError in the hand-derived backward and "parallel"; T = 0
    was refused by "pallas". All give what autodiff gives: empty outputs, the initial
    carry back, zero gradients."""
    implementation = strict(implementation)
    cell = CELLS["gru_cudnn"]
    params = random_params(cell, jax.random.key(2), 3)
    for shape, lengths in (((0, 4, 3), np.zeros((0,), np.int32)), ((2, 0, 3), np.zeros(2, int))):
        xs = jnp.ones(shape)
        for seq_lengths in (None, lengths):

            def loss(params, xs, seq_lengths=seq_lengths):
                outputs, final = seqlab.scan(
                    cell, params, xs, seq_lengths=seq_lengths, implementation=implementation
                )
                return jnp.sum(outputs) + jnp.sum(final**2), (outputs, final)

            (_, (outputs, final)), grads = jax.value_and_grad(loss, has_aux=True)(params, xs)
            assert outputs.shape == (*shape[:2], 6) and final.shape == (shape[0], 6)
            assert all(np.all(np.asarray(g) == 0.0) for g in leaves(grads)), (shape, seq_lengths)


def leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def test_lengths_rules_hold_at_every_public_entry_point():
    """The kernels' public functions and references, ``reverse_within_lengths`` and
    ``scan_parallel`` take lengths of any integer dtype (traced ones wider than int32
    saturate) and never let padding reach a gradient; a bidirectional summary of T = 0
    sequences is zeros."""
    from seqlab.kernels import rnn_recurrence, rnn_recurrence_reference
    from seqlab.unroll import reverse_within_lengths

    xs = jnp.arange(300.0)[:, None, None]  # (T, B=1, 1)
    flipped = reverse_within_lengths(xs, np.array([100], np.uint8))
    assert float(flipped[0, 0, 0]) == 99.0 and float(flipped[150, 0, 0]) == 150.0
    lengths = jnp.array([2**31 + 5], jnp.uint32)  # traced: saturates at int32's max
    cell = CELLS["rnn_tanh"]
    params = random_params(cell, jax.random.key(3), 3)
    ten = jax.random.normal(jax.random.key(4), (1, 10, 3))
    outputs, _ = jax.jit(lambda n: seqlab.scan(cell, params, ten, seq_lengths=n))(lengths)
    assert np.all(np.any(np.asarray(outputs) != 0, axis=-1))  # every step valid, none wrapped
    projected = jax.random.normal(jax.random.key(5), (6, 2, 6))
    lengths = np.array([6, 3], np.uint8)
    garbage = projected.at[3:, 1].set(jnp.nan)
    for function in (rnn_recurrence_reference, rnn_recurrence):
        grads = jax.grad(
            lambda p, f=function: jnp.sum(f(p, params["w_hh"], jnp.zeros((2, 6)), lengths)),
        )(garbage)
        assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[3:, 1] == 0.0)
    garbage_xs = jax.random.normal(jax.random.key(6), (2, 6, 3)).at[1, 3:].set(jnp.nan)
    grads = jax.grad(
        lambda p: jnp.sum(
            seqlab.parallel.scan_parallel(
                cell,
                p,
                jnp.swapaxes(garbage_xs, 0, 1),
                cell.initial_carry(p, (2,)),
                seq_lengths=lengths,
                reverse=True,
                hoist=True,
                options=seqlab.parallel.Parallel(),
            )[0]
        )
    )(params)
    assert all(np.all(np.isfinite(g)) for g in leaves(grads))
    summary = seqlab.layers.last_valid_outputs(jnp.zeros((2, 0, 4)), None, bidirectional=True)
    assert summary.shape == (2, 4) and np.all(np.asarray(summary) == 0.0)


def test_only_the_front_door_builds_masks_and_reverses_sequences():
    """Direction and masking live in seqlab/_time.py alone: no module of unroll/ or
    parallel/ builds a valid mask from lengths or reverses a sequence itself."""
    import pathlib
    import re

    root = pathlib.Path(seqlab.__file__).parent
    pattern = re.compile(
        r"valid_steps\(|reverse_within_lengths\(|steps_of\(|jnp\.flip\(|_flip\("
        r"|arange\([^)]*\)[^\n]*<"
    )
    offenders = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for folder in ("unroll", "parallel")
        for path in sorted((root / folder).glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith(("from ", "import ", "#"))
    ]
    # convergence reads the front door's Steps for its record (no mask of its own)
    allowed = {"parallel/_api.py"}
    offenders = [o for o in offenders if not (o.split(":")[0] in allowed and "steps_of(" in o)]
    assert offenders == [], "\n".join(offenders)


class MinimalCell:
    """A user cell with the three required methods and none of the optional ones
    (no project_inputs, jacobian_structure, input_size, hand-derived backward)."""

    def init(self, key, input_size):
        k1, k2 = jax.random.split(key)
        return {
            "w": 0.5 * jax.random.normal(k1, (input_size, 5)),
            "u": 0.3 * jax.random.normal(k2, (5, 5)),
        }

    def initial_carry(self, params, batch_shape):
        return jnp.zeros((*batch_shape, 5))

    def step(self, params, carry, x):
        h = jnp.tanh(x @ params["w"] + carry @ params["u"])
        return h, 2.0 * h


def test_implementation_names_and_options_objects_are_the_same_programs():
    from seqlab.kernels import Pallas
    from seqlab.parallel import Parallel
    from seqlab.unroll import Xla

    cell = CELLS["lstm"]
    params = random_params(cell, jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (3, 7, 3))
    lengths = np.array([7, 4, 0])

    def loss(p, implementation, **kwargs):
        ys, _ = seqlab.scan(cell, p, xs, seq_lengths=lengths, implementation=implementation,
                            **kwargs)  # fmt: skip
        return jnp.sum(ys**2)

    for name, options in [
        ("xla", Xla()),
        ("xla-autodiff", Xla(backward="autodiff")),
        ("parallel", Parallel()),
        ("pallas", Pallas()),
    ]:
        by_name = jax.value_and_grad(loss)(params, name)
        by_object = jax.value_and_grad(loss)(params, options)
        for a, b in zip(leaves(by_name), leaves(by_object), strict=True):
            np.testing.assert_array_equal(a, b)
    assert Xla(unroll=2) == Xla(unroll=2) and hash(Xla(unroll=2)) == hash(Xla(unroll=2))
    assert Xla(batch_sharded=True) != Xla()
    # one setting given twice must agree
    np.testing.assert_array_equal(
        loss(params, Xla(unroll=2), unroll=2), loss(params, Xla(), unroll=2)
    )
    with pytest.raises(ValueError, match=r"unroll=3 and the options object's 2 disagree"):
        loss(params, Xla(unroll=2), unroll=3)
    with pytest.raises(ValueError, match="remat must be a bool or a positive int"):
        Xla(remat=0)
    with pytest.raises(ValueError, match="backward must be one of"):
        Xla(backward="derivd")
    with pytest.raises(ValueError, match="implementation must be one of"):
        seqlab.scan(cell, params, xs, implementation=object())


def test_batch_sharded_gives_the_same_gradients_on_one_device():
    """Xla(batch_sharded=True) changes how the weight gradients are contracted (for a
    sharded batch), never their values."""
    from seqlab.unroll import Xla

    for name in ("lstm", "lstm_proj", "gru_cudnn", "gru_original", "rnn_tanh", "mgu"):
        cell = CELLS[name]
        params = random_params(cell, jax.random.key(2), 4)
        xs = jax.random.normal(jax.random.key(3), (5, 9, 4))

        def loss(p, implementation, cell=cell, xs=xs):
            return jnp.sum(jnp.sin(seqlab.scan(cell, p, xs, implementation=implementation)[0]))

        plain = jax.grad(loss)(params, Xla())
        sharded = jax.grad(loss)(params, Xla(batch_sharded=True))
        for a, b in zip(leaves(plain), leaves(sharded), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_cell_with_only_the_required_methods_runs_everywhere_it_can():
    cell = MinimalCell()
    params = cell.init(jax.random.key(4), 3)
    xs = jax.random.normal(jax.random.key(5), (2, 6, 3))
    lengths = np.array([6, 2])
    w, u = (np.asarray(params[k], np.float64) for k in ("w", "u"))
    expected, final = np.zeros((2, 6, 5)), np.zeros((2, 5))
    for b, length in enumerate(lengths):  # float64, backwards within each length
        h = np.zeros(5)
        for t in reversed(range(length)):
            h = np.tanh(np.asarray(xs[b, t], np.float64) @ w + h @ u)
            expected[b, t] = 2.0 * h
        final[b] = h
    for implementation in ("xla", "xla-autodiff", seqlab.parallel.Parallel(fallback=False)):
        ys, h = seqlab.scan(cell, params, xs, seq_lengths=lengths, reverse=True,
                            implementation=implementation)  # fmt: skip
        assert relative_error(ys, expected) < 1e-5, implementation
        assert relative_error(h, final) < 1e-5, implementation
    with pytest.raises(ValueError, match="the Pallas kernels cover"):
        seqlab.scan(cell, params, xs, implementation="pallas")


def test_remat_keeps_less_than_one_activation_array():
    """Under remat the lax.scan implementations zero their outputs inside the blocks:
    zeroing them after the blocks (as the front door does for the others) kept one more
    (T, B, H) float32 array alive (28.7 against 12.7 MiB here, in a review)."""
    cell = seqlab.cells.LSTM(128)
    params = cell.init(jax.random.key(0), 32)
    xs = jnp.ones((32, 1024, 32))
    lengths = jnp.full((32,), 1000)
    one_array = 32 * 1024 * 128 * 4
    for implementation in ("xla", "xla-autodiff"):
        for seq_lengths in (lengths, None):

            def loss(p, n, implementation=implementation, seq_lengths=seq_lengths):
                n = n if seq_lengths is not None else None
                ys, _ = seqlab.scan(cell, p, xs, seq_lengths=n, implementation=implementation,
                                    remat=True)  # fmt: skip
                return jnp.sum(ys)

            compiled = jax.jit(jax.grad(loss)).lower(params, lengths).compile()
            temp = compiled.memory_analysis().temp_size_in_bytes
            assert temp < one_array, (implementation, seq_lengths is None, temp / 2**20)


def test_settings_given_twice_or_refused_fail_the_same_way_everywhere():
    from seqlab.parallel import Parallel, convergence
    from seqlab.unroll import Xla

    lstm = CELLS["lstm"]
    params = random_params(lstm, jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    # True and 1 are different settings (full unroll against none; sqrt(T) blocks or 1)
    with pytest.raises(ValueError, match="disagree"):
        seqlab.scan(lstm, params, xs, unroll=True, implementation=Xla(unroll=1))
    with pytest.raises(ValueError, match="disagree"):
        seqlab.scan(lstm, params, xs, remat=1, implementation=Xla(remat=True))
    # a cell without project_inputs refuses hoisting on every implementation, empty or not
    cell = MinimalCell()
    minimal = cell.init(jax.random.key(2), 3)
    for inputs in (xs, xs[:, :0]):
        for implementation in (Xla(hoist=True), Parallel(hoist=True)):
            with pytest.raises(ValueError, match="needs a cell with project_inputs"):
                seqlab.scan(cell, minimal, inputs, implementation=implementation)
        with pytest.raises(ValueError, match="disagree"):
            seqlab.scan(cell, minimal, inputs, unroll=2, implementation=Xla(unroll=4))
    with pytest.raises(ValueError, match="disagree"):
        convergence(lstm, params, xs, options=Parallel(hoist=True), hoist_input_projection=False)
    # the cell and xs are checked before the settings, the settings before the lengths
    with pytest.raises(ValueError, match="input 0 has rank 2"):
        seqlab.scan(lstm, params, jnp.ones((3, 2)), unroll=0)
    with pytest.raises(ValueError, match="needs a cell with project_inputs"):
        seqlab.scan(cell, minimal, xs, hoist_input_projection=True, seq_lengths=[9, 1])
