"""The training and evaluation programs: pure functions of a ``Program`` and arrays.

A ``Program`` is what a traced training or evaluation computation depends on besides its
array arguments: the model, the optimizer, how batches are made (a task's ``sample`` and
``augment``), the penalties, how seeds are batched and the device mesh. It is the static
argument of every jitted function here, so two equal programs share compiled code: they
are equal when their ``key`` is set and equal (``Experiment.from_config`` sets it from the
config, the task's info and the devices), else a program equals only itself (an optax
optimizer or a task's sampler compares by identity).

The state of every seed is stacked on a leading seed axis S. The batch of step s for a
seed is a pure function of that seed's RNG key and s (a generated batch, or rows of the
training set in the permutation of epoch s // steps_per_epoch), so a run restarted at
step s sees exactly the batches an uninterrupted run sees, and a process that makes only
its own rows of a batch (``local_batches``) makes the rows ``train_chunk`` would make.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seqlab.experiments._model import TaskModel
from seqlab.experiments._seeds import map_seeds


def weight_penalty(params, l1: float, l2: float):
    """l1·Σ|w| + l2·Σw² over the weight matrices (leaves with 2 or more dimensions)."""
    weights = [w for w in jax.tree.leaves(params) if w.ndim >= 2]
    total = jnp.zeros((), jnp.float32)
    if l1:
        total = total + l1 * sum(jnp.sum(jnp.abs(w)) for w in weights)
    if l2:
        total = total + l2 * sum(jnp.sum(w * w) for w in weights)
    return total


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """The static side of the training and evaluation programs (see the module docstring).

    Attributes:
      model: the task's model (``predict``, ``mean_loss``, ``per_example``, ...).
      optimizer: the optax transformation.
      batch_size: rows per training batch (the global batch under jax.distributed).
      l1, l2: the weight penalties (``weight_penalty``).
      sample: ``sample(key, batch_size)`` of a task that generates its batches, or None
        when batches are rows of the training set.
      augment: ``augment(key, batch)`` or None.
      shuffled: True when the task has a training set (its batches' key is the seed's
        shuffle key, fixed for the run; a generated batch's key changes every step).
      seed_batching: "vmap" or "loop" (resolved; ``seqlab.experiments.resolve_seed_batching``).
      mesh: the device mesh (axis "data") the batch is sharded over, or None.
      key: what the traced computation depends on, or None (equal only to itself).
    """

    model: TaskModel
    optimizer: optax.GradientTransformation
    batch_size: int
    l1: float
    l2: float
    sample: Callable | None
    augment: Callable | None
    shuffled: bool
    seed_batching: str
    mesh: jax.sharding.Mesh | None
    key: tuple | None = None

    def __eq__(self, other) -> bool:
        if self.key is None or not isinstance(other, Program):
            return self is other
        return self.key == other.key

    def __hash__(self) -> int:
        return id(self) if self.key is None else hash(self.key)

    def map_seeds(self, fn, *args, in_axes=0):
        return map_seeds(fn, self.seed_batching, *args, in_axes=in_axes)

    def sharded_batch(self, batch):
        """``batch`` constrained to be split over the mesh's devices along its rows."""
        if self.mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, NamedSharding(self.mesh, P("data")))

    def replicated_result(self, tree):
        """Results of a program over the mesh, replicated: every process can read them."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, NamedSharding(self.mesh, P()))


# ----------------------------------------------------------------- state


def init_one(program: Program, seed):
    """One seed's state at step 0: parameters, optimizer state, its RNG key's data."""
    init_key, run_key = jax.random.split(jax.random.key(seed))
    params = program.model.init(init_key)
    return {
        "params": params,
        "opt_state": program.optimizer.init(params),
        "rng": jax.random.key_data(run_key),
    }


@functools.partial(jax.jit, static_argnums=0)
def init_seeds(program: Program, seeds):
    """The state of every seed in ``seeds`` (S,) uint32, stacked on a leading seed axis."""
    return program.map_seeds(lambda s: init_one(program, s), seeds)


# ----------------------------------------------------------------- batches


def _step_keys(step_root, step):
    """(batch, augmentation, dropout) keys of ``step``."""
    return jax.random.split(jax.random.fold_in(step_root, step), 3)


def _batch(program: Program, key, step, train_arrays, rows=None):
    """The batch of ``step`` (rows ``rows`` = (first, end) of it when given; a generated
    batch is made whole and then cut)."""
    batch_size = program.batch_size
    first, end = (0, batch_size) if rows is None else rows
    if program.sample is not None:
        batch = program.sample(key, batch_size)
        return batch if rows is None else {k: v[first:end] for k, v in batch.items()}
    num_train = train_arrays["targets"].shape[0]
    per_epoch = num_train // batch_size
    epoch, index = step // per_epoch, step % per_epoch
    order = jax.random.permutation(jax.random.fold_in(key, epoch), num_train)
    picked = jax.lax.dynamic_slice(order, (index * batch_size + first,), (end - first,))
    return {name: array[picked] for name, array in train_arrays.items()}


def step_batch(program: Program, shuffle_key, step_root, step, train_arrays, rows=None):
    """The batch of ``step``, augmented (or its rows ``rows``)."""
    k_batch, k_augment, _ = _step_keys(step_root, step)
    data_key = shuffle_key if program.shuffled else k_batch
    if program.augment is None:
        return _batch(program, data_key, step, train_arrays, rows)
    # augmentation draws for the whole batch: make it whole, augment, then cut
    batch = program.augment(k_augment, _batch(program, data_key, step, train_arrays))
    if rows is not None:
        batch = {k: v[rows[0] : rows[1]] for k, v in batch.items()}
    return batch


def _seed_keys(rng):
    """(shuffle key, step root) of one seed's RNG key data."""
    return jax.random.split(jax.random.wrap_key_data(rng))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def local_batches(program: Program, rng, first_step, num_steps: int, rows, train_arrays):
    """(S, num_steps, end - first, ...): rows ``rows`` = (first, end) of every seed's
    batches of the steps first_step .. first_step + num_steps - 1 (what one process of
    several feeds)."""
    steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)

    def one_seed(rng):
        shuffle_key, step_root = _seed_keys(rng)

        def one(step):
            return step_batch(program, shuffle_key, step_root, step, train_arrays, rows)

        return jax.lax.map(one, steps)

    return program.map_seeds(one_seed, rng)


