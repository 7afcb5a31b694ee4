"""The model a task trains, built from a config and the task's ``info`` alone.

``TaskModel`` wraps one of the four architecture types of ``seqlab.layers`` with the
input encoding (float features, one-hot or a learned embedding of token ids) and the
objective (mean squared error or cross-entropy). Metrics are per example, as (sum, count)
pairs, so evaluation in batches and averaging over padded steps stay exact.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from omegaconf import OmegaConf

from seqlab import cells
from seqlab.experiments._config import frontend
from seqlab.layers import ARCHITECTURES, Architecture, Embedding, RNNLayer, one_hot
from seqlab.trees import TreeBatch, is_tree_cell
from seqlab.unroll import Xla


def _mse(outputs, targets, mask):
    """Squared error summed over every value of an example (steps, positions, channels);
    with a (B, T) mask, over its valid steps only (``where``: padding never counts)."""
    squared = (outputs - targets) ** 2
    if mask.ndim == 2:  # one output per step: (B, T, ...)
        per_step = squared.reshape((*squared.shape[:2], -1))
        values = per_step.shape[-1]
        per_step = jnp.where(mask[..., None] > 0, per_step, jnp.zeros_like(per_step))
        total = jnp.sum(per_step, axis=(1, 2))
        count = jnp.sum(mask.astype(squared.dtype), axis=1) * values
    else:
        total = jnp.sum(squared.reshape((squared.shape[0], -1)), axis=1)
        count = jnp.full(squared.shape[:1], math.prod(squared.shape[1:]), squared.dtype)
    return {"loss": (total, count), "mse": (total, count)}


def _cross_entropy(outputs, targets, mask):
    log_probs = jax.nn.log_softmax(outputs, axis=-1)
    labels = targets.astype(jnp.int32)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(outputs, axis=-1) == labels).astype(outputs.dtype)
    # where, not a product: a padding label out of range (-100, say) gives a NaN nll there,
    # and NaN times a zero mask is NaN (in the loss and in every gradient)
    nll = jnp.where(mask > 0, nll, jnp.zeros_like(nll))
    correct = jnp.where(mask > 0, correct, jnp.zeros_like(correct))
    mask = mask.astype(outputs.dtype)
    if mask.ndim == 1:  # one output per sequence
        return {"loss": (nll, mask), "accuracy": (correct, mask)}
    count = jnp.sum(mask, axis=1)
    return {
        "loss": (jnp.sum(nll, axis=1), count),
        "accuracy": (jnp.sum(correct, axis=1), count),
    }


def _mean_values(outputs):
    return jnp.mean(outputs, axis=0)


def _mean_probabilities(outputs):
    log_probs = jax.nn.log_softmax(outputs, axis=-1)
    return jax.scipy.special.logsumexp(log_probs, axis=0) - jnp.log(outputs.shape[0])


# objective -> (per-example metrics from (outputs, targets, mask), ensemble over seeds)
OBJECTIVES = {
    "mse": (_mse, _mean_values),
    "xent": (_cross_entropy, _mean_probabilities),
}


@dataclasses.dataclass(frozen=True, eq=False)
class TaskModel:
    """A seqlab model plus its input encoding and objective.

    Attributes:
      kind: the architecture type (a key of ``seqlab.layers.ARCHITECTURES``).
      objective: "mse" or "xent" (a key of ``OBJECTIVES``).
      net: the ``seqlab.layers.Architecture`` (ManyToOne, ManyToMany, EncoderDecoder or
        OneToMany); everything kind-specific is asked of it.
      input_vocab: > 0 when the inputs are token ids.
      input_encoding: "one_hot" or "embedding" for token inputs.
      embed_size: embedding width for token inputs.
      frames: the spatial shape of a frame task's inputs when this model reads them
        flattened (a cell without a spatial state: each frame becomes one vector, and the
        outputs are folded back into frames); () otherwise.
    """

    kind: str
    objective: str
    net: Architecture
    input_size: int
    input_vocab: int = 0
    input_encoding: str = "float"
    embed_size: int = 0
    frames: tuple[int, ...] = ()

    @property
    def embedding(self) -> Embedding:
        return Embedding(self.input_vocab, self.embed_size)

    def _net_input_size(self) -> int:
        if not self.input_vocab:
            return self.input_size * math.prod(self.frames)
        return self.input_vocab if self.input_encoding == "one_hot" else self.embed_size

    def init(self, key) -> dict:
        k_net, k_embed = jax.random.split(key)
        params = {"net": self.net.init(k_net, self._net_input_size())}
        if self.input_vocab and self.input_encoding == "embedding":
            params["embedding"] = self.embedding.init(k_embed)
        return params

    def encode_inputs(self, params, inputs):
        if self.frames:  # (B, T, *frames, C) -> (B, T, prod(frames) * C)
            return inputs.reshape((*inputs.shape[:2], -1))
        if not self.input_vocab:
            return inputs
        if self.input_encoding == "one_hot":
            return one_hot(inputs, self.input_vocab)
        return self.embedding.apply(params["embedding"], inputs)

    def structure(self, batch):
        """What says where each example ends: its ``lengths`` (B,), or for a tree model
        the ``seqlab.trees.TreeBatch`` made of the batch's tree arrays."""
        return TreeBatch.from_dict(batch) if self.net.reads_tree else batch["lengths"]

    def predict(self, params, batch, *, key=None, train=False):
        """Outputs for a batch: values (mse) or logits (xent); teacher-forced logits for
        the decoders."""
        xs = self.encode_inputs(params, batch["inputs"])
        outputs = self.net.forward(
            params["net"], xs, self.structure(batch), batch.get("targets"), key=key, train=train
        )
        return self.fold_frames(outputs)

    def fold_frames(self, outputs):
        """Outputs (B, T, F) of a model reading flattened frames folded back into frames
        (B, T, *frames, C); any other model's as they are."""
        if not self.frames:
            return outputs
        return outputs.reshape((*outputs.shape[:2], *self.frames, -1))

    def per_example(self, outputs, batch) -> dict:
        """{metric: (sum (B,), count (B,))}: the loss first, then accuracy for classes."""
        metrics, _ = OBJECTIVES[self.objective]
        structure, targets = self.structure(batch), batch["targets"]
        per_example = metrics(outputs, targets, self.net.output_mask(structure, targets))
        if self.net.reads_tree and self.net.per_node:  # the roots scored on their own too
            roots = jnp.asarray(structure.root)[:, None]
            root_outputs = jnp.take_along_axis(outputs, roots[..., None], axis=1)[:, 0]
            root_targets = jnp.take_along_axis(targets, roots, axis=1)[:, 0]
            at_roots = metrics(root_outputs, root_targets, (root_targets >= 0).astype(jnp.float32))
            per_example |= {f"root_{name}": value for name, value in at_roots.items()}
        return per_example

    def mean_loss(self, outputs, batch):
        """The loss of ``outputs`` averaged over everything it counts (examples, or
        valid steps and tokens)."""
        total, count = self.per_example(outputs, batch)["loss"]
        return jnp.sum(total) / jnp.maximum(jnp.sum(count), 1.0)

    def combine_seeds(self, outputs):
        """The ensemble of outputs stacked over seeds (S, ...): the mean of the values, or
        the log of the mean of the probabilities."""
        _, ensemble = OBJECTIVES[self.objective]
        return ensemble(outputs)

    def generate(self, params, batch, max_length, *, key=None, temperature=0.0):
        """Decoded token ids (B, max_length) and lengths for the generative kinds."""
        if not self.net.generative:
            raise ValueError(f"generate needs a decoder model, this one is {self.kind}")
        xs = self.encode_inputs(params, batch["inputs"])
        lengths = {"source_lengths": batch["lengths"]} if self.net.reads_sequence else {}
        return self.net.generate(
            params["net"], xs, max_length, key=key, temperature=temperature, **lengths
        )

    @property
    def encoder(self) -> RNNLayer:
        """The RNNLayer that reads the inputs (the decoder's for one-to-many; a tree model
        has none: its ``net.cell`` reads the trees)."""
        if self.net.reads_tree:
            raise ValueError("a tree model has no RNNLayer: its net.cell reads the trees")
        if self.net.reads_sequence:
            return self.net.encoder
        return self.net.decoder.rnn


