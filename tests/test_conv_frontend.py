"""Convolutional front-ends (``seqlab.layers.Conv1D``, ``ConvStack``) and the architectures
that take one (``frontend=``).

Lengths against the convolution's formula, a count of the windows that fit, the shapes of
real runs and PyTorch's ``conv1d`` / ``max_pool1d`` / ``avg_pool1d``; values against float64
NumPy loops written here (no code shared with seqlab) and against PyTorch; a padded batch
(NaN and inf in the padding) against each sequence run alone, outputs and gradients;
causality; bfloat16; dropout; the architectures; the errors.

Tolerances (relative error: max |difference| / max |reference|, tests/references.py):
    padded batch vs each sequence alone, float32:         outputs 1e-6, gradients 1e-5
        (a gradient sums over the sequence's steps, which the padded and the lone
        convolution add in different orders: up to 2e-6 measured, while in float64 both
        agree to 1e-15, so the difference is rounding)
    padded batch vs each sequence alone, float64:         1e-12
    float32 seqlab vs float64 NumPy loops:                1e-5
    float64 seqlab vs float64 NumPy loops:                1e-12
    float32 seqlab vs PyTorch (float32):                  1e-5
    bfloat16 inputs and parameters vs float32:            3e-2  (8-bit mantissas: the
        inputs, weights and each layer's outputs rounded to about 4e-3; accumulation in
        float32)
    outputs(c·x) vs c·outputs(x), c = 1e4 and 1e-4, linear stack without bias:
        float32 1e-6, bfloat16 3e-2
    causality (outputs that may not read a perturbed input): exactly equal
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqlab
from seqlab.layers import (
    Conv1D,
    ConvStack,
    EncoderDecoder,
    ManyToMany,
    ManyToOne,
    OneToMany,
    RNNLayer,
    TreeEncoder,
    conv_stack,
    dense_init,
)
from tests.references import relative_error

SAME_MATH_TOLERANCE = {"float32": 1e-6, "float64": 1e-12}  # outputs
SAME_MATH_GRAD_TOLERANCE = {"float32": 1e-5, "float64": 1e-12}  # gradients
REFERENCE_TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
TORCH_TOLERANCE = 1e-5
BFLOAT16_TOLERANCE = 3e-2

PADDINGS = ("same", "causal", "valid")
POOLS = ("none", "max", "avg")
POOL_SIZE = 2
INPUT_SIZE = 3
# What fills the padding of every padded batch: none of it may reach an output or gradient.
POISON = (np.nan, np.inf, -np.inf)


# ---------------------------------------------------------------------------------------
# Independent definitions: padding, lengths, and the convolution as loops.


def _pads(padding, kernel_size, dilation):
    """(zeros before, zeros after): d(k-1) in all, split with the smaller half first for
    "same" (PyTorch's padding="same"), all before for "causal", none for "valid"."""
    total = dilation * (kernel_size - 1)
    if padding == "same":
        return total // 2, total - total // 2
    if padding == "causal":
        return total, 0
    return 0, 0


def _formula_length(length, kernel_size, stride, dilation, padding, pool):
    """⌊(L + p − d(k−1) − 1)/s⌋ + 1 clamped at 0, then ⌈L'/pool_size⌉ when pooling."""
    total = 0 if padding == "valid" else dilation * (kernel_size - 1)
    out = max(0, math.floor((length + total - dilation * (kernel_size - 1) - 1) / stride) + 1)
    return math.ceil(out / POOL_SIZE) if pool != "none" else out


def _counted_length(length, kernel_size, stride, dilation, padding, pool):
    """The same by counting: window t starts at t·s in the padded sequence and fits when
    its last tap, t·s + d(k−1), is inside it; pooling windows start every pool_size."""
    padded = length + sum(_pads(padding, kernel_size, dilation))
    out = sum(1 for t in range(padded + 1) if t * stride + dilation * (kernel_size - 1) < padded)
    if pool == "none":
        return out
    return sum(1 for start in range(0, out, POOL_SIZE))


def _activation(name, z):
    return {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0), "none": lambda v: v}[name](z)


