"""Budgeted hyperparameter search on Optuna: ``seqlab tune``.

``tune(config, space, out_dir, trials=N)`` runs an Optuna study over a search space
(``_space``): each trial is an ordinary run directory ``out_dir/trials/<number>/`` that
``load_run``, ``report`` and ``analyze`` open; the study itself is Optuna's storage (by
default the SQLite file ``out_dir/study.db``; any Optuna database URL, or a journal file
for shared filesystems without a database). ``out_dir/tune.json`` keeps what the study
was created with (the experiment's config, the space, the metric and direction, the
seeds per trial) and its name and storage: a study is never continued with another, and
nothing is written until every check has passed and the storage has opened.

- **Pruning** uses seqlab's own evaluations: after every evaluation (every
  ``train.log_every`` steps) a trial reports the metric to Optuna and stops when the
  pruner says so; its run directory keeps its records and says ``"status": "pruned"``
  in ``summary.json``.
- **Seeds**: ``seeds=K`` trains K seeds per trial as one program (``train.num_seeds``,
  seeds ``seed .. seed + K - 1`` as in a sweep point) and reports their mean.
  ``confirm(out_dir, seeds=10)`` re-runs the best trial with seeds none of the trials saw
  and writes the mean with a 95% interval over seeds to ``confirm/trial<N>-seeds<K>.json``.
- **Workers**: any number of processes may run ``tune`` on one study and one
  ``out_dir``; each asks Optuna for the next trial, so every trial runs once, and the
  budget counts the study's original trials (at most ``trials``; a retry is not a new
  trial). The sampler is seeded per trial (``--sampler-seed`` and the trial's number), so
  workers never draw the same random numbers and one worker repeats a seeded study. A
  worker that finds the budget spent while trials still run waits for them (retrying any
  whose worker dies) before it writes the report and returns.
- **Faults**: a running trial records Optuna's heartbeat every ``heartbeat_interval``
  seconds. A worker that is killed stops beating; after ``grace_period`` seconds the next
  worker that asks for a trial marks it failed (``optuna.storages.fail_stale_trials``),
  Optuna enqueues a retry with the same parameters (``RetryHeartbeatStaleTrialCallback``),
  and the worker that picks the retry copies the failed trial's run directory to its own
  and resumes it from the last checkpoint (metric records continue: no step twice, none
  lost). A worker that was only frozen and comes back finds its trial failed and writes
  nothing more into its directory (its guard). Optuna's journal storage has no heartbeat:
  there a killed worker's trial stays running until the study is continued with
  ``retry_running=True`` (``seqlab tune DIR --retry-running``) while no worker runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import math
import os
import pathlib
import shutil
import threading
import time
import warnings

import numpy as np

from seqlab.experiments import _distributed, _rundir
from seqlab.experiments._config import apply_overrides, structured
from seqlab.experiments._run import resume, run
from seqlab.experiments._space import Space, load_space, override
from seqlab.experiments._study import (
    CONFIRM,
    DIRECTIONS,
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    MAX_RETRY,
    PRUNERS,
    SAMPLERS,
    TRIALS,
    TUNE,
    Settings,
    check_plan,
    check_sampler,
    check_study,
    infer_direction,
    is_heartbeat_enabled,
    load_existing,
    load_optuna,
    normalize_storage,
    open_study,
    quiet_experimental,
    read_plan,
    space_of,
    storage_url,
    study_record,
    study_summary,
    write_plan,
)
from seqlab.experiments._tune_report import report_study

__all__ = ["PRUNERS", "SAMPLERS", "confirm", "continue_study", "prepare_study", "tune"]


# ----------------------------------------------------------------------- workers


class _Heartbeat:
    """Optuna's heartbeat of one running trial, from a thread (what ``study.optimize``
    does for its trials; ``tune`` runs its own loop)."""

    def __init__(self, storage, trial_id: int, interval: float):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a busy database: the next beat retries
                self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(self._interval):
                return

    def __enter__(self):
        if hasattr(self._storage, "record_heartbeat"):
            self._storage.record_heartbeat(self._trial_id)  # the first beat, before anything
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _single_process() -> None:
    """Refuse a study under jax.distributed with several processes: each would ask Optuna
    for a trial of its own while their training expects one computation."""
    if _distributed.multiprocess():
        raise ValueError(
            "seqlab tune runs one process per worker: under SEQLAB_DISTRIBUTED=1 with several "
            "processes, start one tune worker per job instead (each on its own devices)"
        )


class TrialLost(Exception):
    """The trial this worker runs was marked failed by another worker (no heartbeat)."""


def _retry_source(trial) -> int | None:
    history = trial.system_attrs.get("retry_history") or []
    return history[-1] if history else None


def _is_original(trial) -> bool:
    """A trial of the budget: not a retry, not one asked for past the budget (surplus)."""
    return not trial.system_attrs.get("retry_history") and not trial.user_attrs.get("surplus")


def _fail_stale(study, settings: Settings, retry_running: bool) -> None:
    """Fail (and queue a retry of) every running trial whose worker is dead: those whose
    heartbeat is stale (Optuna's check), those that never had one though they started
    more than the grace period ago (a worker killed between asking for the trial and its
    first beat: Optuna's check skips them), and with ``retry_running`` all of them."""
    optuna = load_optuna()
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)
        now = datetime.datetime.now()
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        heartbeat = is_heartbeat_enabled(study)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            started = trial.datetime_start or now
            silent = heartbeat and not trial.user_attrs.get("beating")
            silent = silent and (now - started).total_seconds() > settings.grace_period
            if not (retry_running or silent):
                continue
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                if study._storage.set_trial_state_values(
                    trial._trial_id, state=optuna.trial.TrialState.FAIL
                ):
                    retry(study, study._storage.get_trial(trial._trial_id))


def prepare_study(
    config,
    space,
    out_dir,
    *,
    trials: int,
    study: str | None = None,
    storage: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    metric: str = "eval/loss",
    direction: str | None = None,
    seeds: int = 1,
    sampler_seed: int = 0,
    prune_warmup: int = 0,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    grace_period: float = GRACE_PERIOD,
):
    """Check everything, then create the study (or check that the one in ``out_dir`` and
    in the storage is this one) and write ``tune.json``; nothing trains, and nothing is
    written until every check has passed and the storage has opened. Returns the pieces
    ``tune`` works with: (study, record, settings, space, config)."""
    _single_process()
    config = structured(config)
    space = load_space(space) if not isinstance(space, Space) else space
    direction = direction or infer_direction(metric)
    if direction not in DIRECTIONS:
        raise ValueError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be an integer >= 1, got {seeds!r}")
    out_dir = pathlib.Path(out_dir)
    settings = Settings(
        trials=trials,
        study=study or out_dir.absolute().name,
        storage=normalize_storage(storage),
        sampler=sampler,
        pruner=pruner,
        sampler_seed=sampler_seed,
        prune_warmup=prune_warmup,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
    )
    settings.check()
    check_sampler(settings, space)
    check_study(config, space, metric, seeds)
    storage_url(out_dir, settings)  # a default storage path it cannot hold: refused now
    record = study_record(config, space, metric, direction, seeds)
    check_plan(out_dir, record, settings)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)  # the default storage lives in it
    try:
        the_study = open_study(out_dir, record, settings, space, config, create=True)
    except ValueError:
        if created:  # leave nothing behind (but another worker's files)
            (out_dir / "study.db.lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    write_plan(out_dir, record, settings)
    return the_study, record, settings, space, config


def tune(
    config,
    space,
    out_dir,
    *,
    trials: int,
    retry_running: bool = False,
    progress: bool | None = None,
    echo=print,
    **options,
) -> dict:
    """Run (or continue, or join as one more worker) the study over ``space`` (a Space or
    the path of a space file) into ``out_dir``; returns ``study_summary(out_dir)``.
    ``options``: study, storage, sampler, pruner, metric, direction, seeds, sampler_seed,
    prune_warmup, heartbeat_interval, grace_period (``prepare_study``). See the module
    docstring."""
    pieces = prepare_study(config, space, out_dir, trials=trials, **options)
    return _work(*pieces, pathlib.Path(out_dir), retry_running, progress, echo)


def open_existing(out_dir, **changes):
    """(study, record, settings, space, config) of the study in ``out_dir``, with the
    settings it last ran with and ``changes`` (those not None) applied; its name and
    storage cannot change."""
    _single_process()
    out_dir = pathlib.Path(out_dir)
    record, settings = read_plan(out_dir)
    fixed = sorted(k for k in ("study", "storage") if changes.get(k) is not None)
    if fixed:
        raise ValueError(
            f"a study's {' and '.join(fixed)} cannot change: {out_dir} continues with its own"
        )
    unknown = sorted(set(changes) - set(Settings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"continuing a study takes no {', '.join(unknown)}")
    settings = dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})
    settings.check()
    space = space_of(record)
    check_sampler(settings, space)
    config = _rundir.config_from_dict(f"{out_dir / TUNE}: its base config", record["base"])
    the_study = open_study(out_dir, record, settings, space, config, create=False)
    write_plan(out_dir, record, settings)
    return the_study, record, settings, space, config


