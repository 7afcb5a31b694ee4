"""Checkpoints of a run: an orbax ``CheckpointManager`` that keeps the last k and the best.

A checkpoint holds two items: ``state`` (parameters, optimizer state and the per-seed
RNG keys, as arrays, saved with orbax's standard handler: tensorstore files, no pickle)
and ``meta`` (JSON: the step, the data position, the early-stopping counters and the
metrics at that step). Saves are asynchronous and atomic: a save interrupted by a kill
leaves a temporary folder that is ignored and cleaned up, never a half checkpoint.
"""

from __future__ import annotations

import pathlib

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN


class Checkpoints:
    """The ``checkpoints/`` folder of a run.

    Args:
      directory: where the steps live (created unless ``read_only``).
      keep: how many of the latest checkpoints to keep.
      best_metric: the metric (a key of the metrics passed to ``save``) whose best value's
        checkpoint is kept as well.
      mode: "min" or "max" for ``best_metric``.
      read_only: open an existing folder for reading (``load_run``): nothing is written.
    """

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        keep: int = 3,
        best_metric: str = "eval/loss",
        mode: str = "min",
        read_only: bool = False,
    ):
        self.directory = pathlib.Path(directory).absolute()
        self.best_metric = best_metric
        self.mode = mode
        policy = AnyPreservationPolicy(
            [
                LatestN(n=keep),
                BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    # BestN keeps the end of the sorted order: descending for "min".
                    reverse=mode == "min",
                    n=1,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=not read_only,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def save(self, step: int, state, meta: dict, metrics: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            metrics={self.best_metric: float(metrics[self.best_metric])},
            force=True,
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best ``best_metric`` (recorded in each step's meta)."""
        scored = []
        for step in self.steps():
            value = self.restore_meta(step).get("metrics", {}).get(self.best_metric)
            if value is not None:
                scored.append((value if self.mode == "min" else -value, step))
        return min(scored)[1] if scored else None

    def restore_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored.meta)

    def restore(self, step: int, abstract_state):
        """(state, meta) of ``step``; ``abstract_state`` is a tree of ShapeDtypeStructs."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, dict(restored.meta)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
