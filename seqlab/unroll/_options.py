"""``Xla``: the settings of the ``lax.scan`` implementation, as ``kernels.Pallas`` and
``parallel.Parallel`` are for theirs."""

from __future__ import annotations

import dataclasses

from seqlab._checks import check_one_of, require

BACKWARDS = ("derived", "autodiff")


@dataclasses.dataclass(frozen=True)
class Xla:
    """How ``seqlab.scan(..., implementation=Xla(...))`` unrolls a cell with ``lax.scan``.

    ``implementation="xla"`` is ``Xla()`` and ``"xla-autodiff"`` is
    ``Xla(backward="autodiff")``. The object is hashable and compared by value: it is part
    of the static key of the programs it builds, so two equal objects share them.

    Args:
      unroll: steps per loop iteration (``lax.scan``'s ``unroll``; True unrolls fully).
        None: the per-backend default of ``seqlab/unroll/_policy.py``.
      hoist: compute the input projection of all steps as one matmul before the loop
        (cells with ``project_inputs`` only). None: the per-backend default of
        ``seqlab/unroll/_policy.py``.
      remat: run time in blocks under ``jax.checkpoint`` (True: blocks of about sqrt(T)
        steps; an int: the block length; False: none).
      backward: ``"derived"``: the built-in cells (``RNN``, ``LSTM``, ``GRU``, ``MGU``,
        also in ``TrainableInitialState``) are differentiated by their hand-derived
        backward (``seqlab/unroll/_bptt.py``; reverse mode only), every other cell by
        autodiff. ``"autodiff"``: JAX's autodiff through the loop for every cell (forward
        mode too).
      batch_sharded: the batch axis is sharded over devices (data parallelism under a
        mesh). The hand-derived backward then contracts its weight gradients over time
        and batch without merging the two axes, so that each device sums its own part and
        only the (I, J) results are all-reduced: a merged T·B axis cannot carry a batch
        sharding, and the partitioner all-gathers every device's activations to build it.
        Leave it False on one device, where the merged form is XLA's fastest. It changes
        nothing for ``backward="autodiff"``. Example, a batch sharded over local devices::

            mesh = jax.make_mesh((jax.device_count(),), ("batch",))
            xs = jax.device_put(xs, NamedSharding(mesh, PartitionSpec("batch")))
            grads = jax.jit(jax.grad(lambda p: jnp.sum(seqlab.scan(
                cell, p, xs, implementation=seqlab.unroll.Xla(batch_sharded=True))[0])))(params)
    """

    unroll: int | bool | None = None
    hoist: bool | None = None
    remat: bool | int = False
    backward: str = "derived"
    batch_sharded: bool = False

    def __post_init__(self):
        require(
            self.unroll is None
            or isinstance(self.unroll, bool)
            or (isinstance(self.unroll, int) and self.unroll >= 1),
            f"unroll must be None, a positive int or a bool, got {self.unroll!r}",
        )
        require(
            self.hoist is None or isinstance(self.hoist, bool),
            f"hoist_input_projection must be None, True or False, got {self.hoist!r}",
        )
        require(
            isinstance(self.remat, bool) or (isinstance(self.remat, int) and self.remat >= 1),
            f"remat must be a bool or a positive int (the block length), got {self.remat!r}",
        )
        check_one_of("backward", self.backward, BACKWARDS)
        require(
            isinstance(self.batch_sharded, bool),
            f"batch_sharded must be a bool, got {self.batch_sharded!r}",
        )

    @property
    def name(self) -> str:
        """The implementation's name: ``"xla"`` or ``"xla-autodiff"``."""
        return "xla" if self.backward == "derived" else "xla-autodiff"