def reference_conv1d(x, w, b, *, stride, dilation, padding, groups, activation):
    """One sequence x (L, C_in) through one convolution, as loops in float64: output
    channel f of group g = f // (F/groups) sums tap j over that group's input channels."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    kernel_size, group_in, features = w.shape
    low, high = _pads(padding, kernel_size, dilation)
    padded = np.concatenate([np.zeros((low, x.shape[1])), x, np.zeros((high, x.shape[1]))])
    group_out = features // groups
    rows = []
    t = 0
    while t * stride + dilation * (kernel_size - 1) < len(padded):
        row = np.zeros(features)
        for f in range(features):
            g = f // group_out
            total = 0.0 if b is None else float(b[f])
            for j in range(kernel_size):
                for c in range(group_in):
                    total += padded[t * stride + j * dilation, g * group_in + c] * w[j, c, f]
            row[f] = total
        rows.append(row)
        t += 1
    return _activation(activation, np.array(rows).reshape(len(rows), features))


def reference_pool(y, size, kind):
    """Max or mean over windows of ``size`` steps of y (L, F), the last one partial."""
    windows = [y[start : start + size] for start in range(0, len(y), size)]
    reduce = np.max if kind == "max" else np.mean
    return np.array([reduce(window, axis=0) for window in windows]).reshape(-1, y.shape[1])


def reference_stack(stack, params, x):
    """One sequence through every layer of a ConvStack (pooling after each)."""
    y = np.asarray(x, np.float64)
    for layer, layer_params in zip(stack.layers, params, strict=True):
        y = reference_conv1d(
            y,
            layer_params["w"],
            layer_params.get("b"),
            stride=layer.stride,
            dilation=layer.dilation,
            padding=layer.padding,
            groups=layer.groups,
            activation=layer.activation,
        )
        if stack.pooling:
            y = reference_pool(y, stack.pool_size, stack.pool)
    return y


# ---------------------------------------------------------------------------------------
# Helpers.


def _random_params(module, input_size, rng, dtype=np.float32, scale=0.5):
    """Every leaf N(0, scale²), drawn by NumPy from the shapes (no JAX ops to compile)."""
    shapes = jax.eval_shape(lambda key: module.init(key, input_size), jax.random.key(0))
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(scale * rng.normal(size=leaf.shape), dtype), shapes
    )


def _poisoned(xs, lengths):
    """xs with NaN, inf and -inf in turn at every step past each length."""
    xs = np.array(xs)
    for b, length in enumerate(lengths):
        for t in range(length, xs.shape[1]):
            xs[b, t] = POISON[(b + t) % len(POISON)]
    return xs


def _leaves(tree):
    return [np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(tree)]


def _padded_and_alone(forward, params, xs, lengths, cotangents, alone):
    """One jit: ``forward(params, xs, lengths) -> (outputs, extra)`` over the padded batch
    with traced ``lengths``, each sequence's gradients (params, xs) of sum(cotangents[b] ·
    outputs[b]); and for each (x, cotangent) of ``alone`` (one sequence, no padding,
    lengths None) its outputs and gradients."""

    def loss(p, x, seq_lengths, cotangent):
        outputs, extra = forward(p, x, seq_lengths)
        return jnp.sum(outputs * cotangent), (outputs, extra)

    grad = jax.grad(loss, argnums=(0, 1), has_aux=True)

    @jax.jit
    def run(params, xs, lengths, cotangents, alone):
        rows = jnp.eye(xs.shape[0], dtype=cotangents.dtype)

        def one_sequence(row):
            mask = row.reshape((-1,) + (1,) * (cotangents.ndim - 1))
            return grad(params, xs, lengths, cotangents * mask)

        grads, (outputs, extra) = jax.vmap(one_sequence)(rows)
        alone_results = [grad(params, x, None, c) for x, c in alone]
        return (outputs[0], jax.tree_util.tree_map(lambda e: e[0], extra)), grads, alone_results

    return jax.device_get(run(params, xs, lengths, cotangents, alone))


def _stack(padding, kernel_size, strides, dilation, pool, activation="tanh", features=(4, 3)):
    return conv_stack(
        features,
        kernel_size=kernel_size,
        stride=strides,
        dilation=dilation,
        padding=padding,
        activation=activation,
        pool=pool,
        pool_size=POOL_SIZE,
    )


# ---------------------------------------------------------------------------------------
# 1. Lengths.

KERNELS = (1, 2, 3, 4)
STRIDES = (1, 2, 3)
DILATIONS = (1, 2)


def _one_layer(padding, kernel_size, stride, dilation, pool):
    layer = Conv1D(2, kernel_size=kernel_size, stride=stride, dilation=dilation, padding=padding)
    return layer if pool == "none" else ConvStack((layer,), pool=pool, pool_size=POOL_SIZE)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("padding", PADDINGS)
def test_output_lengths_follow_the_convolution(padding, pool):
    """Every kernel 1-4, stride 1-3, dilation 1-2: ``output_lengths`` (ints and int
    arrays) equals the formula and the window count, and the length of a real run of a
    sequence alone (its shape, from ``jax.eval_shape``; too short a sequence is refused)."""
    lengths = np.arange(0, 15)
    for kernel_size in KERNELS:
        for stride in STRIDES:
            for dilation in DILATIONS:
                config = (kernel_size, stride, dilation, padding, pool)
                module = _one_layer(padding, kernel_size, stride, dilation, pool)
                expected = [_formula_length(int(L), *config) for L in lengths]
                assert expected == [_counted_length(int(L), *config) for L in lengths], config
                assert [module.output_lengths(int(L)) for L in lengths] == expected, config
                assert np.asarray(module.output_lengths(lengths)).tolist() == expected, config
                params = jax.eval_shape(lambda k, m=module: m.init(k, 1), jax.random.key(0))
                for length in (1, 2, 5, 8):
                    x = jax.ShapeDtypeStruct((1, length, 1), jnp.float32)
                    if expected[length] == 0:
                        with pytest.raises(ValueError, match=f"T = {length}"):
                            jax.eval_shape(lambda p, v, m=module: m.apply(p, v)[0], params, x)
                        continue
                    shape = jax.eval_shape(lambda p, v, m=module: m.apply(p, v)[0], params, x)
                    assert shape.shape == (1, expected[length], 2), (config, length)


def test_stack_lengths_compose_layer_by_layer():
    """A stack's length is its layers' formulas (and pools) one after another, also for
    mixed strides; ``stride`` and ``min_length`` agree with them."""
    for padding in PADDINGS:
        for pool in POOLS:
            stack = conv_stack(
                [2, 2], kernel_size=3, stride=(2, 3), dilation=2, padding=padding, pool=pool
            )
            for length in range(0, 40):
                expected = length
                for stride in (2, 3):
                    expected = _formula_length(expected, 3, stride, 2, padding, pool)
                assert stack.output_lengths(length) == expected, (padding, pool, length)
            assert stack.stride == 6 * (POOL_SIZE**2 if pool != "none" else 1)
            shortest = next(L for L in range(1, 100) if stack.output_lengths(L) > 0)
            assert stack.min_length() == shortest


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_lengths_and_values_match_torch():
    """PyTorch's conv1d (explicit zero padding, stride, dilation) followed by max_pool1d /
    avg_pool1d (ceil_mode: the last window partial, averaged over its valid steps) gives
    the same lengths for every configuration and L = 1..12, and, for a few, the same
    values; PyTorch's own padding="same" puts the extra zero of an even kernel where
    seqlab does."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny ops: threads only contend on 2 cores
    try:
        _compare_with_torch(torch, functional)
    finally:
        torch.set_num_threads(threads)


