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

With more than one device the batch axis is sharded over a ``jax.sharding.Mesh``
(axis "data") and the parameters are replicated: data-parallel training, the same
computation as on one device up to float summation order. Under ``jax.distributed``
(several processes, ``Experiment.fed``) the mesh spans every process's devices and the
batches are no longer made inside the training program: each process makes only the rows
its own devices hold (``_local_batches``, the same rows, keys and augmentation as the
single-process program makes) and hands them over with
``jax.make_array_from_process_local_data``; evaluation batches likewise.
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

from seqlab.experiments import tasks as task_registry
from seqlab.experiments._config import to_yaml
from seqlab.experiments._model import TaskModel, build_model
from seqlab.experiments._optim import make_optimizer
from seqlab.experiments._seeds import map_seeds, resolve_seed_batching


def weight_penalty(params, l1: float, l2: float):
    """l1·Σ|w| + l2·Σw² over the weight matrices (leaves with 2 or more dimensions)."""
    weights = [w for w in jax.tree.leaves(params) if w.ndim >= 2]
    total = jnp.zeros((), jnp.float32)
    if l1:
        total = total + l1 * sum(jnp.sum(jnp.abs(w)) for w in weights)
    if l2:
        total = total + l2 * sum(jnp.sum(w * w) for w in weights)
    return total


def _ratio(sums: dict) -> dict:
    return {name: total / jnp.maximum(count, 1e-30) for name, (total, count) in sums.items()}


