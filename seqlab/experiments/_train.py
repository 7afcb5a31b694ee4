"""Training a task: seeds in one program, steps scanned, batches sharded.

``Experiment.from_config`` loads the task's data and builds the model and the optimizer.
The training state holds every seed at once (a leading seed axis S on each leaf): the
seeds of a sweep point run as one jitted program: ``vmap``-ed on accelerators, one copy
per seed on CPU unless the jax version and the number of seeds make vmap safe and faster
(``resolve_seed_batching``; ``train.seed_batching`` overrides). ``train_chunk`` runs
``train.log_every`` steps in one ``lax.scan``; the batch of step s for a seed is a pure
function of that seed's RNG key and s (a generated batch, or rows of the training set in
the permutation of epoch s // steps_per_epoch), so a run restarted from a checkpoint at
step s sees exactly the batches an uninterrupted run sees.

With more than one local device the batch axis is sharded over a ``jax.sharding.Mesh``
(axis "data") and the parameters are replicated: data-parallel training, the same
computation as on one device up to float summation order.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seqlab.experiments import tasks as task_registry
from seqlab.experiments._model import TaskModel, build_model


def make_optimizer(train) -> optax.GradientTransformation:
    """The optax optimizer of ``config.train``: schedule, clipping, optimizer."""
    if train.schedule == "constant":
        lr = train.lr
    elif train.schedule == "cosine":
        lr = optax.cosine_decay_schedule(train.lr, train.steps)
    else:
        lr = optax.warmup_cosine_decay_schedule(0.0, train.lr, train.warmup_steps, train.steps)
    optimizer = {
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=train.weight_decay),
        "sgd": lambda: optax.sgd(lr, momentum=0.9),
        "rmsprop": lambda: optax.rmsprop(lr),
    }[train.optimizer]()
    if train.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(train.clip_norm), optimizer)
    return optimizer


def weight_penalty(params, l1: float, l2: float):
    """l1·Σ|w| + l2·Σw² over the weight matrices (leaves with 2 or more dimensions)."""
    weights = [w for w in jax.tree.leaves(params) if w.ndim >= 2]
    total = jnp.zeros((), jnp.float32)
    if l1:
        total = total + l1 * sum(jnp.sum(jnp.abs(w)) for w in weights)
    if l2:
        total = total + l2 * sum(jnp.sum(w * w) for w in weights)
    return total


# How the seeds of one program are batched. "vmap" batches them into one computation (what
# makes 8 seeds cost little more than 1 on a GPU). "loop" writes one copy of the
# computation per seed into the same jitted program. Accelerators vmap. On XLA's CPU
# backend jax 0.10.2 hangs at random on the vmapped training step (idle threads, a buffer
# that never becomes ready), and the loop never did, so CPU loops unless the jax version is
# one where the hang was not seen and there are enough seeds for vmap to pay. Measured on
# 2026-11-25, 2-core CPU (benchmarks/vmap_seeds_cpu.py, a fresh process per trial, 2 seeds,
# 200 or 600 steps; benchmarks/results/vmap_seeds_cpu_2026-11-25/summary.md): jax 0.10.2
# hung in 7 of 37 trials (5 of the last 6, run alone); 0.11.2 in 0 of 16; 0.12.0.1 in 0 of
# 68, and 0 of 8 with 8 seeds. 0.11 stays on the loop: 16 trials are too few to trust.
# Vmap against the loop on jax 0.12.0.1 (LSTM, 200 steps): 2 seeds 0.93x, 4 seeds 1.11x,
# 8 seeds 1.45x as fast.
CPU_VMAP_FROM_JAX = (0, 12)
CPU_VMAP_MIN_SEEDS = 4


def resolve_seed_batching(choice: str, num_seeds: int) -> str:
    """``"auto"`` -> "vmap" on accelerators; on CPU "vmap" from jax ``CPU_VMAP_FROM_JAX``
    on with at least ``CPU_VMAP_MIN_SEEDS`` seeds, else "loop" (the measurements behind it are
    above). The Pallas kernels follow it too: vmapped, they run as many seeds side by side
    as stay resident and map over the rest (``seqlab.kernels._persistent.resident_vmap``)."""
    if choice != "auto":
        return choice
    if jax.default_backend() != "cpu":
        return "vmap"
    version = tuple(jax.__version_info__[:2])
    if version >= CPU_VMAP_FROM_JAX and num_seeds >= CPU_VMAP_MIN_SEEDS:
        return "vmap"
    return "loop"


def map_seeds(fn, how: str, *args, in_axes=0):
    """``jax.vmap(fn, in_axes)(*args)``, or the same as a Python loop over the seed axis
    whose results are stacked (``how="loop"``)."""
    if how == "vmap":
        return jax.vmap(fn, in_axes=in_axes)(*args)
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    sizes = {jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, axes, strict=True) if ax == 0}
    (size,) = sizes
    results = []
    for i in range(size):
        sliced = [
            jax.tree.map(lambda leaf, i=i: leaf[i], a) if ax == 0 else a
            for a, ax in zip(args, axes, strict=True)
        ]
        results.append(fn(*sliced))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *results)


def _ratio(sums: dict) -> dict:
    return {name: total / jnp.maximum(count, 1e-30) for name, (total, count) in sums.items()}


@dataclasses.dataclass(eq=False)
class Experiment:
    """A config made concrete: data, model, optimizer, seeds and device mesh."""

    config: object
    task: object
    data: object
    model: TaskModel
    optimizer: optax.GradientTransformation
    seeds: tuple[int, ...]
    mesh: jax.sharding.Mesh | None

    @property
    def seed_batching(self) -> str:
        return resolve_seed_batching(self.config.train.seed_batching, len(self.seeds))

    def _map_seeds(self, fn, *args, in_axes=0):
        return map_seeds(fn, self.seed_batching, *args, in_axes=in_axes)

    @classmethod
    def from_config(cls, config, *, data=None) -> Experiment:
        task = task_registry.get(config.task)
        data = data if data is not None else task.load(config)
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
        devices = jax.devices()
        mesh = None
        if len(devices) > 1:
            if config.train.batch_size % len(devices):
                raise ValueError(
                    f"train.batch_size ({config.train.batch_size}) must be a multiple of the "
                    f"{len(devices)} devices it is sharded over"
                )
            mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        seeds = tuple(config.seed + i for i in range(config.train.num_seeds))
        model = build_model(config, data.info)
        return cls(config, task, data, model, make_optimizer(config.train), seeds, mesh)

    # ----------------------------------------------------------------- state

    def _replicated(self, tree):
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def _sharded_batch(self, batch):
        if self.mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, NamedSharding(self.mesh, P("data")))

    def _init_one(self, seed):
        init_key, run_key = jax.random.split(jax.random.key(seed))
        params = self.model.init(init_key)
        return {
            "params": params,
            "opt_state": self.optimizer.init(params),
            "rng": jax.random.key_data(run_key),
        }

    def init_state(self):
        """The state of every seed at step 0, stacked on a leading seed axis."""
        seeds = jnp.asarray(self.seeds, jnp.uint32)
        return self._replicated(jax.jit(lambda s: self._map_seeds(self._init_one, s))(seeds))

    def abstract_state(self):
        """ShapeDtypeStructs of the state (to restore a checkpoint against)."""
        seeds = jax.ShapeDtypeStruct((len(self.seeds),), jnp.uint32)
        abstract = jax.eval_shape(jax.vmap(self._init_one), seeds)
        if self.mesh is None:
            return abstract
        sharding = NamedSharding(self.mesh, P())
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
        )

    @functools.cached_property
    def train_arrays(self):
        if self.data.train is None:
            return None
        return self._replicated({k: jnp.asarray(v) for k, v in self.data.train.items()})

    # ----------------------------------------------------------------- training

    def data_position(self, step: int) -> dict:
        """Where step ``step`` (0-based, the next one to run) reads the training data."""
        if self.data.train is None:
            return {"step": step, "generated": True}
        per_epoch = len(self.data.train["targets"]) // self.config.train.batch_size
        return {"step": step, "epoch": step // per_epoch, "batch_in_epoch": step % per_epoch}

    def _batch(self, key, step, train_arrays):
        batch_size = self.config.train.batch_size
        if self.data.sample is not None:
            return self.data.sample(key, batch_size)
        num_train = train_arrays["targets"].shape[0]
        per_epoch = num_train // batch_size
        epoch, index = step // per_epoch, step % per_epoch
        order = jax.random.permutation(jax.random.fold_in(key, epoch), num_train)
        rows = jax.lax.dynamic_slice(order, (index * batch_size,), (batch_size,))
        return {name: array[rows] for name, array in train_arrays.items()}

    def _loss(self, params, batch, key):
        outputs = self.model.predict(params, batch, key=key, train=True)
        total, count = self.model.per_example(outputs, batch)["loss"]
        loss = jnp.sum(total) / jnp.maximum(jnp.sum(count), 1.0)
        train = self.config.train
        return loss + weight_penalty(params, train.l1, train.l2), loss

    def _train_one_seed(self, params, opt_state, rng, steps, train_arrays):
        shuffle_key, step_root = jax.random.split(jax.random.wrap_key_data(rng))

        def one_step(carry, step):
            params, opt_state = carry
            k_batch, k_augment, k_dropout = jax.random.split(jax.random.fold_in(step_root, step), 3)
            data_key = shuffle_key if self.data.train is not None else k_batch
            batch = self._batch(data_key, step, train_arrays)
            if self.data.augment is not None:
                batch = self.data.augment(k_augment, batch)
            batch = self._sharded_batch(batch)
            grad_fn = jax.value_and_grad(self._loss, has_aux=True)
            (_, loss), grads = grad_fn(params, batch, k_dropout)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), (loss, optax.tree.norm(grads))

        (params, opt_state), (losses, grad_norms) = jax.lax.scan(
            one_step, (params, opt_state), steps
        )
        return params, opt_state, jnp.mean(losses), jnp.mean(grad_norms)

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def _train_chunk(self, state, first_step, num_steps, train_arrays):
        steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
        params, opt_state, loss, grad_norm = self._map_seeds(
            self._train_one_seed,
            state["params"],
            state["opt_state"],
            state["rng"],
            steps,
            train_arrays,
            in_axes=(0, 0, 0, None, None),
        )
        state = {"params": params, "opt_state": opt_state, "rng": state["rng"]}
        return state, {"train/loss": loss, "train/grad_norm": grad_norm}

    def train_chunk(self, state, first_step: int, num_steps: int):
        """Run steps first_step .. first_step + num_steps - 1 for every seed.

        Returns the new state and per-seed (S,) means of the training loss and the
        gradient norm (before clipping) over those steps.
        """
        return self._train_chunk(state, jnp.int32(first_step), num_steps, self.train_arrays)

    # ----------------------------------------------------------------- evaluation

    @functools.cached_property
    def eval_batches(self):
        """The eval set padded to whole batches (nb, eb, ...) plus a ``weight`` mask."""
        arrays = self.data.eval
        count = len(arrays["targets"])
        devices = 1 if self.mesh is None else self.mesh.size
        size = min(self.config.train.eval_batch_size, count)
        size = -(-size // devices) * devices
        num_batches = -(-count // size)
        padded = num_batches * size

        def pad(array):
            array = np.asarray(array)
            filler = np.repeat(array[:1], padded - count, axis=0)
            full = np.concatenate([array, filler]) if padded > count else array
            return full.reshape(num_batches, size, *array.shape[1:])

        batches = {name: pad(array) for name, array in arrays.items()}
        batches["weight"] = (
            (np.arange(padded) < count).astype(np.float32).reshape(num_batches, size)
        )
        return self._replicated({k: jnp.asarray(v) for k, v in batches.items()})

    def _eval_sums(self, params, batch):
        """Per-seed metric sums over one eval batch, plus the ensemble's when S > 1."""
        weight = batch["weight"]
        inputs = {k: v for k, v in batch.items() if k != "weight"}
        outputs = self._map_seeds(lambda p: self.model.predict(p, inputs), params)

        def sums(per_example):
            def weighted(values):  # (..., B) against the (B,) mask of padded examples
                return jnp.sum(values * jnp.broadcast_to(weight, values.shape), -1)

            return {
                name: (weighted(total), weighted(count))
                for name, (total, count) in per_example.items()
            }

        per_seed = sums(self._map_seeds(lambda o: self.model.per_example(o, inputs), outputs))
        if self.model.kind == "encoder_decoder":
            max_length = inputs["targets"].shape[1]

            def exact(p):
                tokens, _ = self.model.generate(p, inputs, max_length)
                match = jnp.all(tokens == inputs["targets"], axis=1).astype(jnp.float32)
                return match, jnp.ones_like(match)

            per_seed.update(sums({"exact_match": self._map_seeds(exact, params)}))
        ensemble = {}
        if len(self.seeds) > 1:
            ensemble = sums(self.model.per_example(self.model.combine_seeds(outputs), inputs))
        return per_seed, ensemble

    @functools.partial(jax.jit, static_argnums=0)
    def _evaluate(self, params, batches):
        def body(totals, batch):
            batch = self._sharded_batch(batch)
            sums = self._eval_sums(params, batch)
            return jax.tree.map(jnp.add, totals, sums), None

        first = jax.tree.map(lambda a: a[0], batches)
        zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(self._eval_sums, params, first))
        (per_seed, ensemble), _ = jax.lax.scan(body, zeros, batches)
        return _ratio(per_seed), _ratio(ensemble)

    def evaluate(self, params) -> tuple[dict, dict]:
        """({metric: (S,) per seed}, {metric: ensemble value}) on the eval set."""
        per_seed, ensemble = self._evaluate(params, self.eval_batches)
        return (
            {f"eval/{k}": np.asarray(v, np.float64) for k, v in per_seed.items()},
            {f"eval_ensemble/{k}": float(v) for k, v in ensemble.items()},
        )

    def main_metric(self) -> tuple[str, str]:
        """(metric, mode) that early stopping and the best checkpoint watch."""
        name = self.config.checkpoint.best_metric or self.task.main_metric
        mode = self.task.mode
        if self.config.checkpoint.best_metric:
            mode = "max" if name.endswith(("accuracy", "exact_match")) else "min"
        return name, mode


def seed_params(params, index: int):
    """One seed's parameters out of a stacked tree."""
    return jax.tree.map(lambda leaf: leaf[index], params)
