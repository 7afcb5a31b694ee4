"""The four architectures, the encodings and the NNX wrapper."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import seqlab
from seqlab.layers import (
    ARCHITECTURES,
    Embedding,
    EncoderDecoder,
    LabelEncoder,
    ManyToMany,
    ManyToOne,
    NNXModule,
    OneToMany,
    RNNLayer,
    TokenDecoder,
    Vocabulary,
)


def _xs(rng, *shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_many_to_one_reads_last_valid_step(bidirectional, rng):
    encoder = RNNLayer(seqlab.cells.GRU(5), num_layers=2, bidirectional=bidirectional)
    model = ManyToOne(encoder, output_size=3)
    params = model.init(jax.random.key(0), 4)
    xs, lengths = _xs(rng, 3, 7, 4), np.array([7, 2, 4])
    logits = model.apply(params, xs, seq_lengths=jnp.asarray(lengths))
    outputs, _ = encoder.apply(params["encoder"], xs, seq_lengths=jnp.asarray(lengths))
    outputs = np.asarray(outputs)
    summary = np.stack([outputs[b, lengths[b] - 1, :5] for b in range(3)])
    if bidirectional:
        summary = np.concatenate([summary, outputs[:, 0, 5:]], axis=-1)
    expected = summary @ np.asarray(params["head"]["w"]) + np.asarray(params["head"]["b"])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    # Changing anything after a sequence's end changes nothing.
    poked = xs.at[1, 2:].set(100.0)
    np.testing.assert_array_equal(
        model.apply(params, poked, seq_lengths=jnp.asarray(lengths)), logits
    )


def test_many_to_one_learns_a_sequence_sum_sign(rng, standard_promotion):
    """A small LSTM classifier must learn sign(sum of inputs) well above chance."""
    model = ManyToOne(RNNLayer(seqlab.cells.LSTM(16)), output_size=2)
    params = model.init(jax.random.key(0), 1)
    xs = _xs(rng, 256, 10, 1)
    labels = (jnp.sum(xs, axis=(1, 2)) > 0).astype(jnp.int32)
    optimizer = optax.adam(1e-2)
    state = optimizer.init(params)

    def loss_fn(params):
        logits = model.apply(params, xs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def train_step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    for _ in range(150):
        params, state, loss = train_step(params, state)
    accuracy = jnp.mean(jnp.argmax(model.apply(params, xs), -1) == labels)
    assert float(accuracy) > 0.9, float(accuracy)


def test_many_to_many_loss_ignores_padding(rng):
    model = ManyToMany(RNNLayer(seqlab.cells.LSTM(6), bidirectional=True), output_size=4)
    params = model.init(jax.random.key(0), 3)
    xs, lengths = _xs(rng, 2, 6, 3), jnp.array([6, 3])
    labels = jnp.asarray(rng.integers(0, 4, size=(2, 6)), jnp.int32)

    def loss(params, xs, labels):
        logits = model.apply(params, xs, seq_lengths=lengths)
        return seqlab.layers.sequence_cross_entropy(logits, labels, lengths)

    logits = model.apply(params, xs, seq_lengths=lengths)
    assert np.all(np.asarray(logits)[1, 3:] == 0.0)
    base_loss, base_grad = jax.value_and_grad(loss)(params, xs, labels)
    poked_xs, poked_labels = xs.at[1, 3:].set(50.0), labels.at[1, 3:].set(0)
    poked_loss, poked_grad = jax.value_and_grad(loss)(params, poked_xs, poked_labels)
    assert float(base_loss) == float(poked_loss)
    jax.tree_util.tree_map(np.testing.assert_array_equal, base_grad, poked_grad)
    # mean over the 9 valid steps, by hand
    log_probs = jax.nn.log_softmax(logits, -1)
    picked = [
        -float(log_probs[b, t, labels[b, t]]) for b in range(2) for t in range(int(lengths[b]))
    ]
    np.testing.assert_allclose(float(base_loss), np.mean(picked), rtol=1e-6)


def _seq2seq(bidirectional=True):
    encoder = RNNLayer(seqlab.cells.GRU(12), num_layers=2, bidirectional=bidirectional)
    decoder = TokenDecoder(
        RNNLayer(seqlab.cells.LSTM(12), num_layers=2), vocab_size=9, embed_size=5
    )
    return EncoderDecoder(encoder, decoder)


def test_teacher_forcing_is_causal(rng):
    model = _seq2seq()
    params = model.init(jax.random.key(0), 4)
    sources, targets = _xs(rng, 2, 6, 4), jnp.array([[4, 5, 6, 7, 3], [8, 4, 3, 0, 0]])
    logits = model.apply(params, sources, targets, source_lengths=jnp.array([6, 3]))
    changed = model.apply(
        params, sources, targets.at[:, 3:].set(5), source_lengths=jnp.array([6, 3])
    )
    np.testing.assert_allclose(logits[:, :4], changed[:, :4], rtol=1e-6, atol=1e-6)
    assert not np.allclose(logits[:, 4:], changed[:, 4:])


def test_greedy_generation_agrees_with_teacher_forcing(rng):
    """Feeding the generated tokens back as targets, each token is the argmax of its logits."""
    model = _seq2seq()
    params = model.init(jax.random.key(1), 4)
    sources, source_lengths = _xs(rng, 5, 6, 4), jnp.array([6, 1, 3, 6, 5])
    tokens, lengths = model.generate(params, sources, 8, source_lengths=source_lengths)
    logits = model.apply(params, sources, tokens, source_lengths=source_lengths)
    greedy = np.asarray(jnp.argmax(logits, -1))
    for b in range(5):
        n = int(lengths[b])
        np.testing.assert_array_equal(greedy[b, :n], np.asarray(tokens)[b, :n])
        assert np.all(np.asarray(tokens)[b, n:] == 0)  # <pad> after <eos>
        if n < 8:
            assert int(tokens[b, n - 1]) == 3  # stopped at <eos>


def test_encoder_decoder_learns_to_reverse(rng, standard_promotion):
    """Reverse 4-token sequences: a small seq2seq reaches > 90% token accuracy."""
    model = _seq2seq(bidirectional=True)
    params = model.init(jax.random.key(0), 9)
    tokens = rng.integers(4, 9, size=(512, 4))
    sources = jax.nn.one_hot(jnp.asarray(tokens), 9)
    targets = jnp.asarray(
        np.concatenate([tokens[:, ::-1], np.full((512, 1), 3)], axis=1), jnp.int32
    )
    optimizer = optax.adam(1e-2)
    state = optimizer.init(params)

    @jax.jit
    def train_step(params, state):
        def loss_fn(params):
            logits = model.apply(params, sources, targets)
            return seqlab.layers.sequence_cross_entropy(logits, targets)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    for _ in range(200):
        params, state, loss = train_step(params, state)
    generated, _ = model.generate(params, sources, 5)
    accuracy = float(jnp.mean(generated == targets))
    assert accuracy > 0.9, accuracy


def test_one_to_many_generates_from_a_vector(rng):
    decoder = TokenDecoder(RNNLayer(seqlab.cells.GRU(8)), vocab_size=7, embed_size=3)
    model = OneToMany(decoder)
    params = model.init(jax.random.key(0), 5)
    vectors = _xs(rng, 3, 5)
    greedy, lengths = model.generate(params, vectors, 6)
    logits = model.apply(params, vectors, greedy)
    for b in range(3):
        n = int(lengths[b])
        np.testing.assert_array_equal(jnp.argmax(logits[b, :n], -1), greedy[b, :n])
    sample_a, _ = model.generate(params, vectors, 6, key=jax.random.key(1), temperature=2.0)
    sample_b, _ = model.generate(params, vectors, 6, key=jax.random.key(2), temperature=2.0)
    assert not np.array_equal(sample_a, sample_b)
    with pytest.raises(ValueError, match="needs a key"):
        model.generate(params, vectors, 6, temperature=1.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        model.generate(params, vectors[None], 6)


def _architecture(kind, hidden=5, output_size=6):
    def make_rnn(bidirectional):
        return RNNLayer(seqlab.cells.LSTM(hidden), bidirectional=bidirectional)

    return ARCHITECTURES[kind].build(
        make_rnn, output_size, bidirectional=kind != "one_to_many", embed_size=3
    )


SEQUENCE_KINDS = sorted(kind for kind, cls in ARCHITECTURES.items() if not cls.reads_tree)


@pytest.mark.parametrize("kind", SEQUENCE_KINDS)
def test_every_architecture_speaks_one_interface(kind, rng):
    """``forward`` is ``apply`` in one signature, and equals ``from_encoding(encode(.))``
    (what the gradient analysis differentiates through); ``output_mask`` counts the valid
    outputs."""
    model = _architecture(kind)
    assert model.kind == kind and isinstance(model, ARCHITECTURES[kind])
    batch, steps, out_steps = 3, 6, 4
    lengths = jnp.asarray([6, 2, 4])
    targets = jnp.asarray(rng.integers(4, 6, size=(batch, out_steps)), jnp.int32)
    targets = targets.at[1, 2:].set(0)  # padding after a short target
    inputs = _xs(rng, batch, steps, 4) if model.reads_sequence else _xs(rng, batch, 4)
    params = model.init(jax.random.key(1), 4)
    forward = model.forward(params, inputs, lengths, targets)
    if kind in ("many_to_one", "many_to_many"):
        applied = model.apply(params, inputs, seq_lengths=lengths)
    elif kind == "encoder_decoder":
        applied = model.apply(params, inputs, targets, source_lengths=lengths)
    else:
        applied = model.apply(params, inputs, targets)
    np.testing.assert_array_equal(forward, applied)
    if model.reads_sequence:
        encoded = model.encode(params, inputs, lengths)
        assert encoded.shape == (batch, steps, 10)  # bidirectional: 2H
        recomposed = model.from_encoding(params, encoded, lengths, targets)
        np.testing.assert_allclose(recomposed, forward, rtol=1e-6, atol=1e-7)
    else:
        with pytest.raises(ValueError, match="no encoder over an input sequence"):
            model.encode(params, inputs, lengths)
    mask = np.asarray(model.output_mask(lengths, targets))
    if kind == "many_to_one":
        np.testing.assert_array_equal(mask, np.ones(batch))
    elif kind == "many_to_many":
        np.testing.assert_array_equal(
            mask, np.arange(out_steps)[None] < np.asarray(lengths)[:, None]
        )
    else:
        np.testing.assert_array_equal(mask, np.asarray(targets) != 0)
    assert model.generative == (kind in ("encoder_decoder", "one_to_many"))


@pytest.mark.parametrize("per_node", [False, True])
def test_the_tree_architecture_speaks_the_same_interface(per_node, rng):
    """The fifth kind reads trees: its ``lengths`` is the TreeBatch; ``forward`` is
    ``apply`` and ``from_encoding(encode(.))``; the head sits on the roots, or on every
    node (zeros on padding) with ``output_mask`` counting labelled nodes."""
    from seqlab.layers import TreeEncoder
    from seqlab.trees import ChildSumTreeLSTM, TreeBatch, from_nested

    tree = TreeBatch.from_trees([from_nested(((1, 2), 3)), from_nested((4, 5))])
    model = TreeEncoder(ChildSumTreeLSTM(5), 3, per_node=per_node)
    assert model.kind == "tree" and ARCHITECTURES["tree"] is TreeEncoder
    assert model.reads_tree and not model.reads_sequence and not model.generative
    params = model.init(jax.random.key(1), 4)
    inputs = jnp.asarray(rng.normal(size=(2, tree.max_nodes, 4)), jnp.float32)
    forward = model.forward(params, inputs, tree)
    np.testing.assert_array_equal(forward, model.apply(params, inputs, tree))
    encoded = model.encode(params, inputs, tree)
    assert encoded.shape == (2, tree.max_nodes, 5)
    np.testing.assert_allclose(model.from_encoding(params, encoded, tree), forward, rtol=1e-6)
    if per_node:
        assert forward.shape == (2, tree.max_nodes, 3)
        np.testing.assert_array_equal(forward[1, 3:], 0)  # tree 1 has 3 nodes
        labels = jnp.asarray([[0, 1, -1, 2, 1], [2, -1, 0, -1, -1]])
        np.testing.assert_array_equal(model.output_mask(tree, labels), np.asarray(labels) >= 0)
    else:
        root_h = encoded[jnp.arange(2), jnp.asarray(tree.root)]
        np.testing.assert_allclose(
            forward, root_h @ params["head"]["w"] + params["head"]["b"][None], rtol=1e-6
        )
        np.testing.assert_array_equal(model.output_mask(tree, jnp.zeros(2)), np.ones(2))
    with pytest.raises(ValueError, match="a tree model's lengths is its TreeBatch"):
        model.encode(params, inputs, jnp.asarray([5, 3]))
    with pytest.raises(ValueError, match="built from a tree cell"):
        TreeEncoder.build(None, 3, bidirectional=False, embed_size=2)


def test_one_to_many_cannot_be_bidirectional():
    with pytest.raises(ValueError, match="cannot be bidirectional"):
        ARCHITECTURES["one_to_many"].build(
            lambda b: RNNLayer(seqlab.cells.GRU(4), bidirectional=b),
            5,
            bidirectional=True,
            embed_size=3,
        )


def test_vocabulary_round_trip_and_padding():
    corpus = [["the", "cat", "sat"], ["the", "dog"], ["a", "cat"]]
    vocab = Vocabulary.build(corpus)
    assert vocab.tokens[:6] == ["<pad>", "<unk>", "<bos>", "<eos>", "cat", "the"]
    ids, lengths = vocab.encode_batch([["the", "cat"], ["zebra"]], add_eos=True)
    np.testing.assert_array_equal(lengths, [3, 2])
    np.testing.assert_array_equal(ids[1], [1, 3, 0])  # unknown -> <unk>, then <eos>, <pad>
    assert vocab.decode(ids[0]) == ["the", "cat"]
    assert Vocabulary.from_dict(vocab.to_dict()).tokens == vocab.tokens
    assert len(Vocabulary.build(corpus, min_freq=2)) == 6
    assert len(Vocabulary.build(corpus, max_size=5)) == 5
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])


def test_label_encoder_and_one_hot():
    encoder = LabelEncoder.fit(["pos", "neg", "neg", "neutral"])
    np.testing.assert_array_equal(encoder.encode(["neutral", "neg"]), [1, 0])
    assert encoder.decode([2, 0]) == ["pos", "neg"]
    with pytest.raises(ValueError, match="unknown labels"):
        encoder.encode(["angry"])
    vectors = seqlab.layers.one_hot(jnp.array([[0, 2]]), 3)
    np.testing.assert_array_equal(vectors, [[[1, 0, 0], [0, 0, 1]]])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\), got values in \[0, 3\]"):
        seqlab.layers.one_hot(jnp.array([0, 3]), 3)
    with pytest.raises(ValueError, match="integer dtype"):
        seqlab.layers.one_hot(jnp.array([0.0]), 3)


def test_embedding_padding_row_reads_zero_and_gets_no_gradient():
    embedding = Embedding(6, 4)
    params = embedding.init(jax.random.key(0))
    ids = jnp.array([[2, 0, 5]])
    vectors = embedding.apply(params, ids)
    np.testing.assert_array_equal(vectors[0, 1], np.zeros(4))
    np.testing.assert_array_equal(vectors[0, 2], params["table"][5])
    grad = jax.grad(lambda p: jnp.sum(embedding.apply(p, ids) ** 2))(params)
    np.testing.assert_array_equal(grad["table"][0], np.zeros(4))
    assert np.all(np.asarray(grad["table"][5]) != 0)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        embedding.apply(params, jnp.array([6]))


def test_nnx_module_matches_pure_layer_and_trains(rng):
    layer = RNNLayer(seqlab.cells.LSTM(6), num_layers=2, bidirectional=True, dropout=0.3)
    module = NNXModule(layer, 3, rngs=nnx.Rngs(params=0, dropout=1))
    params = module.pure_params
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        layer.init(jax.random.key(0), 3)
    )
    xs, lengths = _xs(rng, 2, 5, 3), jnp.array([5, 2])
    np.testing.assert_array_equal(
        module(xs, seq_lengths=lengths)[0], layer.apply(params, xs, seq_lengths=lengths)[0]
    )
    assert not np.allclose(module(xs, train=True)[0], module(xs)[0])

    def loss(module):
        return jnp.sum(module(xs, seq_lengths=lengths)[0] ** 2)

    grads = nnx.grad(loss)(module)
    pure = jax.grad(lambda p: jnp.sum(layer.apply(p, xs, seq_lengths=lengths)[0] ** 2))(params)
    np.testing.assert_allclose(
        grads["params"][1]["backward"]["w_hh"][...], pure[1]["backward"]["w_hh"], rtol=1e-6
    )
    optimizer = nnx.Optimizer(module, optax.sgd(0.1), wrt=nnx.Param)
    before = float(loss(module))
    optimizer.update(module, grads)
    assert float(loss(module)) < before
