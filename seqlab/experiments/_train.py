"""An experiment: a config made concrete, split into a program, a data source and seeds.

``Experiment.from_config`` loads the task's data and builds the model, the optimizer and
the device mesh. Three parts then do the work:

- ``program`` (``_step.Program``) with the pure jitted functions of ``_step``: the
  training chunk (``train.log_every`` steps in one ``lax.scan``, every seed at once on a
  leading seed axis S: ``vmap``-ed on accelerators, one copy per seed on CPU unless the jax
  version and the number of seeds make vmap safe and faster, ``resolve_seed_batching``)
  and the evaluation;
- ``source`` (``_feed.Local`` or ``_feed.Fed``): where the batches come from, one process
  or every process of a jax.distributed job feeding its own rows;
- the loop with its run directory, in ``_run``.

With more than one device the batch axis is sharded over a ``jax.sharding.Mesh``
(axis "data") and the parameters are replicated: data-parallel training, the same
computation as on one device up to float summation order.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seqlab.experiments import _step
from seqlab.experiments import tasks as task_registry
from seqlab.experiments._config import to_yaml
from seqlab.experiments._feed import Local, feed
from seqlab.experiments._model import TaskModel, build_model
from seqlab.experiments._optim import make_optimizer
from seqlab.experiments._seeds import resolve_seed_batching
from seqlab.experiments._step import Program, init_one


@dataclasses.dataclass(eq=False)
class Experiment:
    """A config made concrete: data, model, optimizer, seeds and device mesh.

    Two experiments are equal when ``trace_key`` is set and equal: ``from_config`` sets
    it to what the traced computation depends on (the config, the task's info and the
    devices) when the task loaded the data itself; otherwise (``data=`` given, or built by
    hand) an experiment equals only itself. Their ``program``s are equal likewise, and
    equal programs share compiled training and evaluation code.
    """

    config: object
    task: object
    data: object
    model: TaskModel
    optimizer: optax.GradientTransformation
    seeds: tuple[int, ...]
    mesh: jax.sharding.Mesh | None
    trace_key: tuple | None = None

    def __eq__(self, other) -> bool:  # the rule lives in Program (its key is trace_key)
        return isinstance(other, Experiment) and self.program == other.program

    def __hash__(self) -> int:
        return hash(self.program)

    @property
    def seed_batching(self) -> str:
        return resolve_seed_batching(self.config.train.seed_batching, len(self.seeds))

    @classmethod
    def from_config(cls, config, *, data=None) -> Experiment:
        task = task_registry.get(config.task)
        loaded = data is None
        data = task.load(config) if loaded else data
        augmenting = config.data.augment_jitter or config.data.augment_scale
        if augmenting and data.augment is None:
            raise ValueError(
                f"task {config.task} takes no augmentation: set data.augment_jitter and "
                "data.augment_scale to 0"
            )
        if data.train is not None:
            num_train = len(data.train["targets"])
            if config.train.batch_size > num_train:
                raise ValueError(
                    f"train.batch_size ({config.train.batch_size}) exceeds the {num_train} "
                    "training examples"
                )
        devices = jax.devices()  # every process's devices under jax.distributed
        mesh = None
        if len(devices) > 1:
            if config.train.batch_size % len(devices):
                across = f" ({jax.process_count()} processes)" if jax.process_count() > 1 else ""
                raise ValueError(
                    f"train.batch_size ({config.train.batch_size}) must be a multiple of the "
                    f"{len(devices)} devices{across} it is sharded over"
                )
            mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        seeds = tuple(config.seed + i for i in range(config.train.num_seeds))
        # with the batch sharded over a mesh, the cells' backward passes contract over time
        # and batch without merging them (seqlab.unroll.Xla's batch_sharded)
        model = build_model(config, data.info, batch_sharded=mesh is not None)
        trace_key = None
        if loaded:
            devices_key = tuple(device.id for device in devices)
            trace_key = (to_yaml(config), json.dumps(data.info, sort_keys=True), devices_key)
        optimizer = make_optimizer(config.train)
        return cls(config, task, data, model, optimizer, seeds, mesh, trace_key)

    @functools.cached_property
    def program(self) -> Program:
        """The static side of the training and evaluation programs (``_step.Program``)."""
        data, train = self.data, self.config.train
        return Program(
            model=self.model,
            optimizer=self.optimizer,
            batch_size=train.batch_size,
            l1=train.l1,
            l2=train.l2,
            sample=None if data is None else data.sample,
            augment=None if data is None else data.augment,
            shuffled=data is not None and data.train is not None,
            seed_batching=self.seed_batching,
            mesh=self.mesh,
            key=self.trace_key,
        )

    @functools.cached_property
    def source(self) -> Local:
        """Where the batches come from: ``_feed.Local`` (one process) or ``_feed.Fed``."""
        return feed(self.data, self.mesh, self.config.train.eval_batch_size)

    @property
    def fed(self) -> bool:
        """True under jax.distributed with several processes: every process feeds its own
        rows of each batch from the host instead of the training program making them."""
        return self.source.processes > 1

    # ----------------------------------------------------------------- state

    def init_state(self):
        """The state of every seed at step 0, stacked on a leading seed axis."""
        return self.source.init_state(self.program, self.seeds)

    def abstract_state(self):
        """ShapeDtypeStructs of the state (to restore a checkpoint against)."""
        seeds = jax.ShapeDtypeStruct((len(self.seeds),), jnp.uint32)
        abstract = jax.eval_shape(jax.vmap(functools.partial(init_one, self.program)), seeds)
        # Always with a sharding: orbax refuses a checkpoint saved on other devices (four,
        # or several processes) against a target without one (a "topology mismatch").
        if self.mesh is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        else:
            sharding = NamedSharding(self.mesh, P())
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
        )

    # ----------------------------------------------------------------- training

    def data_position(self, step: int) -> dict:
        """Where step ``step`` (0-based, the next one to run) reads the training data."""
        if self.data.train is None:
            return {"step": step, "generated": True}
        per_epoch = len(self.data.train["targets"]) // self.config.train.batch_size
        return {"step": step, "epoch": step // per_epoch, "batch_in_epoch": step % per_epoch}

    def train_chunk(self, state, first_step: int, num_steps: int):
        """Run steps first_step .. first_step + num_steps - 1 for every seed.

        Returns the new state and per-seed (S,) means of the training loss and the
        gradient norm (before clipping) over those steps.
        """
        return self.source.train_chunk(self.program, state, first_step, num_steps)

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, params) -> tuple[dict, dict]:
        """({metric: (S,) per seed}, {metric: ensemble value}) on the eval set."""
        per_seed, ensemble = _step.evaluate(self.program, params, self.source.eval_batches)
        return (
            {f"eval/{k}": np.asarray(v, np.float64) for k, v in per_seed.items()},
            {f"eval_ensemble/{k}": float(v) for k, v in ensemble.items()},
        )

    def check(self) -> None:
        """Trace one training step and one evaluation without running them (``eval_shape``)
        so that everything the config gets wrong fails now, as a ValueError, before a run
        writes anything: an implementation the cell does not support, a best metric the
        task does not have, shapes that do not fit. It costs a trace, not a compile."""
        self._check_frontend_lengths()
        abstract = self.abstract_state()
        self.source.trace_training(self.program, abstract)
        names = self.metric_names()
        metric, _ = self.main_metric()
        if metric not in names:
            raise ValueError(
                f"checkpoint.best_metric {metric!r} is not a metric of task {self.config.task}; "
                f"it has {', '.join(names)}"
            )

    def metric_names(self) -> list[str]:
        """The names of the evaluation metrics in every record (``eval/...`` per seed
        averaged, ``eval_ensemble/...``), from a trace of the evaluation."""
        abstract = self.abstract_state()
        per_seed, ensemble = jax.eval_shape(
            functools.partial(_step.evaluate, self.program),
            abstract["params"],
            self.source.eval_batches,
        )
        return [f"eval/{k}" for k in per_seed] + [f"eval_ensemble/{k}" for k in ensemble]

    def _check_frontend_lengths(self) -> None:
        """A convolutional front-end turns a sequence shorter than its ``min_length`` into
        no steps at all (its summary would be the head's bias alone): refuse data that has
        such sequences, naming the shortest."""
        frontend = getattr(self.model.net, "frontend", None)
        if frontend is None:
            return
        splits = [self.data.eval] + ([self.data.train] if self.data.train is not None else [])
        lengths = np.concatenate([np.asarray(split["lengths"]).ravel() for split in splits])
        lengths = lengths[lengths > 0]
        if lengths.size and frontend.output_lengths(int(lengths.min())) < 1:
            raise ValueError(
                f"model.conv: this front-end needs sequences of at least {frontend.min_length()} "
                f"steps (kernel, dilation, stride, padding and pooling together); this task "
                f"has sequences of {int(lengths.min())}: use a smaller model.conv.kernel_size "
                "or stride, or model.conv.padding=same"
            )

    def main_metric(self) -> tuple[str, str]:
        """(metric, mode) that early stopping and the best checkpoint watch."""
        name = self.config.checkpoint.best_metric or self.task.main_metric
        mode = self.task.mode
        if self.config.checkpoint.best_metric:
            mode = "max" if name.endswith(("accuracy", "exact_match")) else "min"
        return name, mode
