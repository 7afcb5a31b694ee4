"""Reload a run for analysis: ``seqlab.load_run(DIR)``.

Needs only the run directory (not the experiment file, not the data): the model is
rebuilt from ``config.yaml`` and ``task.json``, the parameters are read by orbax's
standard handler against the shapes the config implies. Nothing is unpickled, and
nothing in the directory is written.
"""

from __future__ import annotations

import functools
import pathlib

import jax.numpy as jnp
import numpy as np

from seqlab.experiments import _rundir
from seqlab.experiments import tasks as task_registry
from seqlab.experiments._checkpoint import open_checkpoints, restore_state
from seqlab.experiments._model import build_model
from seqlab.experiments._optim import make_optimizer
from seqlab.experiments._seeds import map_seeds, resolve_seed_batching, seed_params
from seqlab.experiments._train import Experiment
from seqlab.trees import TreeBatch


class Run:
    """A saved run.

    Attributes:
      directory: the run directory.
      config: the typed config (OmegaConf DictConfig: ``run.config.model.cell``).
      info: the task's description (``task.json``): sizes, vocabularies, baselines.
      model: the ``TaskModel`` (``model.net`` is the seqlab.layers model).
      seeds: the seeds trained together; parameters carry a leading seed axis of this
        length (``params_of_seed`` takes one out).
    """

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"no run directory at {self.directory}")
        self.config = _rundir.read_config(self.directory)
        self.info = _rundir.read_info(self.directory)
        self.model = build_model(self.config, self.info)
        self.seeds = tuple(self.config.seed + i for i in range(self.config.train.num_seeds))
        self._experiment = Experiment(
            self.config,
            task_registry.get(self.config.task),
            None,
            self.model,
            make_optimizer(self.config.train),
            self.seeds,
            None,
        )
        if not (self.directory / _rundir.CHECKPOINTS).is_dir():
            raise ValueError(f"{self.directory} has no checkpoints/ folder")
        self._checkpoints = open_checkpoints(self.directory, self._experiment, read_only=True)

    def __repr__(self) -> str:
        return f"Run({str(self.directory)!r}, task={self.config.task}, steps={self.steps})"

    @property
    def metrics(self) -> list[dict]:
        """The metric records, one per log step, in order (``metrics.jsonl``)."""
        return _rundir.read_metrics(self.directory / _rundir.METRICS)

    def metric(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one metric, e.g. ``run.metric("eval/loss")``."""
        records = [r for r in self.metrics if name in r]
        if not records:
            raise ValueError(f"no metric {name!r}; recorded: {sorted(self.metrics[0])}")
        return np.array([r["step"] for r in records]), np.array([r[name] for r in records])

    @property
    def steps(self) -> list[int]:
        """Steps with a saved checkpoint."""
        return self._checkpoints.steps()

    @property
    def best_step(self) -> int | None:
        return self._checkpoints.best_step()

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a Run is long-lived and small
    def restore_state(self, step: int) -> dict:
        """The full training state of ``step``: params, opt_state, rng (seed-stacked)."""
        if step not in self.steps:
            raise ValueError(
                f"no checkpoint at step {step} in {self.directory}; saved: {self.steps}"
            )
        state, _ = restore_state(self._checkpoints, self._experiment, step)
        return state

    def restore(self, step: int):
        """The parameters at checkpoint ``step`` (seed-stacked; see ``params_of_seed``)."""
        return self.restore_state(step)["params"]

    @property
    def params(self):
        """The parameters of the latest checkpoint (seed-stacked)."""
        if not self.steps:
            raise ValueError(f"{self.directory} has no checkpoint yet")
        return self.restore(self.steps[-1])

    def params_of_seed(self, params, index: int = 0):
        """One seed's parameters out of seed-stacked ``params``."""
        return seed_params(params, index)

    def apply(self, inputs, lengths=None, *, targets=None, step=None, seed=None):
        """Run the trained model on ``inputs`` (the task's input layout, batch first; for a
        tree model a ``seqlab.trees.TreeBatch``, its token ids in the run's vocabulary).

        Returns the model's outputs: regression values or class logits (B, ...). With
        several seeds and ``seed=None`` this is the ensemble (mean values, or log of the
        mean probabilities); ``seed=i`` gives one seed's outputs. Decoder tasks need
        ``targets`` for teacher forcing (use ``generate`` to decode freely).
        """
        params = self.restore(step) if step is not None else self.params
        if self.model.net.reads_tree:  # a TreeBatch holds the inputs and the structure
            if not isinstance(inputs, TreeBatch):
                raise ValueError(
                    f"a tree model's apply takes a seqlab.trees.TreeBatch, got "
                    f"{type(inputs).__name__} (TreeBatch.from_trees(trees, vocab=...))"
                )
            batch = {k: jnp.asarray(v) for k, v in inputs.as_dict().items()}
            batch["targets"] = batch["labels"]
        else:
            inputs = jnp.asarray(inputs)
            if lengths is None:
                time_axis = 1 if inputs.ndim >= 2 else 0
                lengths = jnp.full((inputs.shape[0],), inputs.shape[time_axis], jnp.int32)
            batch = {"inputs": inputs, "lengths": jnp.asarray(lengths, jnp.int32)}
        if targets is not None:
            batch["targets"] = jnp.asarray(targets)
        elif self.model.net.generative:
            raise ValueError(f"a {self.model.kind} model needs targets for apply; use generate")
        how = resolve_seed_batching(self.config.train.seed_batching, len(self.seeds))
        outputs = map_seeds(lambda p: self.model.predict(p, batch), how, params)
        if seed is not None:
            return outputs[self.seeds.index(seed)]
        return self.model.combine_seeds(outputs) if len(self.seeds) > 1 else outputs[0]

    def generate(self, inputs, lengths=None, *, max_length=None, step=None, seed_index=0):
        """Greedy decoding for the decoder tasks: token ids (B, max_length) and lengths."""
        params = self.params_of_seed(
            self.restore(step) if step is not None else self.params, seed_index
        )
        inputs = jnp.asarray(inputs)
        if lengths is None:
            lengths = jnp.full((inputs.shape[0],), inputs.shape[1] if inputs.ndim > 1 else 1)
        batch = {"inputs": inputs, "lengths": jnp.asarray(lengths, jnp.int32)}
        return self.model.generate(params, batch, max_length or self.info["target_length"])


def load_run(directory) -> Run:
    """Open a run directory for analysis (see ``Run``); a ValueError names what is
    missing or damaged."""
    return Run(directory)
