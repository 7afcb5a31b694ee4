"""Generated long-range tasks: the adding problem and the copy-memory task."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import require
from seqlab.experiments._config import DataConfig
from seqlab.experiments.tasks._base import Task, TaskData, register

ADDING_BASELINE_MSE = 1.0 / 6.0


def adding_problem(key, batch_size: int, seq_len: int):
    """A batch of the adding problem (Hochreiter & Schmidhuber 1997).

    Each step carries a value from U(0, 1) and a marker; exactly two steps are marked, one
    in each half, and the target is the sum of the two marked values. Predicting the mean
    (1.0) scores Var(U + U) = 1/6 ≈ 0.167, the baseline; below 0.01 counts as solved.

    Returns inputs (B, T, 2) = [value, marker] and targets (B,).
    """
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (batch_size, seq_len))
    half = seq_len // 2
    first = jax.random.randint(k_first, (batch_size,), 0, half)
    second = jax.random.randint(k_second, (batch_size,), half, seq_len)
    steps = jnp.arange(seq_len)[None, :]
    markers = (steps == first[:, None]) | (steps == second[:, None])
    inputs = jnp.stack([values, markers.astype(values.dtype)], axis=-1)
    targets = jnp.sum(jnp.where(markers, values, jnp.zeros_like(values)), axis=1)
    return inputs, targets


@dataclasses.dataclass
class AddingData(DataConfig):
    seq_len: int = 100


def _adding_batch(key, batch_size, seq_len):
    inputs, targets = adding_problem(key, batch_size, seq_len)
    lengths = jnp.full((batch_size,), seq_len, jnp.int32)
    return {"inputs": inputs, "lengths": lengths, "targets": targets[:, None]}


def load_adding(config) -> TaskData:
    data = config.data
    require(
        data.seq_len >= 2,
        f"data.seq_len must be >= 2 for the adding problem (one marker in each half), got "
        f"{data.seq_len}",
    )
    eval_batch = _adding_batch(jax.random.key(data.split_seed), data.eval_size, data.seq_len)
    return TaskData(
        info={
            "kind": "many_to_one",
            "objective": "mse",
            "input_size": 2,
            "output_size": 1,
            "baselines": {"eval/mse": ADDING_BASELINE_MSE},
            "solved_below": {"eval/mse": 0.01},
        },
        eval={name: np.asarray(array) for name, array in eval_batch.items()},
        sample=lambda key, batch_size: _adding_batch(key, batch_size, data.seq_len),
    )


register(
    Task(
        "adding",
        "adding problem: sum of two marked values (many-to-one regression; baseline MSE 1/6)",
        AddingData,
        load_adding,
        main_metric="eval/mse",
    )
)


@dataclasses.dataclass
class CopyMemoryData(DataConfig):
    seq_len: int = 50  # T, the delay between the symbols and the recall cue
    num_symbols: int = 8
    copy_length: int = 10
    variant: str = "many_to_many"  # or many_to_one: recall only the first symbol


def copy_memory(key, batch_size: int, delay: int, num_symbols: int, copy_length: int):
    """The copy-memory task (Arjovsky et al. 2016), tokens in one sequence of
    ``copy_length + delay + copy_length`` steps.

    Input: ``copy_length`` symbols from {1..num_symbols}, ``delay - 1`` blanks (0), the cue
    (num_symbols + 1), then ``copy_length`` blanks. Target: blanks, then the symbols in the
    last ``copy_length`` steps. Guessing blanks and then uniform symbols scores the
    baseline cross-entropy ``copy_length * log(num_symbols) / (delay + 2 * copy_length)``.
    """
    symbols = jax.random.randint(key, (batch_size, copy_length), 1, num_symbols + 1)
    blanks = jnp.zeros((batch_size, delay - 1), jnp.int32)
    cue = jnp.full((batch_size, 1), num_symbols + 1, jnp.int32)
    tail = jnp.zeros((batch_size, copy_length), jnp.int32)
    inputs = jnp.concatenate([symbols, blanks, cue, tail], axis=1)
    targets = jnp.concatenate(
        [jnp.zeros((batch_size, delay + copy_length), jnp.int32), symbols], axis=1
    )
    return inputs, targets


def load_copy_memory(config) -> TaskData:
    data = config.data
    if data.variant not in ("many_to_many", "many_to_one"):
        raise ValueError(f"data.variant must be many_to_many or many_to_one, got {data.variant!r}")
    if data.num_symbols < 2 or data.copy_length < 1:
        raise ValueError("data.num_symbols must be >= 2 and data.copy_length >= 1")
    total = data.seq_len + 2 * data.copy_length

    def batch(key, batch_size):
        inputs, targets = copy_memory(
            key, batch_size, data.seq_len, data.num_symbols, data.copy_length
        )
        if data.variant == "many_to_one":
            targets = inputs[:, 0] - 1  # the first symbol, as a class in [0, num_symbols)
        return {
            "inputs": inputs,
            "lengths": jnp.full((batch_size,), total, jnp.int32),
            "targets": targets,
        }

    if data.variant == "many_to_many":
        kind, classes = "many_to_many", data.num_symbols + 1
        baseline = data.copy_length * math.log(data.num_symbols) / total
    else:
        kind, classes, baseline = "many_to_one", data.num_symbols, math.log(data.num_symbols)
    eval_batch = batch(jax.random.key(data.split_seed), data.eval_size)
    return TaskData(
        info={
            "kind": kind,
            "objective": "xent",
            "input_vocab": data.num_symbols + 2,
            "input_encoding": "one_hot",
            "output_size": classes,
            "baselines": {"eval/loss": baseline},
        },
        eval={name: np.asarray(array) for name, array in eval_batch.items()},
        sample=batch,
    )


register(
    Task(
        "copy_memory",
        "copy-memory: recall symbols after a long delay (many-to-many or many-to-one)",
        CopyMemoryData,
        load_copy_memory,
    )
)