def continue_study(
    out_dir, *, retry_running: bool = False, progress: bool | None = None, echo=print, **changes
) -> dict:
    """Continue the study in ``out_dir`` (as another worker, or after a crash) with the
    settings it last ran with, ``changes`` (e.g. ``trials=40``) applied."""
    pieces = open_existing(out_dir, **changes)
    return _work(*pieces, pathlib.Path(out_dir), retry_running, progress, echo)


def _ask(study, settings: Settings, space: Space, out_dir: pathlib.Path):
    """The next trial for this worker (a queued retry first), or None when the budget of
    original trials is spent. With ``space.balance`` the next original trial is queued
    with its turn's choice and asked for under a lock (one worker at a time), so that no
    other worker takes it."""
    states = load_optuna().trial.TrialState
    lock = open(out_dir / ".ask.lock", "a") if space.balance else contextlib.nullcontext()
    with lock:
        if space.balance:
            fcntl.flock(lock, fcntl.LOCK_EX)
        existing = study.get_trials(deepcopy=False)
        waiting = any(t.state == states.WAITING for t in existing)
        originals = sum(1 for t in existing if _is_original(t))
        if not waiting:
            if originals >= settings.trials:
                return None
            if settings.sampler == "grid" and study.sampler.inner.is_exhausted(study):
                return None
            if space.balance:
                study.enqueue_trial(space.balanced_choice(originals))
        with warnings.catch_warnings():
            # the heartbeat is this loop's (_Heartbeat), as study.optimize would run it
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return study.ask()