# ----------------------------------------------------------------- training


def _loss(program: Program, params, batch, key):
    outputs = program.model.predict(params, batch, key=key, train=True)
    loss = program.model.mean_loss(outputs, batch)
    return loss + weight_penalty(params, program.l1, program.l2), loss


def _train_one_seed(program: Program, batch_of, params, opt_state, rng, steps, fed):
    """``steps`` of one seed; ``batch_of(shuffle_key, step_root, step, fed_batch)`` gives
    each step's batch (``fed`` is scanned along with the steps: None, or batches)."""
    shuffle_key, step_root = _seed_keys(rng)
    grad_fn = jax.value_and_grad(functools.partial(_loss, program), has_aux=True)

    def one_step(carry, xs):
        params, opt_state = carry
        step, fed_batch = xs
        k_dropout = _step_keys(step_root, step)[2]
        batch = program.sharded_batch(batch_of(shuffle_key, step_root, step, fed_batch))
        (_, loss), grads = grad_fn(params, batch, k_dropout)
        updates, opt_state = program.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (loss, optax.tree.norm(grads))

    (params, opt_state), (losses, grad_norms) = jax.lax.scan(
        one_step, (params, opt_state), (steps, fed)
    )
    return params, opt_state, jnp.mean(losses), jnp.mean(grad_norms)


