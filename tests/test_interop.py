"""Parity with PyTorch (nn.RNN/LSTM/GRU, packed sequences) and Flax linen cells.

Tolerance: relative error (max |difference| / max |reference|) at most 1e-5 in float32,
for outputs, final states, and gradients with respect to the inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqlab
from seqlab.interop import from_flax_linen, from_torch, state_to_torch_layout, to_torch
from tests.references import relative_error

torch = pytest.importorskip("torch")

TOLERANCE = 1e-5

CONFIGS = [
    # (kind, options)
    ("RNN", dict(nonlinearity="tanh")),
    ("RNN", dict(nonlinearity="relu")),
    ("LSTM", dict()),
    ("LSTM", dict(proj_size=3)),
    ("GRU", dict()),
]
# (num_layers, bidirectional, batch_first, bias): every value of each option appears with
# every value of each other option at least once (pairwise cover of the 16 combinations).
LAYOUTS = [
    (1, False, True, True),
    (2, True, False, True),
    (2, True, True, False),
    (1, True, False, False),
    (2, False, False, False),
    (1, True, True, True),
]


def _run_torch(module, x, lengths, weights):
    """Outputs, final state and d(sum(weights * outputs))/dx of a torch module."""
    x = torch.tensor(x, requires_grad=True)
    if lengths is None:
        out, state = module(x)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False
        )
        out, state = module(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out,
            batch_first=module.batch_first,
            total_length=x.shape[1 if module.batch_first else 0],
        )
    (out * torch.tensor(weights)).sum().backward()
    state = (
        tuple(s.detach().numpy() for s in state)
        if isinstance(state, tuple)
        else state.detach().numpy()
    )
    return out.detach().numpy(), state, x.grad.numpy()


@pytest.mark.parametrize("kind, options", CONFIGS)
@pytest.mark.parametrize("num_layers, bidirectional, batch_first, bias", LAYOUTS)
def test_from_torch_matches_packed_torch(
    kind, options, num_layers, bidirectional, batch_first, bias, rng
):
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(
        input_size=4,
        hidden_size=6,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
        **options,
    )
    layer, params = from_torch(module)
    batch, steps = 3, 7
    shape = (batch, steps, 4) if batch_first else (steps, batch, 4)
    x = rng.normal(size=shape).astype(np.float32)
    lengths = np.array([7, 2, 5])
    out_size = (options.get("proj_size") or 6) * (2 if bidirectional else 1)
    out_shape = (batch, steps, out_size) if batch_first else (steps, batch, out_size)
    weights = rng.normal(size=out_shape).astype(np.float32)

    want_out, want_state, want_grad = _run_torch(module, x, lengths, weights)

    def loss(x):
        out, state = layer.apply(params, x, seq_lengths=jnp.asarray(lengths))
        return jnp.sum(out * weights), (out, state)

    (_, (out, state)), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(x))
    assert relative_error(out, want_out) < TOLERANCE
    assert relative_error(state_to_torch_layout(layer, state), want_state) < TOLERANCE
    assert relative_error(grad, want_grad) < TOLERANCE


@pytest.mark.parametrize("kind, options", CONFIGS)
def test_to_torch_round_trip(kind, options, rng):
    cell = {
        "RNN": lambda: seqlab.cells.RNN(5, activation=options.get("nonlinearity", "tanh")),
        "LSTM": lambda: seqlab.cells.LSTM(5, proj_size=options.get("proj_size", 0)),
        "GRU": lambda: seqlab.cells.GRU(5),
    }[kind]()
    layer = seqlab.layers.RNNLayer(cell, num_layers=2, bidirectional=True)
    params = layer.init(jax.random.key(0), 3)
    params = jax.tree_util.tree_map(  # no zero biases
        lambda leaf: leaf + 0.1 * jnp.asarray(rng.normal(size=leaf.shape), jnp.float32), params
    )
    module = to_torch(layer, params)
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    weights = np.ones((2, 6, module.proj_size or 5) if kind == "LSTM" else (2, 6, 5), np.float32)
    weights = np.concatenate([weights, weights], -1)
    want_out, _, _ = _run_torch(module, x, None, weights)
    out, _ = layer.apply(params, jnp.asarray(x))
    assert relative_error(out, want_out) < TOLERANCE
    back_layer, back_params = from_torch(module)
    out_back, _ = back_layer.apply(back_params, jnp.asarray(x))
    assert relative_error(out_back, out) < TOLERANCE


def test_to_torch_rejects_cells_torch_lacks():
    for cell in [
        seqlab.cells.MGU(4),
        seqlab.cells.GRU(4, variant="original"),
        seqlab.cells.RNN(4, activation="identity"),
    ]:
        layer = seqlab.layers.RNNLayer(cell)
        with pytest.raises(ValueError, match="PyTorch has no module for"):
            to_torch(layer, layer.init(jax.random.key(0), 3))
    with pytest.raises(ValueError, match="expects torch.nn.RNN"):
        from_torch(torch.nn.Linear(3, 4))


@pytest.mark.parametrize("name", ["LSTMCell", "OptimizedLSTMCell", "GRUCell"])
def test_from_flax_linen_matches_flax_rnn(name, rng):
    from flax import linen

    flax_cell = getattr(linen, name)(features=6)
    rnn = linen.RNN(flax_cell, return_carry=True)
    x = jnp.asarray(rng.normal(size=(3, 8, 4)), jnp.float32)
    lengths = jnp.array([8, 3, 5])
    variables = rnn.init(jax.random.key(0), x)
    variables = jax.tree_util.tree_map(  # flax initializes biases at zero: perturb them
        lambda leaf: leaf + 0.1 * jnp.asarray(rng.normal(size=leaf.shape), jnp.float32), variables
    )
    want_carry, want = rnn.apply(variables, x, seq_lengths=lengths)
    cell, params = from_flax_linen(flax_cell, variables["params"]["cell"])
    got, got_carry = seqlab.scan(cell, params, x, seq_lengths=lengths)
    valid = np.arange(8)[None, :] < np.asarray(lengths)[:, None]
    assert relative_error(np.asarray(got)[valid], np.asarray(want)[valid]) < TOLERANCE
    if name == "GRUCell":
        assert relative_error(got_carry, want_carry) < TOLERANCE
    else:  # flax's LSTM carry is (c, h)
        assert relative_error((got_carry.c, got_carry.h), want_carry) < TOLERANCE


def test_from_flax_linen_rejects_other_cells():
    from flax import linen

    with pytest.raises(ValueError, match="expects flax.linen.LSTMCell"):
        from_flax_linen(linen.MGUCell(features=3), {})
    with pytest.raises(ValueError, match="only the default sigmoid gates"):
        from_flax_linen(linen.LSTMCell(features=3, activation_fn=jax.nn.relu), {})