def _work(study, record, settings, space, config, out_dir, retry_running, progress, echo) -> dict:
    optuna = load_optuna()
    states = optuna.trial.TrialState
    started = time.perf_counter()
    ran = 0
    waited = False
    heartbeat = is_heartbeat_enabled(study)
    while True:
        _fail_stale(study, settings, retry_running)
        retry_running = False  # only the trials running when the worker started
        trial = _ask(study, settings, space, out_dir)
        if trial is None:
            running = study.get_trials(deepcopy=False, states=(states.RUNNING,))
            if not running or not heartbeat:
                if running:
                    echo(
                        f"{len(running)} trial(s) still marked running; this storage has no "
                        "heartbeat: if their workers died, `seqlab tune DIR --retry-running` "
                        "(with no other worker running) retries them"
                    )
                break
            if not waited:  # stay, to retry any of them whose worker dies
                echo(
                    f"waiting for {len(running)} running trial(s) (a dead worker's is retried "
                    f"here once silent for {settings.grace_period:g} s)"
                )
                waited = True
            time.sleep(min(settings.heartbeat_interval, 5.0))
            continue
        waited = False
        frozen = study._storage.get_trial(trial._trial_id)
        if _is_original(frozen):
            before = [
                t
                for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and _is_original(t)
            ]
            if len(before) >= settings.trials:  # another worker asked for the last one first
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=states.FAIL)
                continue
        _run_trial(study, trial, frozen, record, settings, space, config, out_dir, progress, echo)
        ran += 1
    if settings.sampler == "grid" and study.sampler.inner.is_exhausted(study):
        echo("the grid is exhausted")
    echo(f"this worker ran {ran} trial(s) in {time.perf_counter() - started:.0f} s")
    path = report_study(out_dir)
    summary = study_summary(out_dir, study)
    best = summary.get("best")
    if best:
        echo(
            f"best: trial {best['number']} {record['metric']} {best['value']:.4g} "
            f"({' '.join(o for o in best['overrides'] if o not in space.fixed)})"
        )
    echo(f"report: {path}")
    return summary


