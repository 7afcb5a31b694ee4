"""Checkpoints of a run: an orbax ``CheckpointManager`` that keeps the last k and the best.

A checkpoint holds two items: ``state`` (parameters, optimizer state and the per-seed
RNG keys, as arrays, saved with orbax's standard handler: tensorstore files, no pickle)
and ``meta`` (JSON: the step, the data position, the early-stopping counters and the
metrics at that step). Saves are asynchronous and atomic: a save interrupted by a kill
leaves a temporary folder (``<step>.orbax-checkpoint-tmp``) that readers ignore and the
next writer removes, never a half checkpoint. A kill while an old step is being deleted
can leave that step half gone; it is never chosen as the best and is deleted at the next
save.

A run that another worker may take over (a sweep point) passes a ``guard``, called
before every save and again just before a save commits: once it raises, this manager
writes nothing more, and a save still in flight is dropped instead of committed (its
temporary folder is its own, so the worker now saving the same step is never disturbed).
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import shutil
import textwrap
import uuid
from collections.abc import Callable

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


class _GuardedRename(ocp.path.atomicity.AtomicRenameTemporaryPath):
    """orbax's atomic rename for a manager with a guard: the temporary folder is the
    manager's own (``<step>.orbax-checkpoint-tmp-<token>``: readers ignore it and the next
    writer's clean-up removes it, like orbax's), and the rename that commits a step (or
    an item inside it) first calls the guard; what it raises goes to orbax, which reports
    it at the manager's next save or wait (``Checkpoints.close`` removes the folder).

    orbax builds temporary paths through class methods, so each manager subclasses this
    with its ``token`` and ``guard``.
    """

    token = ""
    guard: Callable[[], None] = staticmethod(lambda: None)

    @classmethod
    def from_final(cls, final_path, **kwargs):
        suffix = f"{ocp.path.atomicity.TMP_DIR_SUFFIX}-{cls.token}"
        return cls(final_path.parent / f"{final_path.name}{suffix}", final_path, **kwargs)

    async def finalize(self):
        type(self).guard()
        await super().finalize()


class _SilentWhileRefused(logging.Filter):
    """Drops orbax's warnings and errors (tracebacks of the save it dropped) once the
    guard refuses: the run stops with the guard's own error instead."""

    def __init__(self, refused: Callable[[], bool]):
        super().__init__()
        self.refused = refused

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or not self.refused()


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
      guard: called before every save and just before a save commits; whatever it raises
        (a sweep worker's ``ClaimLost``) stops the writing: no more saves, the save in
        flight is dropped, and ``save``, ``wait`` and ``close`` raise the guard's error in
        place of orbax's.
    """

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        keep: int = 3,
        best_metric: str = "eval/loss",
        mode: str = "min",
        read_only: bool = False,
        guard: Callable[[], None] | None = None,
    ):
        self.directory = pathlib.Path(directory).absolute()
        self.keep = keep
        self.best_metric = best_metric
        self.mode = mode
        self.guard = guard
        temporary_path_class, self._silence = None, None
        if guard is not None:
            self._token = uuid.uuid4().hex[:12]
            temporary_path_class = type(
                "_GuardedRename",
                (_GuardedRename,),
                {"token": self._token, "guard": staticmethod(guard)},
            )
        options = ocp.CheckpointManagerOptions(
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=not read_only,
            save_interval_steps=0 if read_only else 1,  # what orbax sets, with a warning
            temporary_path_class=temporary_path_class,
        )
        # Opening read-only is what we asked for: orbax's warning that the directory is
        # read-only would only be noise on every load_run (absl logs through "absl").
        quiet = _absl_below_error() if read_only else contextlib.nullcontext()
        with quiet:
            self.manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "meta")
            )
        self._scores: dict[int, float | None] = {}
        if guard is not None:
            self._silence = _SilentWhileRefused(self._refused)
            logging.getLogger("absl").addFilter(self._silence)

    def _check(self) -> None:
        if self.guard is not None:
            self.guard()

    def _refused(self) -> bool:
        try:
            self._check()
        except Exception:  # noqa: BLE001 - any refusal of the guard counts
            return True
        return False

    @contextlib.contextmanager
    def _guarded(self):
        """orbax's error of a save the guard dropped becomes the guard's own error."""
        try:
            yield
        except Exception:
            self._check()
            raise

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
        self._check()
        with self._guarded():  # waits for the previous save, which the guard may drop
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
        self._scores[step] = float(metrics[self.best_metric])
        self._check()
        self._prune(newest=step)

    def _prune(self, newest: int) -> None:
        steps = sorted(set(self.manager.all_steps()) | {newest})
        keep = set(steps[-self.keep :])
        best = self.best_step(steps)
        if best is not None:
            keep.add(best)
        # ``newest`` is still being written in the background: the newest committed step
        # stays until the next save (when orbax has committed this one), so a kill now
        # always leaves a checkpoint to resume from (with keep=1 it was deleted here).
        committed = [step for step in steps if step != newest]
        if committed:
            keep.add(committed[-1])
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
        with self._guarded():
            self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves (and orbax's background clean-up), then close: nothing of
        orbax's async machinery outlives the manager to fail at interpreter exit, also
        when the guard dropped a save; the temporary folder of a dropped save (this
        manager's own) is removed once nothing of orbax's writes into it any more."""
        try:
            self.wait()
        finally:
            try:
                with self._guarded():  # orbax may raise the dropped save's error again
                    self.manager.close()
            finally:
                if self._silence is not None:
                    logging.getLogger("absl").removeFilter(self._silence)
                    if self._refused():
                        suffix = f"{ocp.path.atomicity.TMP_DIR_SUFFIX}-{self._token}"
                        for folder in self.directory.glob(f"*{suffix}"):
                            shutil.rmtree(folder, ignore_errors=True)


def open_checkpoints(run_dir, experiment, *, read_only: bool = False, guard=None) -> Checkpoints:
    """The ``checkpoints/`` folder of the run in ``run_dir``, keeping what ``experiment``'s
    config asks (``checkpoint.keep`` and the best by its main metric); ``guard`` as for
    ``Checkpoints``."""
    metric, mode = experiment.main_metric()
    return Checkpoints(
        pathlib.Path(run_dir) / _rundir.CHECKPOINTS,
        keep=experiment.config.checkpoint.keep,
        best_metric=metric,
        mode=mode,
        read_only=read_only,
        guard=guard,
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