@dataclasses.dataclass(eq=False)
class Experiment:
    """A config made concrete: data, model, optimizer, seeds and device mesh.

    The jitted training and evaluation functions take the experiment as a static
    argument, so equal experiments share compiled programs. Two experiments are equal
    when ``trace_key`` is set and equal: ``from_config`` sets it to what the traced
    computation depends on (the config, the task's info and the devices) when the task
    loaded the data itself; otherwise (``data=`` given, or built by hand) an experiment
    equals only itself.
    """

    config: object
    task: object
    data: object
    model: TaskModel
    optimizer: optax.GradientTransformation
    seeds: tuple[int, ...]
    mesh: jax.sharding.Mesh | None
    trace_key: tuple | None = None

    def __eq__(self, other) -> bool:
        if self.trace_key is None or not isinstance(other, Experiment):
            return self is other
        return self.trace_key == other.trace_key

    def __hash__(self) -> int:
        return id(self) if self.trace_key is None else hash(self.trace_key)

    @property
    def fed(self) -> bool:
        """True under jax.distributed with several processes: every process feeds its own
        rows of each batch from the host instead of the training program making them."""
        return self.mesh is not None and jax.process_count() > 1

    @property
    def seed_batching(self) -> str:
        return resolve_seed_batching(self.config.train.seed_batching, len(self.seeds))

    def _map_seeds(self, fn, *args, in_axes=0):
        return map_seeds(fn, self.seed_batching, *args, in_axes=in_axes)

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

    # ----------------------------------------------------------------- state

    def _replicated(self, tree):
        if self.mesh is None:
            return tree
        sharding = NamedSharding(self.mesh, P())
        if self.fed:  # every process holds the whole value: a global replicated array
            return jax.tree.map(
                lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
            )
        return jax.device_put(tree, sharding)

    def _process_rows(self, size: int) -> tuple[int, int]:
        """(first, end) of the rows of a batch of ``size`` that this process's devices hold
        on the mesh (all of them in a single process)."""
        if not self.fed:
            return 0, size
        indices = NamedSharding(self.mesh, P("data")).addressable_devices_indices_map((size,))
        spans = sorted(
            {(i[0].start or 0, size if i[0].stop is None else i[0].stop) for i in indices.values()}
        )
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            if end != start:
                raise ValueError(
                    f"process {jax.process_index()}'s devices hold rows {spans} of the batch, "
                    "not one contiguous block"
                )
        return spans[0][0], spans[-1][1]

    def _global(self, tree, spec, sizes: dict[int, int]):
        """This process's rows (host arrays) as global arrays with ``spec``; ``sizes``
        gives the global size of the sharded axes."""

        def one(local):
            local = np.asarray(local)
            shape = list(local.shape)
            for axis, size in sizes.items():
                shape[axis] = size
            sharding = NamedSharding(self.mesh, spec)
            return jax.make_array_from_process_local_data(sharding, local, tuple(shape))

        return jax.tree.map(one, tree)

    def _on_local_device(self):
        """Where the process-local work (batch making) runs under jax.distributed."""
        return jax.default_device(jax.local_devices()[0])

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
        seeds = np.asarray(self.seeds, np.uint32)
        init = jax.jit(lambda s: self._map_seeds(self._init_one, s))
        if self.fed:
            with self._on_local_device():
                return self._replicated(jax.tree.map(np.asarray, init(seeds)))
        return self._replicated(init(seeds))

    def abstract_state(self):
        """ShapeDtypeStructs of the state (to restore a checkpoint against)."""
        seeds = jax.ShapeDtypeStruct((len(self.seeds),), jnp.uint32)
        abstract = jax.eval_shape(jax.vmap(self._init_one), seeds)
        # Always with a sharding: orbax refuses a checkpoint saved on other devices (four,
        # or several processes) against a target without one (a "topology mismatch").
        if self.mesh is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        else:
            sharding = NamedSharding(self.mesh, P())
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
        )

    @functools.cached_property
    def train_arrays(self):
        """The training set on the devices (on this process's first device when fed)."""
        if self.data.train is None:
            return None
        if self.fed:
            arrays = {k: np.asarray(v) for k, v in self.data.train.items()}
            return jax.device_put(arrays, jax.local_devices()[0])
        return self._replicated({k: jnp.asarray(v) for k, v in self.data.train.items()})

    # ----------------------------------------------------------------- training

    def data_position(self, step: int) -> dict:
        """Where step ``step`` (0-based, the next one to run) reads the training data."""
        if self.data.train is None:
            return {"step": step, "generated": True}
        per_epoch = len(self.data.train["targets"]) // self.config.train.batch_size
        return {"step": step, "epoch": step // per_epoch, "batch_in_epoch": step % per_epoch}

    def _batch(self, key, step, train_arrays, rows=None):
        """The batch of ``step`` (rows ``rows`` = (first, end) of it when given; a
        generated batch is made whole and then cut)."""
        batch_size = self.config.train.batch_size
        first, end = (0, batch_size) if rows is None else rows
        if self.data.sample is not None:
            batch = self.data.sample(key, batch_size)
            return batch if rows is None else {k: v[first:end] for k, v in batch.items()}
        num_train = train_arrays["targets"].shape[0]
        per_epoch = num_train // batch_size
        epoch, index = step // per_epoch, step % per_epoch
        order = jax.random.permutation(jax.random.fold_in(key, epoch), num_train)
        picked = jax.lax.dynamic_slice(order, (index * batch_size + first,), (end - first,))
        return {name: array[picked] for name, array in train_arrays.items()}

    @staticmethod
    def _step_keys(step_root, step):
        """(batch, augmentation, dropout) keys of ``step``."""
        return jax.random.split(jax.random.fold_in(step_root, step), 3)

    def _step_batch(self, shuffle_key, step_root, step, train_arrays, rows=None):
        """The batch of ``step``, augmented (or its rows ``rows``)."""
        k_batch, k_augment, _ = self._step_keys(step_root, step)
        data_key = shuffle_key if self.data.train is not None else k_batch
        if self.data.augment is None:
            return self._batch(data_key, step, train_arrays, rows)
        # augmentation draws for the whole batch: make it whole, augment, then cut
        batch = self.data.augment(k_augment, self._batch(data_key, step, train_arrays))
        if rows is not None:
            batch = {k: v[rows[0] : rows[1]] for k, v in batch.items()}
        return batch

    @functools.partial(jax.jit, static_argnums=(0, 3, 4))
    def _local_batches(self, rng, first_step, num_steps, rows, train_arrays):
        """(S, num_steps, end - first, ...) rows ``rows`` of every seed's batches of the
        steps first_step .. first_step + num_steps - 1: what one process feeds."""
        steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)

        def one_seed(rng):
            shuffle_key, step_root = jax.random.split(jax.random.wrap_key_data(rng))

            def one(step):
                return self._step_batch(shuffle_key, step_root, step, train_arrays, rows)

            return jax.lax.map(one, steps)

        return self._map_seeds(one_seed, rng)

    def _loss(self, params, batch, key):
        outputs = self.model.predict(params, batch, key=key, train=True)
        loss = self.model.mean_loss(outputs, batch)
        train = self.config.train
        return loss + weight_penalty(params, train.l1, train.l2), loss

    def _train_one_seed(self, params, opt_state, rng, steps, train_arrays, batches=None):
        shuffle_key, step_root = jax.random.split(jax.random.wrap_key_data(rng))

        def one_step(carry, xs):
            params, opt_state = carry
            step, fed = xs
            k_dropout = self._step_keys(step_root, step)[2]
            if fed is None:
                batch = self._step_batch(shuffle_key, step_root, step, train_arrays)
            else:  # the same batch, made by the processes (_local_batches) and handed in
                batch = fed
            batch = self._sharded_batch(batch)
            grad_fn = jax.value_and_grad(self._loss, has_aux=True)
            (_, loss), grads = grad_fn(params, batch, k_dropout)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), (loss, optax.tree.norm(grads))

        (params, opt_state), (losses, grad_norms) = jax.lax.scan(
            one_step, (params, opt_state), (steps, batches)
        )
        return params, opt_state, jnp.mean(losses), jnp.mean(grad_norms)

    def _train_seeds(self, state, steps, train_arrays, batches):
        """Every seed's ``steps``; its batches made in the program from ``train_arrays``,
        or ``batches`` (S, len(steps), B, ...) handed in."""
        params, opt_state, loss, grad_norm = self._map_seeds(
            self._train_one_seed,
            state["params"],
            state["opt_state"],
            state["rng"],
            steps,
            train_arrays,
            batches,
            in_axes=(0, 0, 0, None, None, None if batches is None else 0),
        )
        state = {"params": params, "opt_state": opt_state, "rng": state["rng"]}
        return self._replicate_result((state, {"train/loss": loss, "train/grad_norm": grad_norm}))

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def _train_chunk(self, state, first_step, num_steps, train_arrays):
        steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
        return self._train_seeds(state, steps, train_arrays, None)

    @functools.partial(jax.jit, static_argnums=0)
    def _train_chunk_fed(self, state, first_step, batches):
        num_steps = jax.tree.leaves(batches)[0].shape[1]
        steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
        return self._train_seeds(state, steps, None, batches)

    def _replicate_result(self, tree):
        """Results of a program over the mesh, replicated: every process can read them."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, NamedSharding(self.mesh, P()))

    def _fed_batches(self, state, first_step: int, num_steps: int):
        """Every seed's batches of the chunk as global arrays (S, num_steps, B, ...) built
        from the rows each process makes."""
        batch_size = self.config.train.batch_size
        rows = self._process_rows(batch_size)
        rng = np.asarray(state["rng"])  # replicated: every process holds it whole
        with self._on_local_device():
            local = self._local_batches(
                rng, np.int32(first_step), num_steps, rows, self.train_arrays
            )
        return self._global(local, P(None, None, "data"), {2: batch_size})

    def train_chunk(self, state, first_step: int, num_steps: int):
        """Run steps first_step .. first_step + num_steps - 1 for every seed.

        Returns the new state and per-seed (S,) means of the training loss and the
        gradient norm (before clipping) over those steps.
        """
        if self.fed:
            batches = self._fed_batches(state, first_step, num_steps)
            return self._train_chunk_fed(state, np.int32(first_step), batches)
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
        if self.fed:  # each process hands over the rows its devices hold
            first, end = self._process_rows(size)
            local = {k: v[:, first:end] for k, v in batches.items()}
            return self._global(local, P(None, "data"), {1: size})
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
        if self.model.net.generative and self.model.net.reads_sequence:  # translation-like
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
        return self._replicate_result((_ratio(per_seed), _ratio(ensemble)))

    def evaluate(self, params) -> tuple[dict, dict]:
        """({metric: (S,) per seed}, {metric: ensemble value}) on the eval set."""
        per_seed, ensemble = self._evaluate(params, self.eval_batches)
        return (
            {f"eval/{k}": np.asarray(v, np.float64) for k, v in per_seed.items()},
            {f"eval_ensemble/{k}": float(v) for k, v in ensemble.items()},
        )

    def check(self) -> None:
        """Trace one training step and one evaluation without running them (``eval_shape``)
        so that everything the config gets wrong fails now, as a ValueError, before a run
        writes anything: an implementation the cell does not support, a best metric the
        task does not have, shapes that do not fit. It costs a trace, not a compile."""
        abstract = self.abstract_state()
        self._check_training(abstract)
        per_seed, ensemble = jax.eval_shape(self._evaluate, abstract["params"], self.eval_batches)
        names = [f"eval/{k}" for k in per_seed] + [f"eval_ensemble/{k}" for k in ensemble]
        metric, _ = self.main_metric()
        if metric not in names:
            raise ValueError(
                f"checkpoint.best_metric {metric!r} is not a metric of task {self.config.task}; "
                f"it has {', '.join(names)}"
            )

    def _check_training(self, abstract) -> None:
        """Trace one training step against the abstract state (``check``)."""
        if self.fed:
            batch_size = self.config.train.batch_size
            batches = jax.eval_shape(
                lambda rng, arrays: self._local_batches(rng, 0, 1, (0, batch_size), arrays),
                abstract["rng"],
                self.train_arrays,
            )
            jax.eval_shape(lambda s, b: self._train_chunk_fed(s, np.int32(0), b), abstract, batches)
        else:
            jax.eval_shape(
                lambda state, arrays: self._train_chunk(state, jnp.int32(0), 1, arrays),
                abstract,
                self.train_arrays,
            )

    def main_metric(self) -> tuple[str, str]:
        """(metric, mode) that early stopping and the best checkpoint watch."""
        name = self.config.checkpoint.best_metric or self.task.main_metric
        mode = self.task.mode
        if self.config.checkpoint.best_metric:
            mode = "max" if name.endswith(("accuracy", "exact_match")) else "min"
        return name, mode
