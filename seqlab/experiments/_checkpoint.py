"""Checkpoints of a run: an orbax ``CheckpointManager`` that keeps the last k and the best.

A checkpoint holds two items: ``state`` (parameters, optimizer state and the per-seed
RNG keys, as arrays, saved with orbax's standard handler: tensorstore files, no pickle)
and ``meta`` (JSON: the step, the data position, the early-stopping counters and the
metrics at that step). Saves are asynchronous and atomic: a save interrupted by a kill
leaves a temporary folder that is ignored and cleaned up, never a half checkpoint. A kill
while an old step is being deleted can leave that step half gone; it is never chosen as
the best and is deleted at the next save.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import textwrap

import orbax.checkpoint as ocp

from seqlab.experiments import _rundir

# What orbax and tensorstore raise for a damaged or half-deleted step: missing files
# (OSError), unreadable JSON or arrays (ValueError, tensorstore's errors included), a
# missing item (KeyError), and a step folder without its metadata (FileNotFoundError,
# an OSError). Anything else is a bug and propagates.
DAMAGED = (OSError, ValueError, KeyError)


@contextlib.contextmanager
def _absl_below_error():
    """Drop absl's (orbax's) warnings while the block runs; errors still show."""
    logger = logging.getLogger("absl")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


class Checkpoints:
    """The ``checkpoints/`` folder of a run.

    Keeps the last ``keep`` steps and the step with the best ``best_metric``. The metric
    of each step lives in its own ``meta`` item, so the choice survives restarts (orbax's
    preservation policies hold metrics in memory only: a resumed run would keep every old
    step).

    Args:
      directory: where the steps live (created unless ``read_only``).
      keep: how many of the latest checkpoints to keep.
      best_metric: the metric (a key of the metrics passed to ``save``) whose best step
        is kept as well.
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
        self.keep = keep
        self.best_metric = best_metric
        self.mode = mode
        options = ocp.CheckpointManagerOptions(
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=not read_only,
            save_interval_steps=0 if read_only else 1,  # what orbax sets, with a warning
        )
        # Opening read-only is what we asked for: orbax's warning that the directory is
        # read-only would only be noise on every load_run (absl logs through "absl").
        quiet = _absl_below_error() if read_only else contextlib.nullcontext()
        with quiet:
            self.manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "meta")
            )
        self._scores: dict[int, float | None] = {}

    def _score(self, step: int) -> float | None:
        if step not in self._scores:
            try:
                value = self.restore_meta(step).get("metrics", {}).get(self.best_metric)
            except DAMAGED:  # a step half deleted by a kill during pruning: never best
                value = None
            self._scores[step] = value
        value = self._scores[step]
        if value is None or value != value:  # missing or NaN never counts as best
            return None
        return value if self.mode == "min" else -value

    def save(self, step: int, state, meta: dict, metrics: dict) -> None:
        """Save ``step`` asynchronously, then drop steps that are neither among the last
        ``keep`` nor the best (``metrics[best_metric]`` must be in ``meta["metrics"]``)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._scores[step] = float(metrics[self.best_metric])
        self._prune(newest=step)

    def _prune(self, newest: int) -> None:
        steps = sorted(set(self.manager.all_steps()) | {newest})
        keep = set(steps[-self.keep :])
        best = self.best_step(steps)
        if best is not None:
            keep.add(best)
        for step in steps:
            if step not in keep and step != newest:
                self.manager.delete(step)
                self._scores.pop(step, None)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self, steps: list[int] | None = None) -> int | None:
        """The step with the best ``best_metric`` among ``steps`` (default: all saved)."""
        scored = []
        for step in self.steps() if steps is None else steps:
            score = self._score(step)
            if score is not None:
                scored.append((score, step))
        return min(scored)[1] if scored else None

    def metric(self, step: int) -> float | None:
        """The ``best_metric`` value saved with ``step`` (None when it has none)."""
        value = self.restore_meta(step).get("metrics", {}).get(self.best_metric)
        return None if value is None else float(value)

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
        """Finish pending saves (and orbax's background clean-up), then close: nothing of
        orbax's async machinery outlives the manager to fail at interpreter exit."""
        self.manager.wait_until_finished()
        self.manager.close()


def open_checkpoints(run_dir, experiment, *, read_only: bool = False) -> Checkpoints:
    """The ``checkpoints/`` folder of the run in ``run_dir``, keeping what ``experiment``'s
    config asks (``checkpoint.keep`` and the best by its main metric)."""
    metric, mode = experiment.main_metric()
    return Checkpoints(
        pathlib.Path(run_dir) / _rundir.CHECKPOINTS,
        keep=experiment.config.checkpoint.keep,
        best_metric=metric,
        mode=mode,
        read_only=read_only,
    )


def restore_state(checkpoints: Checkpoints, experiment, step: int):
    """(state, meta) of ``step``, restored against ``experiment``'s abstract state; a
    damaged checkpoint is a ValueError naming the step and the folder."""
    try:
        return checkpoints.restore(step, experiment.abstract_state())
    except DAMAGED as error:
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        reason = textwrap.shorten(reason, 200, placeholder=" ...")  # cut at a word
        raise ValueError(
            f"checkpoint {step} in {checkpoints.directory} cannot be restored ({reason})"
        ) from None
