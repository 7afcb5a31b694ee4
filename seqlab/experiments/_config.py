"""Typed experiment configs (OmegaConf structured configs) and dotted overrides.

Every experiment speaks the same language: ``model.cell``, ``model.hidden_size``,
``model.num_layers``, ``model.bidirectional``, ``data.seq_len``, ``train.steps``,
``train.batch_size``, ``train.lr`` and ``seed`` exist in every config. A task adds its own
``data`` fields by subclassing ``DataConfig``. Overrides are ``key=value`` strings checked
against the schema: an unknown key or a value of the wrong type raises a ValueError that
lists the valid keys, before anything runs.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqlab import cells
from seqlab._checks import check_non_negative, check_one_of, check_positive, require
from seqlab.experiments._optim import OPTIMIZERS, SCHEDULES
from seqlab.experiments._seeds import SEED_BATCHING
from seqlab.layers import conv_stack
from seqlab.unroll import IMPLEMENTATIONS


@dataclasses.dataclass
class ConvConfig:
    """The Conv1D front-end of ``model.frontend=conv`` (``seqlab.layers.ConvStack``)."""

    channels: list[int] = dataclasses.field(default_factory=lambda: [64])  # one per layer
    kernel_size: int = 5
    stride: int = 1  # the first layer's stride (the others have 1): T / stride RNN steps
    dilation: int = 1
    padding: str = "same"  # same | causal | valid (seqlab.layers.PADDINGS)
    groups: int = 1
    activation: str = "relu"  # a key of seqlab.layers.ACTIVATIONS
    pool: str = "none"  # none | max | avg, after every layer
    pool_size: int = 2
    dropout: float = 0.0  # after every layer, in training


FRONTENDS = ("none", "conv")


@dataclasses.dataclass
class ModelConfig:
    cell: str = "lstm"  # any name in seqlab.cells.registered(None) (tree cells for tree tasks)
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers (RNNLayer.dropout)
    embed_size: int = 32  # token inputs with data.input_encoding=embedding, and decoders
    implementation: str | None = None  # one of seqlab.unroll.IMPLEMENTATIONS
    # keyword options of the cell beyond hidden_size, e.g. {"max_timescale": 1000} for
    # diag_gru (model.cell_options.max_timescale=1000 on the command line)
    cell_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # a convolutional front-end before the encoder: none | conv (configured by model.conv)
    frontend: str = "none"
    conv: ConvConfig = dataclasses.field(default_factory=ConvConfig)


@dataclasses.dataclass
class DataConfig:
    seq_len: int = 100
    eval_size: int = 1024  # size of the generated eval set (adding, copy_memory, dates)
    split_seed: int = 0  # the train/eval split and generated eval data do not follow `seed`
    num_folds: int = 0  # k-fold cross-validation when >= 2: the eval set is fold `fold`
    fold: int = 0
    # Augmentation of training batches, for tasks that take it (the series tasks):
    augment_jitter: float = 0.0  # std of Gaussian noise added to the inputs ("jittering")
    augment_scale: float = 0.0  # std of a random amplitude factor N(1, s) per sequence


@dataclasses.dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # a key of OPTIMIZERS (_optim.py): adam | adamw | sgd | rmsprop
    schedule: str = "constant"  # a key of SCHEDULES: constant | cosine | warmup_cosine
    warmup_steps: int = 0
    clip_norm: float = 1.0  # global-norm clipping; 0 turns it off
    weight_decay: float = 0.0  # decoupled (adamw)
    l1: float = 0.0  # penalty l1 * sum|w| over weights (not biases)
    l2: float = 0.0  # penalty l2 * sum w^2 over weights (not biases)
    log_every: int = 50  # steps between metric records (an evaluation each time)
    eval_batch_size: int = 512
    early_stopping_patience: int = 0  # evaluations without improvement; 0 turns it off
    num_seeds: int = 1  # seeds seed, seed+1, ... train together as one program
    seed_batching: str = "auto"  # SEED_BATCHING: auto | vmap | loop (see _seeds.py)


@dataclasses.dataclass
class CheckpointConfig:
    every: int = 100  # steps; a multiple of train.log_every
    keep: int = 3  # the last `keep` checkpoints, plus the best by `best_metric`
    best_metric: str = ""  # default: the task's main eval metric


@dataclasses.dataclass
class ExperimentConfig:
    task: str = "adding"
    seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)


REQUIRED_KEYS = (
    "model.cell",
    "model.hidden_size",
    "model.num_layers",
    "model.bidirectional",
    "data.seq_len",
    "train.steps",
    "train.batch_size",
    "train.lr",
    "seed",
)


def valid_keys(config: DictConfig) -> list[str]:
    """Every dotted leaf key of ``config``."""

    def walk(node, prefix):
        for key in node:
            value = node[key] if not OmegaConf.is_missing(node, key) else None
            name = f"{prefix}{key}"
            if isinstance(value, DictConfig):
                yield from walk(value, name + ".")
            else:
                yield name

    return list(walk(config, ""))


def structured(config: Any) -> DictConfig:
    """A typed DictConfig from an ExperimentConfig (or an existing DictConfig)."""
    if isinstance(config, DictConfig):
        return config
    if not isinstance(config, ExperimentConfig):
        raise ValueError(
            f"an experiment config must be a seqlab ExperimentConfig, got {type(config).__name__}"
        )
    return OmegaConf.structured(config)


def apply_overrides(config: Any, overrides: list[str]) -> DictConfig:
    """``config`` with dotted ``key=value`` overrides merged in, type-checked by OmegaConf."""
    config = structured(config)
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ValueError(f"an override must look like key=value, got {item!r}")
        if item.split("=", 1)[0].strip() == "task":
            raise ValueError(
                "task is fixed by the experiment (its data keys depend on it): name the task "
                f"as the experiment instead of overriding it, got {item!r}"
            )
    try:
        merged = OmegaConf.merge(config, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        reason = str(error).splitlines()[0]
        key = getattr(error, "full_key", None) or "?"
        raise ValueError(
            f"bad override for {key}: {reason}; valid keys: {', '.join(valid_keys(config))}"
        ) from None
    validate(merged)
    return merged


def _non_finite(config: DictConfig) -> list[str]:
    """The dotted keys of every float in ``config`` that is NaN or infinite."""
    return [
        key
        for key in valid_keys(config)
        if isinstance(value := OmegaConf.select(config, key), float) and not math.isfinite(value)
    ]


# The seeds seed, seed + 1, ... become uint32 PRNG seeds.
MAX_SEED = 2**32 - 1


def validate(config: DictConfig) -> None:
    """Checks across keys that a type cannot express (a ValueError naming the key)."""
    bad = _non_finite(config)
    values = [OmegaConf.select(config, key) for key in bad]
    require(not bad, f"{', '.join(bad)} must be finite numbers, got {values}")
    check_one_of("model.cell", config.model.cell, cells.registered(None))
    options = OmegaConf.to_container(config.model.cell_options, resolve=True)
    _check_cell_options(config.model.cell, options)
    try:
        cells.make(
            config.model.cell,
            hidden_size=config.model.hidden_size,
            **_with_placeholder_frames(config.model.cell, options),
        )
    except TypeError as error:
        raise ValueError(
            f"model.cell_options {options} do not fit cell {config.model.cell!r}: {error}"
        ) from None
    check_one_of("model.frontend", config.model.frontend, FRONTENDS)
    if config.model.frontend == "conv":
        frontend(config.model)  # every model.conv mistake, named, before anything runs
    last_seed = config.seed + max(config.train.num_seeds, 1) - 1
    require(
        0 <= config.seed and last_seed <= MAX_SEED,
        f"seed must be in [0, {MAX_SEED}] with train.num_seeds seeds after it, got {config.seed}",
    )
    positive = (
        "model.hidden_size",
        "model.num_layers",
        "model.embed_size",
        "data.seq_len",
        "data.eval_size",
        "train.steps",
        "train.batch_size",
        "train.lr",
        "train.log_every",
        "train.num_seeds",
        "train.eval_batch_size",
        "checkpoint.every",
        "checkpoint.keep",
    )
    for name in positive:
        check_positive(name, OmegaConf.select(config, name))
    check_one_of("model.implementation", config.model.implementation, IMPLEMENTATIONS)
    check_one_of("train.optimizer", config.train.optimizer, OPTIMIZERS)
    check_one_of("train.seed_batching", config.train.seed_batching, SEED_BATCHING)
    check_one_of("train.schedule", config.train.schedule, SCHEDULES)
    require(
        0.0 <= config.model.dropout < 1.0,
        f"model.dropout must be in [0, 1), got {config.model.dropout}",
    )
    for name in (
        "train.l1",
        "train.l2",
        "train.weight_decay",
        "train.clip_norm",
        "train.warmup_steps",
    ):
        check_non_negative(name, OmegaConf.select(config, name))
    require(
        config.checkpoint.every % config.train.log_every == 0,
        f"checkpoint.every ({config.checkpoint.every}) must be a multiple of "
        f"train.log_every ({config.train.log_every})",
    )
    folds, fold = config.data.num_folds, config.data.fold
    require(folds == 0 or folds >= 2, f"data.num_folds must be 0 (off) or >= 2, got {folds}")
    require(not folds or 0 <= fold < folds, f"data.fold must be in [0, {folds}), got {fold}")
    for name in ("data.augment_jitter", "data.augment_scale"):
        check_non_negative(name, OmegaConf.select(config, name))


def frontend(model: Any):
    """The ``seqlab.layers.ConvStack`` of ``model.conv`` when ``model.frontend=conv``,
    else None; a ValueError names the ``model.conv`` key at fault."""
    if getattr(model, "frontend", "none") == "none":
        return None
    conv = model.conv
    channels = list(conv.channels)
    require(
        channels and all(isinstance(c, int) and c > 0 for c in channels),
        f"model.conv.channels must be a non-empty list of positive ints, got {channels}",
    )
    try:
        return conv_stack(
            channels,
            kernel_size=conv.kernel_size,
            stride=[conv.stride] + [1] * (len(channels) - 1),
            dilation=conv.dilation,
            padding=conv.padding,
            groups=conv.groups,
            activation=conv.activation,
            pool=conv.pool,
            pool_size=conv.pool_size,
            dropout=conv.dropout,
        )
    except ValueError as error:
        message = str(error)
        key = message.split(" ", 1)[0]
        fields = {field.name for field in dataclasses.fields(ConvConfig)}
        raise ValueError(
            f"model.conv.{message}" if key in fields else f"model.conv: {message}"
        ) from None


def _with_placeholder_frames(cell: str, options: dict) -> dict:
    """``options`` with a stand-in ``spatial_shape`` for a convolutional cell that has
    none yet (the task's frames supply it when the model is built), so the other options
    can be checked now."""
    declared = cells.option_types(cell) or {}
    if "spatial_shape" not in declared or "spatial_shape" in options:
        return options
    kernel = options.get("kernel_size", 1)
    axes = len(kernel) if isinstance(kernel, list | tuple) else 1
    return {**options, "spatial_shape": (1,) * axes}


def _check_cell_options(cell: str, options: dict) -> None:
    """Refuse a ``model.cell_options`` entry the cell does not take, or of another type than
    the cell declares (``seqlab.cells.option_types``): a config holds text, so "maybe" for
    a bool or "zeros" for an initializer would otherwise reach the cell and fail, or be
    taken for true, only once the model is built."""
    declared = cells.option_types(cell)
    if declared is None:  # the factory takes any keyword: the cell checks them itself
        return
    for key, value in options.items():
        name = f"model.cell_options.{key}"
        require(key != "hidden_size", f"{name}: set model.hidden_size instead")
        require(
            key in declared,
            f"{name} is not an option of cell {cell!r}; its options: "
            f"{', '.join(k for k in declared if k != 'hidden_size')}",
        )
        expected = declared[key]
        require(
            _has_type(value, expected),
            f"{name} must be {_type_name(expected)} for cell {cell!r}, got {value!r}",
        )


def _has_type(value: Any, expected: Any) -> bool:
    """Whether ``value`` (from a config) fits the annotation ``expected``: a bool must be
    true or false, a float may be an int, a callable cannot come from a config."""
    origin = typing.get_origin(expected) or expected
    if expected is Any or expected is object:
        return True
    if expected is None or expected is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arm) for arm in typing.get_args(expected))
    if origin is typing.Literal:
        return value in typing.get_args(expected)
    if expected in (int, float):  # a bool is an int to Python, never to a config
        numbers = int if expected is int else int | float
        return isinstance(value, numbers) and not isinstance(value, bool)
    if origin is collections.abc.Callable:
        return callable(value)
    if origin is tuple:  # a config holds lists where Python has tuples
        args = typing.get_args(expected)
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(item, args[0]) for item in value)
        return not args or (len(args) == len(value) and all(map(_has_type, value, args)))
    return not isinstance(origin, type) or isinstance(value, origin)


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected) or expected
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(expected))
    if origin is typing.Literal:
        return f"one of {list(typing.get_args(expected))}"
    if origin is collections.abc.Callable:
        return "a callable (an initializer function: set it in Python, a config cannot hold one)"
    if origin is tuple:
        args = typing.get_args(expected)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {None: "null", type(None): "null", bool: "a bool (true or false)", int: "an int",
             float: "a number", str: "a string"}  # fmt: skip
    return names.get(origin, f"a {getattr(origin, '__name__', origin)}")


def to_yaml(config: DictConfig) -> str:
    return OmegaConf.to_yaml(config, resolve=True)


def to_dict(config: DictConfig) -> dict:
    return OmegaConf.to_container(config, resolve=True)