def build_model(config, info: dict, *, batch_sharded: bool = False) -> TaskModel:
    """The model of ``config.model`` for a task described by ``info``.

    ``batch_sharded``: the training batch is sharded over devices; the ``lax.scan``
    implementations then run as ``seqlab.unroll.Xla(batch_sharded=True)`` (weight
    gradients contracted without merging the sharded batch axis into time)."""
    model = config.model
    implementation = model.implementation
    if batch_sharded and implementation in (None, "xla", "xla-autodiff"):
        backward = "autodiff" if implementation == "xla-autodiff" else "derived"
        implementation = Xla(backward=backward, batch_sharded=True)
    options = getattr(model, "cell_options", None) or {}
    if OmegaConf.is_config(options):
        options = OmegaConf.to_container(options, resolve=True)  # ${...} interpolations
    options, frames = _frame_options(model, options, info)
    _check_reading_order(model, info)
    try:
        cell = cells.make(model.cell, hidden_size=model.hidden_size, **options)
    except ValueError as error:  # name the config key the cell's message is about
        message = str(error)
        key = message.split(" ", 1)[0]
        if key == "hidden_size":
            message = f"model.{message}"
        elif key in (cells.option_types(model.cell) or {}):
            message = f"model.cell_options.{message}"
        else:
            message = f"model.cell={model.cell}: {message}"
        raise ValueError(message) from None
    architecture = ARCHITECTURES[info["kind"]]
    if architecture.reads_tree or is_tree_cell(cell):
        return _tree_model(config, info, cell, architecture)
    output_size = info["output_size"] * math.prod(frames)

    def rnn(bidirectional):
        return RNNLayer(
            cell,
            num_layers=model.num_layers,
            bidirectional=bidirectional,
            dropout=model.dropout,
            implementation=implementation,
        )

    try:
        net = architecture.build(
            rnn,
            output_size,
            bidirectional=model.bidirectional,
            embed_size=model.embed_size,
            frontend=frontend(model),
        )
    except ValueError as error:
        raise ValueError(f"model: {error}") from None
    return _task_model(architecture, net, info, model, frames=frames)


