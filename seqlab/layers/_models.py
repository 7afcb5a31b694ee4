"""The four architecture types of the textbook, over any ``RNNLayer``.

    many-to-one     ``ManyToOne``      sequence -> one vector (classifier / regressor)
    many-to-many    ``ManyToMany``     sequence -> one output per step (tagger), synced
    encoder-decoder ``EncoderDecoder`` sequence -> token sequence of another length
    one-to-many     ``OneToMany``      one vector -> token sequence

Each is a frozen description with ``init(key, input_size)`` and ``apply(params, ...)``;
the two generative ones add ``generate``. All are batch-major: (B, T, ...).

Besides their own ``apply``, all four speak one interface (``Architecture``), which the
experiments layer and the gradient analysis use without asking which kind they hold:
``forward`` (what ``apply`` computes, one signature for all), ``encode`` (the per-step
outputs of the RNN that reads the input sequence) and ``from_encoding`` (those outputs
through the head or decoder; ``forward = from_encoding ∘ encode``), ``output_mask``
(which outputs a loss counts), ``build`` (the architecture from an RNN factory), and the
class attributes ``kind``, ``generative`` and ``reads_sequence``. ``ARCHITECTURES`` maps
each ``kind`` to its class: a fifth architecture is one more class in this file.

The architectures that read a sequence take an optional convolutional front-end
(``frontend=``, a ``seqlab.layers.ConvStack`` or ``Conv1D``) between the inputs and the
encoder: ``encode`` runs it first, and the head or decoder reads the encoder's outputs at
the shortened lengths (``encoded_lengths``). A synced many-to-many model needs a front-end
that keeps every length (stride 1, no pooling, padding "same" or "causal").
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from seqlab._checks import check_integer, check_rank, require
from seqlab.cells import spatial_shape
from seqlab.layers._conv import Conv1D, ConvStack
from seqlab.layers._encoding import BOS_ID, EOS_ID, PAD_ID, Embedding
from seqlab.layers._heads import dense_apply, dense_init, last_valid_outputs, valid_mask
from seqlab.layers._rnn_layer import RNNLayer
from seqlab.trees import TreeBatch, is_tree_cell, tree_scan
from seqlab.typing import Array, Params, PRNGKey


def _check_frontend(frontend, *, keep_lengths: bool = False) -> None:
    if frontend is None:
        return
    require(
        isinstance(frontend, ConvStack | Conv1D),
        f"frontend must be a seqlab.layers.ConvStack or Conv1D (or None), got "
        f"{type(frontend).__name__}",
    )
    if keep_lengths:
        layers = frontend.layers if isinstance(frontend, ConvStack) else (frontend,)
        pooled = isinstance(frontend, ConvStack) and frontend.pooling
        changes = [f"stride {layer.stride}" for layer in layers if layer.stride != 1]
        changes += ["padding 'valid'" for layer in layers if layer.padding == "valid"]
        changes += [f"pool_size {frontend.pool_size}"] if pooled else []
        require(
            not changes,
            "a synced many-to-many model emits one output per input step: its front-end must "
            "keep every length (stride 1, no pooling, padding 'same' or 'causal'); got "
            + ", ".join(changes),
        )


def _check_spatial(encoder: RNNLayer, frontend, *, summarized: bool) -> None:
    """An encoder whose cell carries a spatial map (``seqlab.cells.ConvLSTM``) emits
    (B, T, *spatial, H): a per-step head reads it position by position, but a summary
    (many-to-one) or a decoder's context needs (B, T, F), and a Conv1D front-end
    convolves feature vectors over time, not frames."""
    spatial = spatial_shape(encoder.cells[0])
    if not spatial:
        return
    require(
        not summarized,
        f"this architecture summarizes each sequence into one vector, and the encoder's cell "
        f"emits maps of spatial shape {spatial}: use a many-to-many model, or a cell over "
        "feature vectors (flatten the frames)",
    )
    require(
        frontend is None,
        "a Conv1D front-end convolves feature vectors over time; this encoder's cell reads "
        f"frames of spatial shape {spatial}: drop the front-end",
    )


def _run_frontend(frontend, params, inputs, lengths, key, train):
    """``(inputs, lengths)`` through the front-end (as they are without one) and the key
    left for the encoder."""
    if frontend is None:
        return inputs, lengths, key
    k_front, key = jax.random.split(key) if key is not None else (None, None)
    outputs, new_lengths = frontend.apply(
        params["frontend"], inputs, seq_lengths=lengths, key=k_front, train=train
    )
    return outputs, new_lengths, key


def _init_frontend(frontend, key, input_size: int, params: dict) -> int:
    """Adds the front-end's parameters to ``params``; the encoder's input size. (Its key
    is folded from the model's, so a model without one initializes as it always has.)"""
    if frontend is None:
        return input_size
    params["frontend"] = frontend.init(jax.random.fold_in(key, 1), input_size)
    return frontend.output_size(input_size)


def _refuse_frontend(kind: str, frontend) -> None:
    require(
        frontend is None,
        f"a {kind} model reads no input sequence, so it takes no convolutional front-end",
    )


def _check_batch_major(layer: RNNLayer, role: str) -> None:
    require(isinstance(layer, RNNLayer), f"{role} must be an RNNLayer, got {type(layer).__name__}")
    require(not layer.time_major, f"{role} must be batch-major (time_major=False)")


class Architecture(abc.ABC):
    """The interface the four architectures share (see the module docstring).

    Attributes:
      kind: the name tasks and configs use ("many_to_one", ...).
      generative: whether it decodes token sequences freely (``generate``).
      reads_sequence: whether an RNN encoder reads an input sequence (``encode``); a
        one-to-many model reads one vector.
      reads_tree: whether a tree cell reads a batch of trees (``TreeEncoder``): its
        ``lengths`` argument is then the ``seqlab.trees.TreeBatch``.
    """

    kind: ClassVar[str]
    generative: ClassVar[bool] = False
    reads_sequence: ClassVar[bool] = True
    reads_tree: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def build(
        cls,
        make_rnn: Callable[[bool], RNNLayer],
        output_size: int,
        *,
        bidirectional,
        embed_size,
        frontend=None,
    ):
        """The architecture over RNNLayers from ``make_rnn(bidirectional)``, with
        ``output_size`` outputs (classes, values or a vocabulary), ``embed_size``-wide
        token embeddings for decoders and an optional convolutional ``frontend``."""

    @abc.abstractmethod
    def forward(self, params, inputs, lengths=None, targets=None, *, key=None, train=False):
        """What ``apply`` computes, in one signature for every architecture: ``lengths``
        of the input sequences, ``targets`` for teacher forcing (ignored by the
        architectures that predict from the inputs alone)."""

    def encode(self, params, inputs, lengths=None, *, key=None, train=False) -> Array:
        """The per-step outputs (B, T, H or 2H) of the RNN encoder over ``inputs`` (T' <=
        T steps after a front-end: see ``encoded_lengths``)."""
        raise ValueError(f"a {self.kind} model has no encoder over an input sequence")

    def encoder_inputs(self, params, inputs, lengths=None, *, key=None, train=False):
        """``(inputs, lengths)`` as the RNN encoder reads them: through the front-end
        when there is one, else as given."""
        return _run_frontend(getattr(self, "frontend", None), params, inputs, lengths, key, train)[
            :2
        ]

    def encoded_lengths(self, lengths):
        """The lengths of ``encode``'s outputs for input ``lengths``: the same, or the
        front-end's output lengths."""
        frontend = getattr(self, "frontend", None)
        if frontend is None or lengths is None:
            return lengths
        return frontend.output_lengths(lengths)

    @abc.abstractmethod
    def from_encoding(self, params, encoded, lengths=None, targets=None, *, key=None, train=False):
        """``encode``'s outputs through the head or decoder: ``forward``'s result.
        ``lengths`` are the lengths of the *inputs* (what ``encode`` was given): after a
        front-end, the shortened ones are derived here (``encoded_lengths``)."""

    @abc.abstractmethod
    def output_mask(self, lengths, targets) -> Array:
        """Which outputs a loss counts, as floats: (B,) for one output per sequence,
        (B, T) for one per step."""


@dataclasses.dataclass(frozen=True)
class _EncoderWithHead(Architecture):
    """An RNNLayer encoder followed by a dense head (shared by ManyToOne and ManyToMany)."""

    encoder: RNNLayer
    output_size: int
    frontend: ConvStack | Conv1D | None = None

    def __post_init__(self):
        _check_batch_major(self.encoder, "encoder")
        _check_frontend(self.frontend, keep_lengths=self.kind == "many_to_many")
        _check_spatial(self.encoder, self.frontend, summarized=self.kind != "many_to_many")

    @classmethod
    def build(cls, make_rnn, output_size, *, bidirectional, embed_size, frontend=None):
        return cls(make_rnn(bidirectional), output_size, frontend)

    def init(self, key: PRNGKey, input_size: int) -> Params:
        k_encoder, k_head = jax.random.split(key)
        params = {}
        size = _init_frontend(self.frontend, key, input_size, params)
        params["encoder"] = self.encoder.init(k_encoder, size)
        params["head"] = dense_init(k_head, self.encoder.output_size(size), self.output_size)
        return params

    def encode(self, params, inputs, lengths=None, *, key=None, train=False) -> Array:
        inputs, lengths, key = _run_frontend(self.frontend, params, inputs, lengths, key, train)
        outputs, _ = self.encoder.apply(
            params["encoder"], inputs, seq_lengths=lengths, key=key, train=train
        )
        return outputs

    def apply(self, params, xs, *, seq_lengths=None, key=None, train=False) -> Array:
        encoded = self.encode(params, xs, seq_lengths, key=key, train=train)
        return self.from_encoding(params, encoded, seq_lengths)

    def forward(self, params, inputs, lengths=None, targets=None, *, key=None, train=False):
        return self.apply(params, inputs, seq_lengths=lengths, key=key, train=train)


@dataclasses.dataclass(frozen=True)
class ManyToOne(_EncoderWithHead):
    """Sequence classifier or regressor: a dense head on each sequence's last valid output.

    ``apply`` returns (B, output_size): logits for classification, values for regression.
    For a bidirectional encoder the summary is [forward at the last valid step, backward
    at step 0] (see ``last_valid_outputs``).
    """

    kind: ClassVar[str] = "many_to_one"

    def from_encoding(self, params, encoded, lengths=None, targets=None, *, key=None, train=False):
        summary = last_valid_outputs(
            encoded, self.encoded_lengths(lengths), bidirectional=self.encoder.bidirectional
        )
        return dense_apply(params["head"], summary)

    def output_mask(self, lengths, targets) -> Array:
        return jnp.ones(targets.shape[:1], jnp.float32)


@dataclasses.dataclass(frozen=True)
class ManyToMany(_EncoderWithHead):
    """Synced many-to-many (a tagger): one output per input step, (B, T, output_size),
    exactly zero at padded steps. Pair with ``masked_reduce`` or
    ``sequence_cross_entropy`` so the loss counts valid steps only."""

    kind: ClassVar[str] = "many_to_many"

    def from_encoding(self, params, encoded, lengths=None, targets=None, *, key=None, train=False):
        logits = dense_apply(params["head"], encoded)
        if lengths is None:
            return logits
        valid = valid_mask(lengths, *encoded.shape[:2])  # (B, T), for outputs (B, T, ...)
        valid = valid.reshape(valid.shape + (1,) * (logits.ndim - 2))
        return jnp.where(valid, logits, jnp.zeros_like(logits))

    def output_mask(self, lengths, targets) -> Array:
        if lengths is None:
            return jnp.ones(targets.shape[:2], jnp.float32)
        return valid_mask(lengths, *targets.shape[:2]).astype(jnp.float32)


def _is_dense(node) -> bool:
    return isinstance(node, dict) and set(node) == {"w", "b"}


@dataclasses.dataclass(frozen=True)
class TokenDecoder:
    """An autoregressive token decoder conditioned on a context vector (B, C).

    The context sets the initial state (one ``tanh(dense(context))`` per carry leaf, so any
    cell and any number of layers work) and is also concatenated to every step's input,
    as in Cho et al. 2014. Step t reads the embedding of token t-1 (``<bos>`` at t = 0).

    Args:
      rnn: a unidirectional, batch-major RNNLayer.
      vocab_size: V, the output vocabulary (ids as in ``seqlab.layers.Vocabulary``).
      embed_size: size of the token embeddings fed back into the decoder.
    """

    rnn: RNNLayer
    vocab_size: int
    embed_size: int
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    pad_id: int = PAD_ID

    def __post_init__(self):
        _check_batch_major(self.rnn, "the decoder rnn")
        require(
            not self.rnn.bidirectional, "a decoder generates left to right: bidirectional=False"
        )

    @property
    def embedding(self) -> Embedding:
        return Embedding(self.vocab_size, self.embed_size, padding_id=None)

    def init(self, key: PRNGKey, context_size: int) -> Params:
        k_rnn, k_bridge, k_embed, k_out = jax.random.split(key, 4)
        input_size = self.embed_size + context_size
        rnn_params = self.rnn.init(k_rnn, input_size)
        template = jax.eval_shape(lambda p: self.rnn.initial_carry(p, ()), rnn_params)
        leaves, treedef = jax.tree_util.tree_flatten(template)
        bridge = jax.tree_util.tree_unflatten(
            treedef,
            [
                dense_init(k, context_size, leaf.shape[-1])
                for leaf, k in zip(leaves, jax.random.split(k_bridge, len(leaves)), strict=True)
            ],
        )
        return {
            "rnn": rnn_params,
            "bridge": bridge,
            "embedding": self.embedding.init(k_embed),
            "readout": dense_init(k_out, self.rnn.output_size(input_size), self.vocab_size),
        }

    def initial_state(self, params: Params, context: Array):
        return jax.tree_util.tree_map(
            lambda dense: jnp.tanh(dense_apply(dense, context)), params["bridge"], is_leaf=_is_dense
        )

    def teacher_forced(self, params, context, targets, *, key=None, train=False) -> Array:
        """Logits (B, T, V) for predicting ``targets`` (B, T) given the true previous tokens."""
        check_integer("targets", jnp.asarray(targets))
        check_rank("targets", targets, 2, "(B, T)")
        batch_size, num_steps = targets.shape
        previous = jnp.concatenate(
            [jnp.full((batch_size, 1), self.bos_id, targets.dtype), targets[:, :-1]], axis=1
        )
        inputs = jnp.concatenate(
            [
                self.embedding.apply(params["embedding"], previous),
                jnp.broadcast_to(context[:, None, :], (batch_size, num_steps, context.shape[-1])),
            ],
            axis=-1,
        )
        outputs, _ = self.rnn.apply(
            params["rnn"], inputs, carry=self.initial_state(params, context), key=key, train=train
        )
        return dense_apply(params["readout"], outputs)

    def generate(self, params, context, max_length: int, *, key=None, temperature: float = 0.0):
        """Decode up to ``max_length`` tokens: greedy when ``temperature == 0``, else sampled.

        Returns ``(tokens, lengths)``: tokens (B, max_length), ``<pad>`` after each
        sequence's ``<eos>``; lengths (B,) counts tokens up to and including ``<eos>``.
        """
        require(
            isinstance(max_length, int) and max_length > 0,
            f"max_length must be a positive int, got {max_length!r}",
        )
        require(temperature >= 0.0, f"temperature must be >= 0, got {temperature}")
        require(temperature == 0.0 or key is not None, "sampling (temperature > 0) needs a key")
        batch_size = context.shape[0]
        step_keys = jax.random.split(key if key is not None else jax.random.key(0), max_length)

        def decode_step(state, step_key):
            carry, previous, done = state
            x = jnp.concatenate(
                [self.embedding.apply(params["embedding"], previous), context], axis=-1
            )
            carry, y = self.rnn.step(params["rnn"], carry, x)
            logits = dense_apply(params["readout"], y)
            if temperature == 0.0:
                token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            else:
                token = jax.random.categorical(step_key, logits / temperature).astype(jnp.int32)
            token = jnp.where(done, jnp.full_like(token, self.pad_id), token)
            return (carry, token, done | (token == self.eos_id)), (token, ~done)

        start = (
            self.initial_state(params, context),
            jnp.full((batch_size,), self.bos_id, jnp.int32),
            jnp.zeros((batch_size,), bool),
        )
        _, (tokens, emitted) = jax.lax.scan(decode_step, start, step_keys)
        return tokens.T, jnp.sum(emitted, axis=0).astype(jnp.int32)


def _decoder_output_mask(decoder: TokenDecoder, targets) -> Array:
    """Every target token up to and including ``<eos>`` (not the padding after it)."""
    return (targets != decoder.pad_id).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class EncoderDecoder(Architecture):
    """Sequence to sequence of a different length (Sutskever et al. 2014; Cho et al. 2014).

    The encoder's summary of each source sequence (``last_valid_outputs``) is the
    decoder's context. Training uses teacher forcing (``apply``); inference decodes
    greedily (``generate``).
    """

    encoder: RNNLayer
    decoder: TokenDecoder
    frontend: ConvStack | Conv1D | None = None
    kind: ClassVar[str] = "encoder_decoder"
    generative: ClassVar[bool] = True

    def __post_init__(self):
        _check_batch_major(self.encoder, "encoder")
        _check_frontend(self.frontend)
        _check_spatial(self.encoder, self.frontend, summarized=True)

    @classmethod
    def build(cls, make_rnn, output_size, *, bidirectional, embed_size, frontend=None):
        decoder = TokenDecoder(make_rnn(False), output_size, embed_size)
        return cls(make_rnn(bidirectional), decoder, frontend)

    def init(self, key: PRNGKey, input_size: int) -> Params:
        k_encoder, k_decoder = jax.random.split(key)
        params = {}
        size = _init_frontend(self.frontend, key, input_size, params)
        params["encoder"] = self.encoder.init(k_encoder, size)
        params["decoder"] = self.decoder.init(k_decoder, self.encoder.output_size(size))
        return params

    def encode(self, params, inputs, lengths=None, *, key=None, train=False) -> Array:
        inputs, lengths, key = _run_frontend(self.frontend, params, inputs, lengths, key, train)
        outputs, _ = self.encoder.apply(
            params["encoder"], inputs, seq_lengths=lengths, key=key, train=train
        )
        return outputs

    def context(self, encoded, source_lengths=None) -> Array:
        """The decoder's context: each source's summary (``last_valid_outputs``) at the
        encoder's lengths (the front-end's output lengths when there is one)."""
        return last_valid_outputs(
            encoded, self.encoded_lengths(source_lengths), bidirectional=self.encoder.bidirectional
        )

    def from_encoding(self, params, encoded, lengths=None, targets=None, *, key=None, train=False):
        return self.decoder.teacher_forced(
            params["decoder"], self.context(encoded, lengths), targets, key=key, train=train
        )

    def apply(
        self, params, sources, targets, *, source_lengths=None, key=None, train=False
    ) -> Array:
        """Teacher-forced logits (B, T_out, V) for int ``targets`` (B, T_out)."""
        keys = jax.random.split(key) if key is not None else (None, None)
        encoded = self.encode(params, sources, source_lengths, key=keys[0], train=train)
        return self.from_encoding(
            params, encoded, source_lengths, targets, key=keys[1], train=train
        )

    def forward(self, params, inputs, lengths=None, targets=None, *, key=None, train=False):
        return self.apply(params, inputs, targets, source_lengths=lengths, key=key, train=train)

    def output_mask(self, lengths, targets) -> Array:
        return _decoder_output_mask(self.decoder, targets)

    def generate(
        self, params, sources, max_length, *, source_lengths=None, key=None, temperature=0.0
    ):
        """Greedy (or sampled) decoding; returns (tokens (B, max_length), lengths (B,))."""
        context = self.context(self.encode(params, sources, source_lengths), source_lengths)
        return self.decoder.generate(
            params["decoder"], context, max_length, key=key, temperature=temperature
        )


@dataclasses.dataclass(frozen=True)
class OneToMany(Architecture):
    """One input vector (B, D) to a token sequence (e.g. image or class to caption/text).

    There is no encoder: ``encode`` raises, and ``from_encoding`` takes the input vector
    itself as the decoder's context."""

    decoder: TokenDecoder
    kind: ClassVar[str] = "one_to_many"
    generative: ClassVar[bool] = True
    reads_sequence: ClassVar[bool] = False

    @classmethod
    def build(cls, make_rnn, output_size, *, bidirectional, embed_size, frontend=None):
        _refuse_frontend(cls.kind.replace("_", "-"), frontend)
        require(
            not bidirectional,
            "a one-to-many model generates left to right: its RNN cannot be bidirectional",
        )
        return cls(TokenDecoder(make_rnn(False), output_size, embed_size))

    def init(self, key: PRNGKey, input_size: int) -> Params:
        return self.decoder.init(key, input_size)

    def apply(self, params, inputs, targets, *, key=None, train=False) -> Array:
        """Teacher-forced logits (B, T, V) for int ``targets`` (B, T)."""
        return self.from_encoding(params, inputs, None, targets, key=key, train=train)

    def from_encoding(self, params, encoded, lengths=None, targets=None, *, key=None, train=False):
        check_rank("inputs", encoded, 2, "(B, D)")
        return self.decoder.teacher_forced(params, encoded, targets, key=key, train=train)

    def forward(self, params, inputs, lengths=None, targets=None, *, key=None, train=False):
        return self.apply(params, inputs, targets, key=key, train=train)

    def output_mask(self, lengths, targets) -> Array:
        return _decoder_output_mask(self.decoder, targets)

    def generate(self, params, inputs, max_length, *, key=None, temperature=0.0):
        check_rank("inputs", inputs, 2, "(B, D)")
        return self.decoder.generate(params, inputs, max_length, key=key, temperature=temperature)


# Every architecture by its ``kind``: tasks name one, ``seqlab.experiments`` builds it.
@dataclasses.dataclass(frozen=True)
class TreeEncoder(Architecture):
    """A recursive network: a tree cell over each tree (``seqlab.trees.tree_scan``) and a
    dense head on the root's output, or on every node's (``per_node``).

    ``inputs`` are the nodes' input features (B, N, D); ``lengths`` is the
    ``seqlab.trees.TreeBatch`` that gives the trees' structure (the one argument of the
    shared ``forward`` signature that says where a sequence ends says it for a tree).
    ``apply`` returns (B, output_size) at the roots, or (B, N, output_size) at every node
    (exactly zero on padding nodes).
    """

    cell: object
    output_size: int
    per_node: bool = False
    remat: bool = False

    kind: ClassVar[str] = "tree"
    reads_sequence: ClassVar[bool] = False
    reads_tree: ClassVar[bool] = True

    def __post_init__(self):
        require(is_tree_cell(self.cell), f"a tree encoder needs a tree cell, got {self.cell!r}")

    @classmethod
    def build(cls, make_rnn, output_size, *, bidirectional, embed_size, frontend=None):
        raise ValueError(
            "a tree model is built from a tree cell (seqlab.trees), not from an RNN layer: "
            "TreeEncoder(cell, output_size)"
        )

    def init(self, key: PRNGKey, input_size: int) -> Params:
        k_cell, k_head = jax.random.split(key)
        params = self.cell.init(k_cell, input_size)
        hidden = jax.eval_shape(lambda p: self.cell.output(self.cell.leaf_state(p, ())), params)
        return {"encoder": params, "head": dense_init(k_head, hidden.shape[-1], self.output_size)}

    def encode(self, params, inputs, lengths=None, *, key=None, train=False) -> Array:
        """The cell's output h at every node, (B, N, H)."""
        require(isinstance(lengths, TreeBatch), "a tree model's lengths is its TreeBatch")
        nodes, _ = tree_scan(self.cell, params["encoder"], lengths, inputs=inputs, remat=self.remat)
        return self.cell.output(nodes)

    def from_encoding(self, params, encoded, lengths=None, targets=None, *, key=None, train=False):
        if self.per_node:
            logits = dense_apply(params["head"], encoded)
            real = jnp.asarray(lengths.level) >= 0
            return jnp.where(real[..., None], logits, jnp.zeros_like(logits))
        roots = jnp.take_along_axis(encoded, jnp.asarray(lengths.root)[:, None, None], axis=1)
        return dense_apply(params["head"], roots[:, 0])

    def apply(self, params, xs, tree: TreeBatch, *, key=None, train=False) -> Array:
        return self.from_encoding(params, self.encode(params, xs, tree), tree)

    def forward(self, params, inputs, lengths=None, targets=None, *, key=None, train=False):
        return self.apply(params, inputs, lengths, key=key, train=train)

    def output_mask(self, lengths, targets) -> Array:
        if self.per_node:
            return (jnp.asarray(targets) >= 0).astype(jnp.float32)
        return jnp.ones(targets.shape[:1], jnp.float32)


ARCHITECTURES: dict[str, type[Architecture]] = {
    cls.kind: cls for cls in (ManyToOne, ManyToMany, EncoderDecoder, OneToMany, TreeEncoder)
}
