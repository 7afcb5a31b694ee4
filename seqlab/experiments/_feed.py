"""Where the training program's data comes from: one process, or fed by many.

Both sources give the loop one interface: ``init_state(program, seeds)``,
``train_chunk(program, state, first_step, num_steps)``, ``eval_batches``,
``trace_training(program, abstract_state)`` (``Experiment.check``), ``host(tree)`` and
``writer_device()``.

``Local`` is one process (one device, or several under a mesh with the batch sharded over
axis "data"): the batches are made inside the jitted training program from the training
set on the devices. ``Fed`` is jax.distributed with several processes: the mesh spans
every process's devices and the batches are no longer made inside the training program;
each process makes only the rows its own devices hold (``_step.local_batches``: the same
rows, keys and augmentation the one-process program makes) and hands them over with
``jax.make_array_from_process_local_data``; evaluation batches likewise. ``feed(...)``
picks the source.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seqlab.experiments import _step
from seqlab.experiments._step import Program


def _padded_eval(arrays: dict, eval_batch_size: int, devices: int) -> dict:
    """The eval set padded to whole batches (nb, eb, ...) plus a ``weight`` mask (1 on the
    real examples), eb a multiple of ``devices``; host arrays."""
    count = len(arrays["targets"])
    size = min(eval_batch_size, count)
    size = -(-size // devices) * devices
    num_batches = -(-count // size)
    padded = num_batches * size

    def pad(array):
        array = np.asarray(array)
        filler = np.repeat(array[:1], padded - count, axis=0)
        full = np.concatenate([array, filler]) if padded > count else array
        return full.reshape(num_batches, size, *array.shape[1:])

    batches = {name: pad(array) for name, array in arrays.items()}
    batches["weight"] = (np.arange(padded) < count).astype(np.float32).reshape(num_batches, size)
    return batches


class Local:
    """One process: the training program makes its batches (see the module docstring)."""

    processes = 1

    def __init__(self, data, mesh, eval_batch_size: int):
        self.data, self.mesh, self.eval_batch_size = data, mesh, eval_batch_size

    def replicated(self, tree):
        """``tree`` on every device of the mesh (unchanged without one)."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def init_state(self, program: Program, seeds):
        return self.replicated(_step.init_seeds(program, np.asarray(seeds, np.uint32)))

    @functools.cached_property
    def train_arrays(self):
        """The training set on the devices (None for a task that generates its batches)."""
        if self.data.train is None:
            return None
        return self.replicated({k: jnp.asarray(v) for k, v in self.data.train.items()})

    def train_chunk(self, program: Program, state, first_step: int, num_steps: int):
        first = jnp.int32(first_step)
        return _step.train_chunk(program, state, first, num_steps, self.train_arrays)

    def trace_training(self, program: Program, abstract) -> None:
        jax.eval_shape(
            lambda state, arrays: _step.train_chunk(program, state, jnp.int32(0), 1, arrays),
            abstract,
            self.train_arrays,
        )

    @functools.cached_property
    def eval_batches(self):
        """The eval set padded to whole batches (nb, eb, ...) plus a ``weight`` mask."""
        devices = 1 if self.mesh is None else self.mesh.size
        batches = _padded_eval(self.data.eval, self.eval_batch_size, devices)
        return self.replicated({k: jnp.asarray(v) for k, v in batches.items()})

    def host(self, tree):
        """What the run directory's writer finishes with (the summary, the analysis)."""
        return tree

    def writer_device(self):
        """Where the writer finishes a run."""
        return contextlib.nullcontext()


class Fed(Local):
    """jax.distributed, several processes: each feeds the rows its devices hold."""

    def __init__(self, data, mesh, eval_batch_size: int):
        super().__init__(data, mesh, eval_batch_size)
        self.processes = jax.process_count()

    def replicated(self, tree):
        """Every process holds the whole value: a global replicated array."""
        sharding = NamedSharding(self.mesh, P())
        return jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
        )

    def _rows(self, size: int) -> tuple[int, int]:
        """(first, end) of the rows of a batch of ``size`` that this process's devices
        hold on the mesh."""
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

    def writer_device(self):
        """The process-local work (batch making, finishing) runs on its first device."""
        return jax.default_device(jax.local_devices()[0])

    def init_state(self, program: Program, seeds):
        with self.writer_device():
            state = _step.init_seeds(program, np.asarray(seeds, np.uint32))
            return self.replicated(jax.tree.map(np.asarray, state))

    @functools.cached_property
    def train_arrays(self):
        """The training set on this process's first device (it makes its own rows)."""
        if self.data.train is None:
            return None
        arrays = {k: np.asarray(v) for k, v in self.data.train.items()}
        return jax.device_put(arrays, jax.local_devices()[0])

    def _batches(self, program: Program, rng, first_step: int, num_steps: int):
        """Every seed's batches of the chunk as global arrays (S, num_steps, B, ...)
        built from the rows each process makes."""
        rows = self._rows(program.batch_size)
        with self.writer_device():
            local = _step.local_batches(
                program, rng, np.int32(first_step), num_steps, rows, self.train_arrays
            )
        return self._global(local, P(None, None, "data"), {2: program.batch_size})

    def train_chunk(self, program: Program, state, first_step: int, num_steps: int):
        rng = np.asarray(state["rng"])  # replicated: every process holds it whole
        batches = self._batches(program, rng, first_step, num_steps)
        return _step.train_chunk_fed(program, state, np.int32(first_step), batches)

    def trace_training(self, program: Program, abstract) -> None:
        rows = (0, program.batch_size)
        batches = jax.eval_shape(
            lambda rng, arrays: _step.local_batches(program, rng, 0, 1, rows, arrays),
            abstract["rng"],
            self.train_arrays,
        )
        jax.eval_shape(
            lambda s, b: _step.train_chunk_fed(program, s, np.int32(0), b), abstract, batches
        )

    @functools.cached_property
    def eval_batches(self):
        """Each process hands over the rows of the padded eval batches its devices hold."""
        batches = _padded_eval(self.data.eval, self.eval_batch_size, self.mesh.size)
        size = batches["weight"].shape[1]
        first, end = self._rows(size)
        local = {k: v[:, first:end] for k, v in batches.items()}
        return self._global(local, P(None, "data"), {1: size})

    def host(self, tree):
        """Host copies of a replicated tree (the writer finishes on its own device)."""
        return jax.tree.map(np.asarray, tree)


def feed(data, mesh, eval_batch_size: int) -> Local:
    """The data source: ``Fed`` under jax.distributed with several processes and a mesh,
    else ``Local``."""
    if mesh is not None and jax.process_count() > 1:
        return Fed(data, mesh, eval_batch_size)
    return Local(data, mesh, eval_batch_size)