def _train_seeds(program: Program, batch_of, state, steps, fed):
    params, opt_state, loss, grad_norm = program.map_seeds(
        functools.partial(_train_one_seed, program, batch_of),
        state["params"],
        state["opt_state"],
        state["rng"],
        steps,
        fed,
        in_axes=(0, 0, 0, None, None if fed is None else 0),
    )
    state = {"params": params, "opt_state": opt_state, "rng": state["rng"]}
    metrics = {"train/loss": loss, "train/grad_norm": grad_norm}
    return program.replicated_result((state, metrics))


@functools.partial(jax.jit, static_argnums=(0, 3))
def train_chunk(program: Program, state, first_step, num_steps: int, train_arrays):
    """Every seed's steps first_step .. first_step + num_steps - 1, its batches made in
    the program (from ``train_arrays``, the training set, or generated). Returns the new
    state and per-seed (S,) means of the training loss and the gradient norm (before
    clipping) over those steps."""
    steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)

    def batch_of(shuffle_key, step_root, step, _):
        return step_batch(program, shuffle_key, step_root, step, train_arrays)

    return _train_seeds(program, batch_of, state, steps, None)


@functools.partial(jax.jit, static_argnums=0)
def train_chunk_fed(program: Program, state, first_step, batches):
    """``train_chunk`` on batches handed in: (S, num_steps, B, ...), the same batches
    ``train_chunk`` would make (``local_batches``, gathered over the processes)."""
    num_steps = jax.tree.leaves(batches)[0].shape[1]
    steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)

    def batch_of(shuffle_key, step_root, step, fed_batch):
        return fed_batch

    return _train_seeds(program, batch_of, state, steps, batches)


# ----------------------------------------------------------------- evaluation


def _ratio(sums: dict) -> dict:
    return {name: total / jnp.maximum(count, 1e-30) for name, (total, count) in sums.items()}


def _eval_sums(program: Program, params, batch):
    """Per-seed metric sums over one eval batch, plus the ensemble's when S > 1."""
    model = program.model
    weight = batch["weight"]
    inputs = {k: v for k, v in batch.items() if k != "weight"}
    outputs = program.map_seeds(lambda p: model.predict(p, inputs), params)

    def sums(per_example):
        def weighted(values):  # (..., B) against the (B,) mask of padded examples
            return jnp.sum(values * jnp.broadcast_to(weight, values.shape), -1)

        return {
            name: (weighted(total), weighted(count)) for name, (total, count) in per_example.items()
        }

    per_seed = sums(program.map_seeds(lambda o: model.per_example(o, inputs), outputs))
    if model.net.generative and model.net.reads_sequence:  # translation-like
        max_length = inputs["targets"].shape[1]

        def exact(p):
            tokens, _ = model.generate(p, inputs, max_length)
            match = jnp.all(tokens == inputs["targets"], axis=1).astype(jnp.float32)
            return match, jnp.ones_like(match)

        per_seed.update(sums({"exact_match": program.map_seeds(exact, params)}))
    ensemble = {}
    if jax.tree.leaves(params)[0].shape[0] > 1:
        ensemble = sums(model.per_example(model.combine_seeds(outputs), inputs))
    return per_seed, ensemble


@functools.partial(jax.jit, static_argnums=0)
def evaluate(program: Program, params, batches):
    """({metric: (S,) per seed}, {metric: ensemble value}) over ``batches`` (nb, eb, ...)
    with a ``weight`` mask (0 on padding rows); the ensemble only when S > 1."""

    def body(totals, batch):
        sums = _eval_sums(program, params, program.sharded_batch(batch))
        return jax.tree.map(jnp.add, totals, sums), None

    first = jax.tree.map(lambda a: a[0], batches)
    shapes = jax.eval_shape(functools.partial(_eval_sums, program), params, first)
    (per_seed, ensemble), _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, shapes), batches)
    return program.replicated_result((_ratio(per_seed), _ratio(ensemble)))