def _compare_with_torch(torch, functional):
    """The body of test_lengths_and_values_match_torch."""

    def torch_forward(x, w, b, *, stride, dilation, padding, groups, pool, own_same=False):
        """PyTorch's outputs (L', F) for one sequence; its own padding="same" (stride 1
        only) when ``own_same``, else our zeros padded explicitly."""
        kernel_size = w.shape[0]
        w = torch.tensor(np.transpose(np.asarray(w), (2, 1, 0)))  # (F, C_in/groups, k)
        b = None if b is None else torch.tensor(np.asarray(b))
        x = torch.tensor(np.asarray(x).T[None])  # (1, C, L)
        if own_same:
            y = functional.conv1d(x, w, b, dilation=dilation, padding="same", groups=groups)
        else:
            x = functional.pad(x, _pads(padding, kernel_size, dilation))
            try:
                y = functional.conv1d(x, w, b, stride=stride, dilation=dilation, groups=groups)
            except RuntimeError:  # shorter than the kernel's span
                return np.zeros((0, w.shape[0]), np.float32)
        if pool == "max":
            y = functional.max_pool1d(y, POOL_SIZE, POOL_SIZE, ceil_mode=True)
        elif pool == "avg":
            y = functional.avg_pool1d(y, POOL_SIZE, POOL_SIZE, ceil_mode=True)
        return y[0].numpy().T

    for kernel_size in KERNELS:
        for stride in STRIDES:
            for dilation in DILATIONS:
                for padding in PADDINGS:
                    for pool in POOLS:
                        module = _one_layer(padding, kernel_size, stride, dilation, pool)
                        w = np.ones((kernel_size, 1, 2), np.float32)
                        for length in range(1, 13):
                            got = module.output_lengths(length)
                            want = torch_forward(
                                np.ones((length, 1), np.float32),
                                w,
                                None,
                                stride=stride,
                                dilation=dilation,
                                padding=padding,
                                groups=1,
                                pool=pool,
                            ).shape[0]
                            config = (kernel_size, stride, dilation, padding, pool, length)
                            assert got == want, config

    rng = np.random.default_rng(7)
    cases = [  # (padding, kernel, stride, dilation, groups, pool), input length 11
        ("same", 2, 1, 1, 1, "none"),
        ("same", 4, 1, 1, 2, "max"),
        ("same", 2, 1, 2, 1, "avg"),
        ("same", 3, 2, 2, 1, "none"),
        ("causal", 3, 2, 1, 1, "avg"),
        ("causal", 4, 1, 2, 2, "none"),
        ("valid", 3, 2, 1, 2, "max"),
        ("valid", 2, 3, 2, 1, "avg"),
    ]
    modules, params, xs = [], [], []
    for padding, kernel_size, stride, dilation, groups, pool in cases:
        layer = Conv1D(
            4,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            padding=padding,
            groups=groups,
            activation="none",
        )
        modules.append(ConvStack((layer,), pool=pool, pool_size=POOL_SIZE))
        params.append(_random_params(modules[-1], 4, rng))
        xs.append(rng.normal(size=(1, 11, 4)).astype(np.float32))
    outputs = jax.jit(
        lambda p, x: [m.apply(pi, xi)[0] for m, pi, xi in zip(modules, p, x, strict=True)]
    )(params, xs)
    outputs, params = jax.device_get((outputs, params))
    for case, p, x, out in zip(cases, params, xs, outputs, strict=True):
        padding, kernel_size, stride, dilation, groups, pool = case
        want = torch_forward(
            x[0],
            p[0]["w"],
            p[0]["b"],
            stride=stride,
            dilation=dilation,
            padding=padding,
            groups=groups,
            pool=pool,
            own_same=padding == "same" and stride == 1,
        )
        assert out.shape[1:] == want.shape, case
        assert relative_error(out[0], want) < TORCH_TOLERANCE, case


# ---------------------------------------------------------------------------------------
# 2. A padded batch gives each sequence what it gets alone.

# (padding, kernel, strides of the two layers, dilation, pool): padding × stride × pool is a
# Latin square (every pair of their values once), each padding meets both dilations and
# kernels 1-4 all appear, "same" with an even kernel too (k = 4: the extra zero after).
PADDED_CASES = [
    ("same", 3, (1, 1), 1, "none"),
    ("same", 2, (2, 1), 2, "max"),
    ("same", 4, (3, 1), 1, "avg"),
    ("causal", 4, (1, 1), 2, "max"),
    ("causal", 3, (2, 2), 1, "avg"),
    ("causal", 1, (3, 1), 2, "none"),
    ("valid", 2, (1, 1), 1, "avg"),
    ("valid", 3, (2, 1), 2, "none"),
    ("valid", 1, (3, 1), 1, "max"),
]


