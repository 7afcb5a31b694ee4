"""The model a task trains, built from a config and the task's ``info`` alone.

``TaskModel`` wraps one of the four architecture types of ``seqlab.layers`` with the
input encoding (float features, one-hot or a learned embedding of token ids) and the
objective (mean squared error or cross-entropy). Metrics are per example, as (sum, count)
pairs, so evaluation in batches and averaging over padded steps stay exact.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqlab import cells
from seqlab.layers import (
    Embedding,
    EncoderDecoder,
    ManyToMany,
    ManyToOne,
    OneToMany,
    RNNLayer,
    TokenDecoder,
    one_hot,
    valid_mask,
)
from seqlab.layers._encoding import PAD_ID


@dataclasses.dataclass(frozen=True, eq=False)
class TaskModel:
    """A seqlab model plus its input encoding and objective.

    Attributes:
      kind: the architecture type (see ``seqlab.experiments.tasks``).
      objective: "mse" or "xent".
      net: ManyToOne, ManyToMany, EncoderDecoder or OneToMany.
      input_vocab: > 0 when the inputs are token ids.
      input_encoding: "one_hot" or "embedding" for token inputs.
      embed_size: embedding width for token inputs.
    """

    kind: str
    objective: str
    net: object
    input_size: int
    input_vocab: int = 0
    input_encoding: str = "float"
    embed_size: int = 0

    @property
    def embedding(self) -> Embedding:
        return Embedding(self.input_vocab, self.embed_size)

    def _net_input_size(self) -> int:
        if not self.input_vocab:
            return self.input_size
        return self.input_vocab if self.input_encoding == "one_hot" else self.embed_size

    def init(self, key) -> dict:
        k_net, k_embed = jax.random.split(key)
        params = {"net": self.net.init(k_net, self._net_input_size())}
        if self.input_vocab and self.input_encoding == "embedding":
            params["embedding"] = self.embedding.init(k_embed)
        return params

    def encode_inputs(self, params, inputs):
        if not self.input_vocab:
            return inputs
        if self.input_encoding == "one_hot":
            return one_hot(inputs, self.input_vocab)
        return self.embedding.apply(params["embedding"], inputs)

    def predict(self, params, batch, *, key=None, train=False):
        """Outputs for a batch: values (mse) or logits (xent); teacher-forced logits for
        the decoders."""
        xs = self.encode_inputs(params, batch["inputs"])
        net, lengths = params["net"], batch["lengths"]
        if self.kind in ("many_to_one", "many_to_many"):
            return self.net.apply(net, xs, seq_lengths=lengths, key=key, train=train)
        if self.kind == "encoder_decoder":
            return self.net.apply(
                net, xs, batch["targets"], source_lengths=lengths, key=key, train=train
            )
        return self.net.apply(net, xs, batch["targets"], key=key, train=train)

    def per_example(self, outputs, batch) -> dict:
        """{metric: (sum (B,), count (B,))}: the loss first, then accuracy for classes."""
        targets = batch["targets"]
        if self.objective == "mse":
            squared = (outputs - targets) ** 2
            count = jnp.full(squared.shape[:1], squared.shape[1], squared.dtype)
            total = jnp.sum(squared, axis=1)
            return {"loss": (total, count), "mse": (total, count)}
        log_probs = jax.nn.log_softmax(outputs, axis=-1)
        labels = targets.astype(jnp.int32)
        nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
        correct = (jnp.argmax(outputs, axis=-1) == labels).astype(outputs.dtype)
        if self.kind == "many_to_one":
            ones = jnp.ones_like(nll)
            return {"loss": (nll, ones), "accuracy": (correct, ones)}
        if self.kind == "many_to_many":
            mask = valid_mask(batch["lengths"], *labels.shape)
        else:  # decoders: every target token up to and including <eos>
            mask = labels != PAD_ID
        mask = mask.astype(outputs.dtype)
        count = jnp.sum(mask, axis=1)
        return {
            "loss": (jnp.sum(nll * mask, axis=1), count),
            "accuracy": (jnp.sum(correct * mask, axis=1), count),
        }

    def combine_seeds(self, outputs):
        """The ensemble of outputs stacked over seeds (S, ...): the mean of the values, or
        the log of the mean of the probabilities."""
        if self.objective == "mse":
            return jnp.mean(outputs, axis=0)
        log_probs = jax.nn.log_softmax(outputs, axis=-1)
        return jax.scipy.special.logsumexp(log_probs, axis=0) - jnp.log(outputs.shape[0])

    def generate(self, params, batch, max_length, *, key=None, temperature=0.0):
        """Decoded token ids (B, max_length) and lengths for the decoder kinds."""
        xs = self.encode_inputs(params, batch["inputs"])
        if self.kind == "encoder_decoder":
            return self.net.generate(
                params["net"],
                xs,
                max_length,
                source_lengths=batch["lengths"],
                key=key,
                temperature=temperature,
            )
        if self.kind == "one_to_many":
            return self.net.generate(
                params["net"], xs, max_length, key=key, temperature=temperature
            )
        raise ValueError(f"generate needs a decoder model, this one is {self.kind}")

    @property
    def encoder(self) -> RNNLayer:
        """The RNNLayer that reads the inputs (the decoder's for one-to-many)."""
        if self.kind == "one_to_many":
            return self.net.decoder.rnn
        return self.net.encoder


def build_model(config, info: dict) -> TaskModel:
    """The model of ``config.model`` for a task described by ``info``."""
    model = config.model
    cell = cells.make(model.cell, hidden_size=model.hidden_size)

    def rnn(bidirectional):
        return RNNLayer(
            cell,
            num_layers=model.num_layers,
            bidirectional=bidirectional,
            dropout=model.dropout,
            implementation=model.implementation,
        )

    kind, output_size = info["kind"], info["output_size"]
    if kind == "many_to_one":
        net = ManyToOne(rnn(model.bidirectional), output_size)
    elif kind == "many_to_many":
        net = ManyToMany(rnn(model.bidirectional), output_size)
    elif kind == "encoder_decoder":
        decoder = TokenDecoder(rnn(False), output_size, model.embed_size)
        net = EncoderDecoder(rnn(model.bidirectional), decoder)
    else:
        if model.bidirectional:
            raise ValueError(
                "model.bidirectional must be false for a one-to-many task: its RNN generates "
                "left to right"
            )
        net = OneToMany(TokenDecoder(rnn(False), output_size, model.embed_size))
    return TaskModel(
        kind=kind,
        objective=info["objective"],
        net=net,
        input_size=info.get("input_size", 0),
        input_vocab=info.get("input_vocab", 0),
        input_encoding=info.get("input_encoding", "float") if info.get("input_vocab") else "float",
        embed_size=model.embed_size,
    )