def _run_trial(study, trial, frozen, record, settings, space, config, out_dir, progress, echo):
    optuna = load_optuna()
    states = optuna.trial.TrialState
    metric, seeds = record["metric"], record["seeds"]
    label = f"trial {trial.number}"
    run_dir = out_dir / TRIALS / str(trial.number)
    source = _retry_source(frozen)
    storage = study._storage
    # the guard reads the database, not this process's cache (which an RDB storage has, as
    # _backend; a journal storage replays the shared file itself)
    backend = getattr(storage, "_backend", None)
    backend = backend if hasattr(backend, "get_trial") else storage
    reported: set[int] = set()

    def report_value(step: int, value) -> None:
        if step not in reported and value is not None and math.isfinite(value):
            trial.report(float(value), step)
            reported.add(step)

    def on_eval(step: int, rec: dict) -> bool:
        report_value(step, rec.get(metric))
        return trial.should_prune()

    def guard() -> None:
        if backend.get_trial(trial._trial_id).state != states.RUNNING:
            raise TrialLost()

    started = time.perf_counter()
    try:
        # Everything after study.ask() runs under the heartbeat, and any error fails the
        # trial: no trial is left running with nobody to retry it.
        with _Heartbeat(storage, trial._trial_id, settings.heartbeat_interval):
            # "beating": its heartbeat exists, so Optuna's staleness check covers it
            trial.set_user_attr("beating", True)
            values = space.suggest(trial)
            overrides = [*space.overrides(values), f"train.num_seeds={seeds}"]
            trial.set_user_attr("overrides", space.overrides(values))
            trial.set_user_attr("run_dir", f"{TRIALS}/{trial.number}")
            source_dir = None if source is None else out_dir / TRIALS / str(source)
            if source_dir is not None and (source_dir / _rundir.CONFIG).exists():
                echo(f"{label}: retry of trial {source}, resumed from its last checkpoint")
                trial.set_user_attr("retry_of", source)
                _copy_run(source_dir, run_dir)
                for rec in _rundir.read_metrics(run_dir / _rundir.METRICS):
                    report_value(rec["step"], rec.get(metric))
                summary = resume(
                    run_dir, progress=progress, echo=echo, guard=guard, on_eval=on_eval
                )
            else:
                echo(f"{label}: {_shown(values)}")
                experiment_config = apply_overrides(config, overrides)
                summary = run(
                    experiment_config,
                    run_dir,
                    progress=progress,
                    echo=echo,
                    guard=guard,
                    on_eval=on_eval,
                )
    except TrialLost:
        echo(f"{label}: marked failed by another worker (no heartbeat); left to its retry")
        return
    except KeyboardInterrupt:
        # failed now and queued again, so that continuing the study resumes it from its
        # checkpoint at once instead of after the grace period
        with contextlib.suppress(Exception), quiet_experimental():
            study.tell(trial, state=states.FAIL)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            retry(study, study._storage.get_trial(trial._trial_id))
        raise
    except ValueError as error:
        message = " ".join(str(error).split())
        echo(f"{label}: failed: {message}")
        _tell(study, trial, echo, label, error=message[:500], state=states.FAIL)
        return
    except Exception as error:
        # as study.optimize does: the trial fails (not retried) and the worker stops, so a
        # bug does not spend the budget on trials that all fail the same way
        with contextlib.suppress(Exception):
            _tell(study, trial, echo, label, error=f"{type(error).__name__}: {error}"[:500])
        raise
    status = summary["status"]
    value = summary["final"].get(metric)
    attrs = {
        "status": status,
        "steps": summary["step"],
        "seconds": round(time.perf_counter() - started, 3),
        "elapsed": summary["final"].get("elapsed"),
    }
    if status == "pruned":
        echo(f"{label}: pruned at step {summary['step']} ({metric} {value:.4g})")
        _tell(study, trial, echo, label, state=states.PRUNED, **attrs)
    elif status == "diverged" or value is None or not math.isfinite(value):
        echo(f"{label}: {status}, {metric} {value}: counted as failed")
        _tell(study, trial, echo, label, state=states.FAIL, **attrs)
    else:
        echo(f"{label}: {metric} {value:.4g} ({status} at step {summary['step']})")
        _tell(study, trial, echo, label, value=value, **attrs)


def _tell(study, trial, echo, label, *, state=None, value=None, **attrs) -> None:
    """Record ``attrs`` and end the trial; one that another worker failed meanwhile (its
    heartbeat went stale while this worker was frozen) is left to its retry."""
    optuna = load_optuna()
    state = state or (optuna.trial.TrialState.COMPLETE if value is not None else None)
    state = state or optuna.trial.TrialState.FAIL
    try:
        for key, attr in attrs.items():
            trial.set_user_attr(key, attr)
        if state == optuna.trial.TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        echo(f"{label}: marked failed by another worker meanwhile; left to its retry")


def _shown(values: dict) -> str:
    return " ".join(override(k, v) for k, v in values.items()) or "base"