def _check_padded_equals_alone(stack, dtype, rng):
    """A batch of four: the longest, a middle one, the shortest that gives an output and
    one that gives none; NaN/inf padding, traced lengths inside jit."""
    shortest = stack.min_length()
    num_steps = max(13, shortest + 6)
    lengths = [num_steps, (num_steps + shortest) // 2, shortest, shortest - 1]
    out_lengths = [stack.output_lengths(L) for L in lengths]
    assert out_lengths[-1] == 0 and min(out_lengths[:-1]) >= 1
    params = _random_params(stack, INPUT_SIZE, rng, dtype)
    xs = rng.normal(size=(len(lengths), num_steps, INPUT_SIZE))
    out_steps = stack.output_lengths(num_steps)
    cotangents = rng.normal(size=(len(lengths), out_steps, stack.output_size(INPUT_SIZE)))
    # alone: the sequences with padding after them and some output (1 and 2)
    alone_indices = [
        b for b in range(len(lengths)) if 0 < out_lengths[b] and lengths[b] < num_steps
    ]
    alone = [
        (
            jnp.asarray(xs[b : b + 1, : lengths[b]], dtype),
            jnp.asarray(cotangents[b : b + 1, : out_lengths[b]], dtype),
        )
        for b in alone_indices
    ]

    def forward(p, x, seq_lengths):
        return stack.apply(p, x, seq_lengths=seq_lengths)

    (outputs, got_lengths), (params_grads, xs_grads), alone_results = _padded_and_alone(
        forward,
        params,
        jnp.asarray(_poisoned(xs, lengths), dtype),
        np.asarray(lengths, np.int32),
        jnp.asarray(cotangents, dtype),
        alone,
    )
    assert outputs.dtype == dtype and outputs.shape[1] == out_steps
    assert np.asarray(got_lengths).tolist() == out_lengths
    worst = 0.0
    for b, (length, out_length) in enumerate(zip(lengths, out_lengths, strict=True)):
        assert np.all(np.asarray(outputs[b, out_length:]) == 0.0), b
        assert np.all(np.asarray(xs_grads[b, :, length:]) == 0.0), b  # the poisoned steps
        others = np.delete(np.asarray(xs_grads[b]), b, axis=0)
        assert np.all(others == 0.0), b
        params_grad = jax.tree_util.tree_map(lambda g, b=b: g[b], params_grads)
        if out_length == 0:  # nothing reaches an output: no gradient either
            assert all(np.all(leaf == 0.0) for leaf in _leaves(params_grad)), b
            assert np.all(np.asarray(xs_grads[b]) == 0.0), b
            continue
        if b not in alone_indices:
            continue
        (alone_params_grad, alone_xs_grad), (alone_outputs, _) = alone_results[
            alone_indices.index(b)
        ]
        errors = (
            relative_error(outputs[b, :out_length], alone_outputs[0]),
            relative_error(xs_grads[b, b, :length], alone_xs_grad[0]),
            relative_error(_leaves(params_grad), _leaves(alone_params_grad)),
        )
        assert errors[0] < SAME_MATH_TOLERANCE[dtype], (b, errors)
        assert max(errors[1:]) < SAME_MATH_GRAD_TOLERANCE[dtype], (b, errors)
        worst = np.maximum(worst, errors)
    return worst


@pytest.mark.parametrize(
    "padding, kernel_size, strides, dilation, pool",
    PADDED_CASES,
    ids=[f"{p}-k{k}-s{s[0]}{s[1]}-d{d}-{pool}" for p, k, s, d, pool in PADDED_CASES],
)
def test_padded_batch_equals_each_sequence_alone(
    padding, kernel_size, strides, dilation, pool, rng
):
    stack = _stack(padding, kernel_size, strides, dilation, pool)
    _check_padded_equals_alone(stack, "float32", rng)


@pytest.mark.parametrize(
    "case",
    [PADDED_CASES[1], PADDED_CASES[4], PADDED_CASES[7]],
    ids=["same-k2-s21-d2-max", "causal-k3-s22-d1-avg", "valid-k3-s21-d2-none"],
)
def test_padded_batch_equals_each_sequence_alone_float64(case, rng):
    with jax.enable_x64(True):
        _check_padded_equals_alone(_stack(*case), "float64", rng)


def test_single_conv1d_padded_eagerly_and_in_jit(rng):
    """A lone Conv1D (no stack) with concrete lengths outside jit and traced ones inside:
    the same outputs and lengths, zero past them, each sequence as alone."""
    layer = Conv1D(3, kernel_size=4, stride=2, dilation=1, padding="same", activation="relu")
    params = _random_params(layer, INPUT_SIZE, rng)
    lengths = np.array([9, 4, 0], np.int32)
    xs = jnp.asarray(_poisoned(rng.normal(size=(3, 9, INPUT_SIZE)), lengths), jnp.float32)
    eager, eager_lengths = layer.apply(params, xs, seq_lengths=lengths)
    jitted, jitted_lengths = jax.jit(lambda p, x, n: layer.apply(p, x, seq_lengths=n))(
        params, xs, lengths
    )
    assert np.asarray(eager_lengths).tolist() == np.asarray(jitted_lengths).tolist() == [5, 2, 0]
    assert relative_error(eager, jitted) < SAME_MATH_TOLERANCE["float32"]
    alone, none = layer.apply(params, xs[1:2, :4])
    assert none is None
    assert relative_error(eager[1, :2], alone[0]) < SAME_MATH_TOLERANCE["float32"]
    assert np.all(np.asarray(eager[1, 2:]) == 0.0) and np.all(np.asarray(eager[2]) == 0.0)


# ---------------------------------------------------------------------------------------
# 3. Causality.


def _read_bound(stack, t):
    """The last input step output t of a causal stack reads: a causal stride-s conv's
    output u reads inputs ≤ u·s; pooled output u reads its window, ≤ u·P + P − 1."""
    for layer in reversed(stack.layers):
        if stack.pooling:
            t = t * stack.pool_size + stack.pool_size - 1
        t = t * layer.stride
    return t


CAUSAL_CASES = [((1, 1), "none"), ((2, 1), "none"), ((1, 2), "avg"), ((2, 1), "max")]


@pytest.mark.parametrize(
    "strides, pool", CAUSAL_CASES, ids=[f"s{s[0]}{s[1]}-{p}" for s, p in CAUSAL_CASES]
)
def test_causal_outputs_never_read_the_future(strides, pool, rng):
    """Perturbing every input after step t leaves every output that reads only steps ≤ t
    (stride 1: output t' ≤ t) exactly as it was, and changes some later output; and
    (without max pooling, where a perturbation may lose the max) perturbing exactly the
    last step an output reads changes it: the bound is tight."""
    stack = ConvStack(
        (
            Conv1D(
                4, kernel_size=3, stride=strides[0], dilation=2, padding="causal", activation="tanh"
            ),
            Conv1D(3, kernel_size=2, stride=strides[1], padding="causal", activation="tanh"),
        ),
        pool=pool,
        pool_size=POOL_SIZE,
    )
    num_steps = 16
    out_steps = stack.output_lengths(num_steps)
    bounds = [_read_bound(stack, t) for t in range(out_steps)]
    if strides == (1, 1) and pool == "none":
        assert bounds == list(range(out_steps))
    params = _random_params(stack, INPUT_SIZE, rng)
    x = rng.normal(size=(num_steps, INPUT_SIZE))
    batch = [x]
    for t in range(num_steps - 1):  # every step after t replaced
        batch.append(np.concatenate([x[: t + 1], rng.normal(size=(num_steps - t - 1, INPUT_SIZE))]))
    for bound in bounds:  # only the last step output u reads, moved
        moved = x.copy()
        if bound < num_steps:
            moved[bound] += 1.0 + rng.random(INPUT_SIZE)
        batch.append(moved)
    outputs = np.asarray(
        jax.jit(lambda p, v: stack.apply(p, v)[0])(
            params, jnp.asarray(np.stack(batch), jnp.float32)
        )
    )
    original = outputs[0]
    changed = 0
    for t in range(num_steps - 1):
        got = outputs[1 + t]
        sees_only_past = [u for u in range(out_steps) if bounds[u] <= t]
        later = [u for u in range(out_steps) if bounds[u] > t]
        assert np.array_equal(got[sees_only_past], original[sees_only_past]), t
        if later:
            assert not np.array_equal(got[later], original[later]), t
            changed += 1
    assert changed >= num_steps // 2
    if pool != "max":
        for u, bound in enumerate(bounds):
            if bound < num_steps:
                assert not np.array_equal(outputs[num_steps + u][u], original[u]), u


def test_same_padding_sees_the_future(rng):
    """Control for the causal test: with padding "same", output t changes when only inputs
    after t do, for every t but the last."""
    stack = conv_stack([4, 3], kernel_size=3, padding="same", activation="tanh")
    params = _random_params(stack, INPUT_SIZE, rng)
    num_steps = 10
    x = rng.normal(size=(num_steps, INPUT_SIZE))
    batch = [x] + [
        np.concatenate([x[: t + 1], rng.normal(size=(num_steps - t - 1, INPUT_SIZE))])
        for t in range(num_steps - 1)
    ]
    outputs = np.asarray(
        jax.jit(lambda p, v: stack.apply(p, v)[0])(
            params, jnp.asarray(np.stack(batch), jnp.float32)
        )
    )
    for t in range(num_steps - 1):
        assert not np.array_equal(outputs[1 + t, t], outputs[0, t]), t


# ---------------------------------------------------------------------------------------
# 4. Against float64 NumPy loops.

REFERENCE_LAYERS = [  # (groups, input channels, features)
    (1, 4, 6),
    (2, 4, 6),
    (4, 4, 4),  # depthwise
]


def _check_against_loops(dtype, rng):
    """Every padding × (groups 1, 2, depthwise) at kernel 3, stride 2, dilation 2 ("same"
    also at the even kernels 4 and 2, whose odd padding puts the extra zero after), tanh,
    random weights and bias; a padded batch (NaN/inf), each sequence against the loops on
    its own steps; and one two-layer causal stack, grouped, per pool."""
    modules, params, batches = [], [], []
    lengths = np.array([12, 7, 5], np.int32)
    for padding in PADDINGS:
        for groups, channels, features in REFERENCE_LAYERS:
            shapes = [(3, 2, 2)] + ([(4, 1, 1), (2, 2, 1)] if padding == "same" else [])
            for kernel_size, stride, dilation in shapes:  # (k, s, d)
                layer = Conv1D(
                    features,
                    kernel_size=kernel_size,
                    stride=stride,
                    dilation=dilation,
                    padding=padding,
                    groups=groups,
                    activation="tanh",
                )
                modules.append(layer)
                params.append(_random_params(layer, channels, rng, dtype))
                batches.append(rng.normal(size=(len(lengths), 12, channels)))
    for pool in ("max", "avg"):
        stack = conv_stack(
            [4, 4],
            kernel_size=3,
            stride=(2, 1),
            padding="causal",
            groups=2,
            pool=pool,
            activation="tanh",
        )
        modules.append(stack)
        params.append(_random_params(stack, 4, rng, dtype))
        batches.append(rng.normal(size=(len(lengths), 12, 4)))
    xs = [jnp.asarray(_poisoned(batch, lengths), dtype) for batch in batches]
    results, params = (
        jax.device_get(
            jax.jit(
                lambda p, x, n: [
                    m.apply(pi, xi, seq_lengths=n) for m, pi, xi in zip(modules, p, x, strict=True)
                ]
            )(params, xs, lengths)
        ),
        jax.device_get(params),
    )
    worst = 0.0
    for module, p, batch, (outputs, out_lengths) in zip(
        modules, params, batches, results, strict=True
    ):
        assert outputs.dtype == dtype
        for b, length in enumerate(lengths):
            if isinstance(module, Conv1D):
                want = reference_conv1d(
                    batch[b, :length],
                    p["w"],
                    p["b"],
                    stride=module.stride,
                    dilation=module.dilation,
                    padding=module.padding,
                    groups=module.groups,
                    activation=module.activation,
                )
            else:
                want = reference_stack(module, p, batch[b, :length])
            assert int(out_lengths[b]) == len(want), (module, b)
            error = relative_error(outputs[b, : len(want)], want)
            assert error < REFERENCE_TOLERANCE[dtype], (module, b, error)
            assert np.all(np.asarray(outputs[b, len(want) :]) == 0.0), (module, b)
            worst = max(worst, error)
    return worst


def test_against_numpy_loops_float32(rng):
    _check_against_loops("float32", rng)


def test_against_numpy_loops_float64(rng):
    with jax.enable_x64(True):
        _check_against_loops("float64", rng)


# ---------------------------------------------------------------------------------------
# 5. bfloat16 and extreme scales.


def test_bfloat16_close_to_float32(rng):
    """bfloat16 inputs and parameters (a padded batch, strided and pooled) against the same
    in float32: close, the same lengths, zero past them."""
    stack = conv_stack(
        [6, 4], kernel_size=3, stride=(2, 1), padding="same", pool="avg", activation="tanh"
    )
    params = _random_params(stack, INPUT_SIZE, rng)
    lengths = np.array([11, 6], np.int32)
    xs = rng.normal(size=(2, 11, INPUT_SIZE))

    @jax.jit
    def both(params, xs, lengths):
        low = jax.tree_util.tree_map(lambda leaf: leaf.astype(jnp.bfloat16), params)
        return (
            stack.apply(params, xs, seq_lengths=lengths),
            stack.apply(low, xs.astype(jnp.bfloat16), seq_lengths=lengths),
        )

    (full, full_lengths), (half, half_lengths) = jax.device_get(
        both(params, jnp.asarray(xs, jnp.float32), lengths)
    )
    assert half.dtype == jnp.bfloat16
    assert np.asarray(half_lengths).tolist() == np.asarray(full_lengths).tolist()
    assert relative_error(half.astype(jnp.float32), full) < BFLOAT16_TOLERANCE
    assert np.all(np.asarray(half[1, int(half_lengths[1]) :], np.float32) == 0.0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_outputs_scale_linearly_with_extreme_inputs(dtype, rng):
    """Without bias or activation (pooling by mean), a stack is linear: inputs × 1e4 and
    × 1e-4 scale the outputs by the same factor, without overflow or underflow."""
    stack = ConvStack(
        (
            Conv1D(4, kernel_size=3, stride=2, padding="causal", activation="none", use_bias=False),
            Conv1D(3, kernel_size=2, dilation=2, padding="same", activation="none", use_bias=False),
        ),
        pool="avg",
    )
    params = _random_params(stack, INPUT_SIZE, rng, dtype)
    lengths = np.array([12, 5], np.int32)
    xs = rng.normal(size=(2, 12, INPUT_SIZE))
    scales = (1.0, 1e4, 1e-4)
    outputs = jax.jit(lambda p, x, n: [stack.apply(p, x * s, seq_lengths=n)[0] for s in scales])(
        params, jnp.asarray(xs, dtype), lengths
    )
    tolerance = SAME_MATH_TOLERANCE[dtype] if dtype == "float32" else BFLOAT16_TOLERANCE
    base = np.asarray(outputs[0], np.float64)
    assert np.max(np.abs(base)) > 0.1
    for scale, scaled in zip(scales[1:], outputs[1:], strict=True):
        assert scaled.dtype == dtype
        assert relative_error(np.asarray(scaled, np.float64) / scale, base) < tolerance, scale


# ---------------------------------------------------------------------------------------
# 6. Dropout.


def test_dropout_only_when_training(rng):
    """One layer at rate 0.5: training keeps each output or zeroes it, the kept ones
    doubled exactly; different keys drop differently; train=False (with or without a key)
    is the stack without dropout; a two-layer stack's training outputs differ too, and
    stay zero past each length. Training without a key is refused, in a model too."""
    layer = Conv1D(4, kernel_size=3, activation="tanh")
    dropped = ConvStack((layer,), dropout=0.5)
    plain = ConvStack((layer,))
    deep = ConvStack((layer, Conv1D(4, kernel_size=2)), dropout=0.5)
    deep_plain = ConvStack(deep.layers)
    params = _random_params(dropped, INPUT_SIZE, rng)
    deep_params = _random_params(deep, INPUT_SIZE, rng)
    xs = jnp.asarray(rng.normal(size=(2, 10, INPUT_SIZE)), jnp.float32)
    keys = jax.random.split(jax.random.key(3))

    @jax.jit
    def run(params, deep_params, xs, keys):
        lengths = jnp.array([10, 4], jnp.int32)
        return (
            plain.apply(params, xs)[0],
            dropped.apply(params, xs, key=keys[0], train=True)[0],
            dropped.apply(params, xs, key=keys[1], train=True)[0],
            dropped.apply(params, xs, key=keys[0], train=False)[0],
            dropped.apply(params, xs)[0],
            deep_plain.apply(deep_params, xs)[0],
            deep.apply(deep_params, xs, key=keys[0], train=True)[0],
            deep.apply(deep_params, xs, seq_lengths=lengths, key=keys[1], train=True),
        )

    results = jax.device_get(run(params, deep_params, xs, keys))
    reference, train_a, train_b, eval_keyed, eval_plain, deep_reference, deep_train = results[:7]
    deep_padded, deep_lengths = results[7]
    assert np.all(reference != 0.0)
    kept = train_a != 0.0
    assert 0.25 < kept.mean() < 0.75
    assert np.array_equal(train_a[kept], 2.0 * reference[kept])
    assert not np.array_equal(train_a, train_b)
    assert np.array_equal(eval_keyed, reference) and np.array_equal(eval_plain, reference)
    assert not np.array_equal(deep_train, deep_reference)
    assert deep_lengths.tolist() == [10, 4] and np.all(deep_padded[1, 4:] == 0.0)
    assert np.any(deep_padded[1, :4] != 0.0)
    with pytest.raises(ValueError, match=r"needs a PRNG key, got key=None"):
        dropped.apply(params, xs, train=True)
    model = ManyToOne(_lstm(False), 2, frontend=dropped)
    model_params = _random_params(model, INPUT_SIZE, rng)
    with pytest.raises(ValueError, match=r"needs a PRNG key, got key=None"):
        model.apply(model_params, xs, train=True)
    plain.apply(params, xs, train=True)  # no dropout: no key needed


# ---------------------------------------------------------------------------------------
# 7. Architectures with a front-end.


def _lstm(bidirectional):
    return RNNLayer(seqlab.cells.LSTM(8), bidirectional=bidirectional)


def _check_architecture(model, forward, cotangent_shape, lengths, rng, num_steps=12):
    """``forward(params, xs, lengths) -> (outputs, encoded)`` over a NaN/inf-padded batch
    (traced lengths, in jit) against every padded sequence run alone: outputs and
    gradients (params, inputs); the padding gets no gradient. Returns the encoded batch."""
    params = _random_params(model, INPUT_SIZE, rng, scale=0.4)
    xs = rng.normal(size=(len(lengths), num_steps, INPUT_SIZE))
    cotangents = rng.normal(size=(len(lengths), *cotangent_shape))
    padded = [b for b, length in enumerate(lengths) if length < num_steps]
    alone = [
        (
            jnp.asarray(xs[b : b + 1, : lengths[b]], jnp.float32),
            jnp.asarray(cotangents[b : b + 1], jnp.float32),
        )
        for b in padded
    ]
    (outputs, encoded), (params_grads, xs_grads), alone_results = _padded_and_alone(
        forward,
        params,
        jnp.asarray(_poisoned(xs, lengths), jnp.float32),
        np.asarray(lengths, np.int32),
        jnp.asarray(cotangents, jnp.float32),
        alone,
    )
    assert np.all(np.isfinite(outputs))
    for b, length in enumerate(lengths):
        assert np.all(xs_grads[b, :, length:] == 0.0), b
        if b not in padded:
            continue
        (alone_params_grad, alone_xs_grad), (alone_outputs, _) = alone_results[padded.index(b)]
        params_grad = jax.tree_util.tree_map(lambda g, b=b: g[b], params_grads)
        errors = (
            relative_error(outputs[b], alone_outputs[0]),
            relative_error(xs_grads[b, b, :length], alone_xs_grad[0]),
            relative_error(_leaves(params_grad), _leaves(alone_params_grad)),
        )
        assert errors[0] < SAME_MATH_TOLERANCE["float32"], (b, errors)
        assert max(errors[1:]) < SAME_MATH_GRAD_TOLERANCE["float32"], (b, errors)
    return encoded


def test_many_to_one_with_strided_frontend_padded_equals_alone(rng):
    """Bidirectional LSTM after a two-layer stack of strides 2 and 1: each sequence of a NaN-padded
    batch gets its outputs and gradients alone; encoded_lengths are the stack's, and the
    encoder's outputs stop there."""
    stack = conv_stack([5, 4], kernel_size=3, stride=(2, 1), padding="same")
    model = ManyToOne.build(_lstm, 3, bidirectional=True, embed_size=None, frontend=stack)
    assert model.frontend is stack and model.encoder.bidirectional
    assert set(jax.eval_shape(lambda k: model.init(k, 3), jax.random.key(0))) == {
        "frontend",
        "encoder",
        "head",
    }
    lengths = [12, 7, 4]
    encoded_lengths = np.asarray(model.encoded_lengths(np.asarray(lengths, np.int32)))
    assert encoded_lengths.tolist() == [stack.output_lengths(L) for L in lengths] == [6, 4, 2]
    assert model.encoded_lengths(None) is None

    def forward(p, x, seq_lengths):  # apply = from_encoding ∘ encode
        encoded = model.encode(p, x, seq_lengths)
        return model.from_encoding(p, encoded, seq_lengths), encoded

    encoded = _check_architecture(model, forward, (3,), lengths, rng)
    assert encoded.shape == (len(lengths), stack.output_lengths(12), 16)
    for b, length in enumerate(encoded_lengths):
        assert np.all(encoded[b, length:] == 0.0) and np.all(encoded[b, :length] != 0.0), b


def test_encoder_decoder_with_strided_frontend_padded_equals_alone(rng):
    """An LSTM encoder-decoder after a stride-2 "valid" stack: each sequence's
    teacher-forced logits and gradients as alone (the context read at the stack's
    lengths)."""
    stack = conv_stack([4], kernel_size=3, stride=2, padding="valid", activation="tanh")
    model = EncoderDecoder.build(_lstm, 7, bidirectional=False, embed_size=4, frontend=stack)
    lengths = [12, 8, 3]
    assert np.asarray(model.encoded_lengths(np.asarray(lengths, np.int32))).tolist() == [5, 3, 1]
    targets = jnp.asarray(rng.integers(3, 7, size=(len(lengths), 4)), jnp.int32)
    rows = {length: b for b, length in enumerate(lengths)}  # a sequence alone: by its length

    def forward(p, x, seq_lengths):
        if seq_lengths is None:
            return model.apply(p, x, targets[rows[x.shape[1]]][None]), None
        return model.apply(p, x, targets, source_lengths=seq_lengths), None

    _check_architecture(model, forward, (4, 7), lengths, rng)


@pytest.mark.parametrize(
    "frontend, named",
    [
        (conv_stack([4], stride=2), "stride 2"),
        (conv_stack([4, 4], padding="valid"), "padding 'valid'"),
        (conv_stack([4], pool="max", pool_size=3), "pool_size 3"),
        (Conv1D(4, stride=3, padding="causal"), "stride 3"),
    ],
    ids=["stride", "valid", "pooled", "conv1d-stride"],
)
def test_many_to_many_refuses_a_frontend_that_changes_lengths(frontend, named):
    with pytest.raises(ValueError, match=r"must keep every length.*" + named):
        ManyToMany(_lstm(False), 3, frontend)
    with pytest.raises(ValueError, match=r"must keep every length.*" + named):
        ManyToMany.build(_lstm, 3, bidirectional=False, embed_size=None, frontend=frontend)


def test_many_to_many_with_causal_frontend(rng):
    """A causal stride-1 stack keeps every length: one output per input step, exactly zero
    past each length, finite despite NaN/inf padding; a pool of size 1 pools nothing."""
    stack = conv_stack([4, 4], kernel_size=3, dilation=2, padding="causal", pool="avg", pool_size=1)
    model = ManyToMany(_lstm(False), 3, stack)
    params = _random_params(model, INPUT_SIZE, rng, scale=0.4)
    lengths = np.array([9, 5, 0], np.int32)
    xs = jnp.asarray(_poisoned(rng.normal(size=(3, 9, INPUT_SIZE)), lengths), jnp.float32)
    outputs = np.asarray(
        jax.jit(lambda p, x, n: model.apply(p, x, seq_lengths=n))(params, xs, lengths)
    )
    assert outputs.shape == (3, 9, 3) and np.all(np.isfinite(outputs))
    for b, length in enumerate(lengths):
        assert np.all(outputs[b, length:] == 0.0) and np.all(outputs[b, :length] != 0.0), b


def test_models_without_sequences_refuse_a_frontend():
    stack = conv_stack([4])
    with pytest.raises(ValueError, match=r"one-to-many model reads no input sequence.*front-end"):
        OneToMany.build(_lstm, 5, bidirectional=False, embed_size=4, frontend=stack)
    with pytest.raises(ValueError, match=r"tree model is built from a tree cell"):
        TreeEncoder.build(_lstm, 5, bidirectional=False, embed_size=None, frontend=stack)
    with pytest.raises(
        ValueError, match=r"frontend must be a seqlab.layers.ConvStack or Conv1D.*str"
    ):
        ManyToOne(_lstm(False), 3, "conv")
    with pytest.raises(
        ValueError, match=r"frontend must be a seqlab.layers.ConvStack or Conv1D.*list"
    ):
        EncoderDecoder.build(_lstm, 5, bidirectional=False, embed_size=4, frontend=[Conv1D(4)])


def test_models_without_frontend_initialize_as_before():
    """No front-end: exactly the parameters the models had before front-ends existed (the
    same keys and values, from the same key splits), with or without frontend=None."""
    many_to_one = ManyToOne(_lstm(False), 3)
    encoder_decoder = EncoderDecoder.build(_lstm, 7, bidirectional=False, embed_size=4)
    assert many_to_one == ManyToOne(_lstm(False), 3, frontend=None)
    assert many_to_one == ManyToOne.build(_lstm, 3, bidirectional=False, embed_size=None)
    assert ManyToMany(_lstm(False), 3).frontend is None
    assert encoder_decoder == EncoderDecoder(encoder_decoder.encoder, encoder_decoder.decoder, None)
    key = jax.random.key(11)
    k_encoder, k_second = jax.random.split(key)
    hidden = many_to_one.encoder.output_size(INPUT_SIZE)
    before = {  # the init of the models before front-ends existed
        "many_to_one": {
            "encoder": many_to_one.encoder.init(k_encoder, INPUT_SIZE),
            "head": dense_init(k_second, hidden, 3),
        },
        "encoder_decoder": {
            "encoder": encoder_decoder.encoder.init(k_encoder, INPUT_SIZE),
            "decoder": encoder_decoder.decoder.init(k_second, hidden),
        },
    }
    now = {
        "many_to_one": many_to_one.init(key, INPUT_SIZE),
        "encoder_decoder": encoder_decoder.init(key, INPUT_SIZE),
    }
    for name, params in now.items():
        assert "frontend" not in params, name
        expected = before[name]
        assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(expected)
        for got, want in zip(_leaves(params), _leaves(expected), strict=True):
            assert np.array_equal(got, want), name


# ---------------------------------------------------------------------------------------
# 8. Errors.


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Conv1D(4, padding="full"), r"padding must be one of .*got 'full'"),
        (lambda: Conv1D(4, kernel_size=0), r"kernel_size must be a positive int, got 0"),
        (lambda: Conv1D(4, kernel_size=True), r"kernel_size must be a positive int, got True"),
        (lambda: Conv1D(4, stride=0), r"stride must be a positive int, got 0"),
        (lambda: Conv1D(4, dilation=-1), r"dilation must be a positive int, got -1"),
        (lambda: Conv1D(6, groups=4), r"features \(6\) must divide by groups \(4\)"),
        (lambda: Conv1D(4, activation="sigmoid"), r"activation must be one of .*got 'sigmoid'"),
        (lambda: ConvStack(()), r"layers must be a non-empty sequence of Conv1D"),
        (lambda: ConvStack((Conv1D(4),), pool="sum"), r"pool must be one of .*got 'sum'"),
        (lambda: ConvStack((Conv1D(4),), pool_size=0), r"pool_size must be a positive int, got 0"),
        (
            lambda: ConvStack((Conv1D(4),), dropout=1.0),
            r"dropout must be a rate in \[0, 1\), got 1.0",
        ),
        (
            lambda: conv_stack([4, 4], stride=(2, 1, 1)),
            r"stride must be one int or one per layer \(2\)",
        ),
    ],
    ids=[
        "padding",
        "kernel_size",
        "kernel_size-bool",
        "stride",
        "dilation",
        "features-groups",
        "activation",
        "layers",
        "pool",
        "pool_size",
        "dropout",
        "conv_stack-stride",
    ],
)
def test_bad_settings_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_inputs_are_named(rng):
    layer = Conv1D(4, kernel_size=3, groups=2, padding="valid", dilation=2)
    with pytest.raises(ValueError, match=r"input channels \(3\) must divide by groups \(2\)"):
        layer.init(jax.random.key(0), 3)
    params = _random_params(layer, 2, rng)
    with pytest.raises(
        ValueError, match=r"padding='valid' and receptive field 5 .* at least 5 steps, got T = 4"
    ):
        layer.apply(params, jnp.zeros((1, 4, 2), jnp.float32))
    stack = ConvStack((layer, layer))
    with pytest.raises(ValueError, match=r"at least 9 steps, got T = 8"):
        stack.apply((params, params), jnp.zeros((1, 8, 2), jnp.float32))
    with pytest.raises(ValueError, match=r"xs"):
        layer.apply(params, jnp.zeros((8, 2), jnp.float32))
    with pytest.raises(ValueError, match=r"params must be a sequence of 2 per-layer dicts"):
        stack.apply(params, jnp.zeros((1, 9, 2), jnp.float32))