def _check_reading_order(model, info: dict) -> None:
    """A task whose target at step t is input t + 1 (``info["causal"]``) refuses a model
    that reads later steps; a frame task refuses the front-end over feature vectors."""
    frontend_on = getattr(model, "frontend", "none") != "none"
    if info.get("frame_shape") and frontend_on:
        raise ValueError(
            "model.frontend=conv convolves over time across feature vectors; this task's "
            "inputs are frames: use a convolutional cell (conv_lstm, conv_gru) instead"
        )
    if not info.get("causal"):
        return
    if model.bidirectional:
        raise ValueError(
            "model.bidirectional=true would read frame t + 1, the target of step t, before "
            "predicting it: this task needs a model that reads forward only"
        )
    if frontend_on and model.conv.padding != "causal":
        raise ValueError(
            f"model.conv.padding={model.conv.padding} lets step t read later steps, whose "
            "inputs are this task's targets: use model.conv.padding=causal"
        )


def _frame_options(model, options: dict, info: dict) -> tuple[dict, tuple[int, ...]]:
    """A frame task (``info["frame_shape"]``, inputs (B, T, *frame_shape, C)) read by a
    convolutional cell gets the frames' ``spatial_shape``; read by any other cell, the
    frames are flattened (returned as the model's ``frames``). A convolutional cell on a
    task without frames is refused."""
    frame_shape = tuple(info.get("frame_shape", ()))
    spatial = "spatial_shape" in (cells.option_types(model.cell) or {})
    if not spatial:
        return options, frame_shape
    if not frame_shape:
        raise ValueError(
            f"model.cell={model.cell} reads frames (B, T, *spatial, C) and this task's inputs "
            "are feature vectors; for convolutions over time use model.frontend=conv with a "
            "sequence cell"
        )
    given = options.get("spatial_shape")
    if given is not None and tuple(given) != frame_shape:
        raise ValueError(
            f"model.cell_options.spatial_shape={list(given)} does not match this task's frames "
            f"{list(frame_shape)}; leave it out to take the frames' shape"
        )
    return {**options, "spatial_shape": frame_shape}, ()


def _task_model(architecture, net, info: dict, model, *, frames=()) -> TaskModel:
    return TaskModel(
        kind=architecture.kind,
        objective=info["objective"],
        net=net,
        input_size=info.get("input_size", 0),
        input_vocab=info.get("input_vocab", 0),
        input_encoding=info.get("input_encoding", "float") if info.get("input_vocab") else "float",
        embed_size=model.embed_size,
        frames=tuple(frames),
    )


def _tree_model(config, info: dict, cell, architecture) -> TaskModel:
    """A tree cell on a tree task (``seqlab.layers.TreeEncoder``); anything else mixed
    with trees is refused, naming what was expected."""
    model = config.model
    if not architecture.reads_tree:
        sequence_cells = ", ".join(cells.registered("sequence"))
        raise ValueError(
            f"model.cell={model.cell} is a tree cell and reads trees; this task's inputs are "
            f"{info['kind']} sequences: choose a sequence cell ({sequence_cells})"
        )
    if not is_tree_cell(cell):
        raise ValueError(
            f"model.cell={model.cell} is a sequence cell; this task reads trees: choose a tree "
            "cell (tree_rnn, child_sum_tree_lstm, nary_tree_lstm, tree_gru)"
        )
    ignored = {
        "model.dropout": model.dropout,
        "model.implementation": model.implementation,
        "model.frontend": None if getattr(model, "frontend", "none") == "none" else model.frontend,
    }
    set_ = [f"{key}={value}" for key, value in ignored.items() if value not in (0, 0.0, None)]
    if set_:
        raise ValueError(
            f"a tree model has no {' or '.join(k.split('=')[0] for k in set_)} (got "
            f"{', '.join(set_)}): the tree cell runs through seqlab.trees.tree_scan"
        )
    arity, needed = getattr(cell, "arity", None), int(info.get("arity", 0))
    if arity is not None and arity < needed:
        raise ValueError(
            f"model.cell={model.cell} takes {arity} children per node; this task's trees have "
            f"up to {needed}: set model.cell_options.arity={needed}"
        )
    if model.num_layers != 1 or model.bidirectional:
        raise ValueError(
            "model: a tree model has one tree cell, read bottom-up: set model.num_layers=1 "
            f"and model.bidirectional=false (got {model.num_layers} and {model.bidirectional})"
        )
    net = architecture(cell, info["output_size"], per_node=bool(info.get("per_node", False)))
    return _task_model(architecture, net, info, model)