def _copy_run(source: pathlib.Path, run_dir: pathlib.Path) -> None:
    """Copy a failed trial's run directory to its retry's (a temporary name, then a
    rename: a kill mid-copy leaves no half directory under the retry's name)."""
    if run_dir.exists():
        raise ValueError(f"{run_dir} already exists: cannot copy trial {source.name} into it")
    tmp = run_dir.with_name(f".{run_dir.name}.{os.getpid()}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    (tmp / _rundir.SUMMARY).unlink(missing_ok=True)
    os.rename(tmp, run_dir)


# ----------------------------------------------------------------------- results


def _t_quantile(p: float, dof: int) -> float:
    """The p-quantile of Student's t with ``dof`` degrees of freedom (bisection on its CDF,
    the density integrated by Simpson's rule; 1e-6 accurate for the p we use)."""
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 2001)
        density = np.exp(log_norm - (dof + 1) / 2 * np.log1p(grid**2 / dof))
        h = x / 2000
        area = (
            h
            / 3
            * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
        )
        return 0.5 + area

    low, high = 0.0, 100.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def confirm(out_dir, *, trial="best", seeds: int = 10, progress=None, echo=print) -> dict:
    """Re-run a trial of the study (``"best"``, or its number) with ``seeds`` seeds that
    none of the trials trained with (they follow the trials' seeds), into
    ``out_dir/confirm/trial<N>-seeds<K>/``, and writes ``confirm/trial<N>-seeds<K>.json``:
    the per-seed final metric, their mean, standard deviation and a 95% t-interval of the
    mean."""
    _single_process()
    optuna = load_optuna()
    out_dir = pathlib.Path(out_dir)
    record, settings = read_plan(out_dir)
    if not isinstance(seeds, int) or seeds < 2:
        raise ValueError(f"--confirm needs --seeds >= 2 for an interval, got {seeds!r}")
    study, _, _ = load_existing(out_dir)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if trial == "best":
        if not complete:
            raise ValueError(f"{out_dir}: no trial has completed yet; nothing to confirm")
        sign = 1.0 if record["direction"] == "minimize" else -1.0
        chosen = min(complete, key=lambda t: sign * t.value)
    else:
        try:
            number = int(trial)
        except ValueError:
            raise ValueError(f"--confirm takes best or a trial number, got {trial!r}") from None
        matches = [t for t in complete if t.number == number]
        if not matches:
            raise ValueError(f"--confirm {number}: no completed trial with that number")
        chosen = matches[0]
    config = _rundir.config_from_dict(f"{out_dir / TUNE}: its base config", record["base"])
    # after every seed any trial trained (a fixed `seed` override included)
    starts = {
        int(apply_overrides(config, t.user_attrs["overrides"]).seed)
        for t in study.get_trials(deepcopy=False)
        if "overrides" in t.user_attrs
    } or {int(config.seed)}
    first_seed = max(starts) + record["seeds"]
    overrides = [
        *chosen.user_attrs.get("overrides", []),
        f"train.num_seeds={seeds}",
        f"seed={first_seed}",
    ]
    run_config = apply_overrides(config, overrides)
    run_dir = out_dir / CONFIRM / f"trial{chosen.number}-seeds{seeds}"
    echo(f"confirming trial {chosen.number} with seeds {first_seed} .. {first_seed + seeds - 1}")
    if (run_dir / _rundir.CONFIG).exists():
        summary = resume(run_dir, progress=progress, echo=echo)
    else:
        summary = run(run_config, run_dir, progress=progress, echo=echo)
    metric = record["metric"]
    values = summary.get("final_per_seed", {}).get(metric)
    if values is None:
        raise ValueError(f"{run_dir}: the confirmation run has no per-seed {metric}")
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        echo(f"warning: {int(np.sum(~np.isfinite(values)))} of {seeds} seeds ended non-finite")
    mean, std = float(values.mean()), float(values.std(ddof=1))
    half = _t_quantile(0.975, len(values) - 1) * std / math.sqrt(len(values))
    result = {
        "trial": chosen.number,
        "overrides": chosen.user_attrs.get("overrides", []),
        "metric": metric,
        "search_value": chosen.value,
        "search_seeds": record["seeds"],
        "seeds": [first_seed + i for i in range(seeds)],
        "values": [float(v) for v in values],
        "status": summary["status"],
        "mean": mean,
        "std": std,
        "ci95": [mean - half, mean + half],
        "run_dir": str(run_dir.relative_to(out_dir)),
    }
    _rundir.write_json(out_dir / CONFIRM / f"trial{chosen.number}-seeds{seeds}.json", result)
    echo(
        f"trial {chosen.number}: {metric} {mean:.4g} ± {half:.2g} (95% interval over {seeds} "
        f"fresh seeds; the search's {record['seeds']}-seed value was {chosen.value:.4g})"
    )
    return result
