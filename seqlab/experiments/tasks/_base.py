"""What a task is: a typed data config, a loader, and the architecture type it trains.

A task's loader returns ``TaskData``: NumPy arrays for the evaluation set, and either a
finite training set or a JAX ``sample(key, batch_size)`` for generated tasks. ``info``
is the JSON-safe description the model is built from (saved as ``task.json`` in a run
directory, so a run reloads without its data or its experiment file).

Batches are dicts of arrays with a leading example axis:

    kind             inputs                        targets
    many_to_one      (B, T, D) float | (B, T) int  (B, O) float (mse) | (B,) int (xent)
    many_to_many     (B, T, D) float | (B, T) int  (B, T) int, valid where t < lengths
    encoder_decoder  (B, T) int source tokens      (B, T_out) int, <eos>-terminated, 0-padded
    one_to_many      (B, D) float                  (B, T_out) int, 0-padded

and every batch has ``lengths`` (B,) int: the valid length of ``inputs``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from seqlab._checks import check_one_of, require
from seqlab.layers import ARCHITECTURES

KINDS = tuple(ARCHITECTURES)  # the architecture kinds a task may name


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A loaded task.

    Attributes:
      info: JSON-safe: ``kind``, ``objective`` ("mse" or "xent"), ``input_size`` (float
        inputs) or ``input_vocab`` (token inputs), ``output_size`` (regression outputs or
        classes or target vocabulary), ``baselines`` ({metric: value} of a trivial
        predictor), and whatever the task needs to decode (``vocab``, ``labels``).
      eval: the evaluation set, NumPy arrays with a leading example axis.
      train: the training set (finite tasks), or None.
      sample: ``(key, batch_size) -> batch`` in JAX (generated tasks), or None.
      augment: ``(key, batch) -> batch`` applied to training batches, or None.
    """

    info: dict
    eval: dict[str, np.ndarray]
    train: dict[str, np.ndarray] | None = None
    sample: Callable | None = None
    augment: Callable | None = None

    def __post_init__(self):
        require(
            (self.train is None) != (self.sample is None),
            "a task needs exactly one of a training set or a sampler",
        )
        check_one_of("task kind", self.info.get("kind"), KINDS)


@dataclasses.dataclass(frozen=True)
class Task:
    """A registered task: ``name``, its ``DataConfig`` subclass and its loader.

    ``main_metric`` is what early stopping and the best checkpoint watch (``mode`` "min"
    or "max"); ``default_config(config)`` adjusts an ExperimentConfig to the task's
    defaults (used when no experiment file is given).
    """

    name: str
    description: str
    data_config: type
    load: Callable[[Any], TaskData]
    main_metric: str = "eval/loss"
    mode: str = "min"
    default_config: Callable[[Any], Any] = lambda config: config


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def get(name: str) -> Task:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def registered() -> tuple[str, ...]:
    return tuple(sorted(_TASKS))


def split_indices(
    num_examples: int, config, *, eval_fraction: float, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Train and eval indices: a held-out fraction, or fold ``data.fold`` of k when
    ``data.num_folds`` >= 2. The order comes from ``data.split_seed`` (or is kept, for
    series, with ``shuffle=False``: then the folds are contiguous blocks in time)."""
    order = np.arange(num_examples)
    if shuffle:
        order = np.random.default_rng(config.split_seed).permutation(num_examples)
    if config.num_folds:
        folds = np.array_split(order, config.num_folds)
        eval_idx = folds[config.fold]
        train_idx = np.concatenate([f for i, f in enumerate(folds) if i != config.fold])
    else:
        num_eval = max(1, int(round(eval_fraction * num_examples)))
        train_idx, eval_idx = order[:-num_eval], order[-num_eval:]
    if len(train_idx) == 0 or len(eval_idx) == 0:
        raise ValueError(f"{num_examples} examples are too few to split into train and eval")
    return np.sort(train_idx) if not shuffle else train_idx, eval_idx


def take(arrays: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.asarray(array)[indices] for name, array in arrays.items()}