def test_a_length_the_front_end_would_empty_is_refused_when_concrete():
    """A sequence shorter than min_length would reach the RNN as no steps at all (its
    summary the head's bias alone): refused, naming it; lengths past T too, as in scan."""
    stack = conv_stack([4], kernel_size=5, padding="valid", stride=2)
    assert stack.min_length() == 5
    params = stack.init(jax.random.key(0), 2)
    xs = jnp.ones((3, 12, 2), jnp.float32)
    with pytest.raises(ValueError, match=r"seq_lengths\[1\] = 4 is shorter .*\(5 steps"):
        stack.apply(params, xs, seq_lengths=jnp.array([12, 4, 6]))
    with pytest.raises(ValueError, match=r"seq_lengths must lie in \[0, T\] = \[0, 12\]"):
        stack.apply(params, xs, seq_lengths=jnp.array([13, 5, 6]))
    _, lengths = stack.apply(params, xs, seq_lengths=jnp.array([12, 0, 5]))  # 0 stays 0
    np.testing.assert_array_equal(lengths, [4, 0, 1])


def test_summaries_of_spatial_maps_and_front_ends_before_conv_cells_are_refused():
    conv_cell = seqlab.cells.ConvLSTM(3, spatial_shape=(4, 4))
    with pytest.raises(ValueError, match="summarizes each sequence.*spatial shape \\(4, 4\\)"):
        ManyToOne(RNNLayer(conv_cell), 2)
    with pytest.raises(ValueError, match="front-end convolves feature vectors"):
        ManyToMany(RNNLayer(conv_cell), 1, frontend=conv_stack([4], padding="causal"))
    ManyToMany(RNNLayer(conv_cell), 1)  # a per-position head over the maps is fine


def test_numpy_integer_sizes_are_taken_as_ints():
    layer = Conv1D(np.int64(4), kernel_size=np.int32(3), stride=np.int64(2))
    assert layer == Conv1D(4, kernel_size=3, stride=2)
    assert type(layer.features) is int
    cell = seqlab.cells.ConvLSTM(4, spatial_shape=tuple(np.array([8, 6])), kernel_size=np.int64(3))
    assert (cell.spatial_shape, cell.kernel_size) == ((8, 6), (3, 3))
    assert all(type(size) is int for size in cell.spatial_shape + cell.kernel_size)
    with pytest.raises(ValueError, match="kernel_size must be a positive int, got True"):
        Conv1D(4, kernel_size=True)
