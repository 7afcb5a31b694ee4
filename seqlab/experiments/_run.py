"""Run an experiment into a run directory, and resume one after a crash.

``run(config, out_dir)`` trains from step 0; ``resume(run_dir)`` restores the latest
checkpoint (parameters, optimizer state, RNG keys, step, data position, early-stopping
counters) and continues. Chunks of ``train.log_every`` steps end on multiples of
``log_every``, and checkpoints fall on multiples of it, so a resumed run replays exactly
the computation of an uninterrupted one. A run may be killed at any moment, a save in
flight included: orbax commits a checkpoint in the background while training runs on, so
``metrics.jsonl`` can hold records past the newest committed checkpoint; resume cuts them
and computes them again (each step keeps one record). Records up to that checkpoint are
never rewritten. A run with no committed checkpoint starts again from step 0.

``run`` and ``resume`` take a ``guard``: a sweep worker passes its claim's check, called
before every write to the run directory (config, metrics, checkpoints, summary, analysis,
plots) and before a checkpoint commits; whatever it raises ends the run without another
byte written (the worker that took the point over writes it).

They also take an ``on_eval``: called as ``on_eval(step, record)`` after every evaluation
(every ``train.log_every`` steps, the record just logged); when it returns True the run
stops there with status "pruned" (``seqlab tune``'s pruners), its checkpoint saved and its
records kept.

Under ``jax.distributed`` every process calls ``run`` (or ``resume``) with the same
arguments: they train together, orbax saves and restores the checkpoints collectively, and
process 0 alone writes the files (config, metrics, TensorBoard events, summary, plots,
analysis) and prints; the others return the summary it wrote.
"""

from __future__ import annotations

import pathlib
import time

import jax
import numpy as np
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from seqlab.experiments import _analyze, _distributed, _plots, _rundir
from seqlab.experiments._checkpoint import open_checkpoints, restore_state
from seqlab.experiments._config import structured, to_dict, to_yaml, valid_keys, validate
from seqlab.experiments._train import Experiment


def _check(guard) -> None:
    """Call the run's ``guard`` (if any) before a write to its directory."""
    if guard is not None:
        guard()


def run(
    config,
    out_dir,
    *,
    progress: bool | None = None,
    echo=print,
    data=None,
    guard=None,
    on_eval=None,
) -> dict:
    """Train ``config`` (an ExperimentConfig or typed DictConfig) into a new run directory
    ``out_dir``; returns the summary (also written to ``summary.json``). ``guard``: see
    the module docstring."""
    config = structured(config)
    validate(config)
    out_dir = pathlib.Path(out_dir)
    _distributed.check_same("configs", to_yaml(config))
    _distributed.check_same("run directories", str(out_dir))
    echo = _distributed.writer_echo(echo)
    if (out_dir / _rundir.CONFIG).exists():
        raise ValueError(
            f"{out_dir} already holds a run; continue it with `seqlab resume {out_dir}` or "
            "choose another --out"
        )
    # A writer killed between its temporary file and the rename leaves the temporary
    # (a sweep point whose first write was interrupted): that is not foreign content.
    leftovers = [
        path
        for path in (out_dir.iterdir() if out_dir.exists() else ())
        if not any(_rundir.is_temporary(path, of=name) for name in _rundir.RUN_FILES)
    ]
    if leftovers:
        raise ValueError(f"{out_dir} exists and is not empty; choose another --out")
    experiment = Experiment.from_config(config, data=data)
    experiment.check()  # everything that can fail does so before the first byte is written
    _distributed.barrier("run-checked")  # every process has looked before any writes
    if _distributed.is_writer():
        _check(guard)
        out_dir.mkdir(parents=True, exist_ok=True)
        _rundir.write_text(out_dir / _rundir.CONFIG, to_yaml(config))
        _rundir.write_json(out_dir / _rundir.RUN, {"config": to_dict(config)})
        _rundir.write_json(out_dir / _rundir.TASK, experiment.data.info)
    _distributed.barrier("run-created")
    state = experiment.init_state()
    return _train_loop(
        experiment,
        out_dir,
        state,
        0,
        {},
        progress=progress,
        echo=echo,
        guard=guard,
        on_eval=on_eval,
    )


# Keys of config.yaml that may differ from the config a run started with when it is
# resumed: none of them changes the computation already done. train.steps may grow or
# shrink only under the constant schedule (the others are functions of train.steps).
CHANGEABLE_ON_RESUME = ("train.steps", "train.early_stopping_patience", "checkpoint.keep")


def _check_unchanged(run_dir: pathlib.Path, config) -> bool:
    """Refuse a config.yaml edited since the run started (``run.json`` keeps that config)
    in any key but ``CHANGEABLE_ON_RESUME``; True when an allowed key changed."""
    path = run_dir / _rundir.RUN
    if not path.exists():
        return False  # a run directory from before run.json existed: nothing to compare
    started = OmegaConf.create(_rundir.read_json(path).get("config", {}))
    keys = set(valid_keys(started)) | set(valid_keys(config))
    changed = sorted(k for k in keys if OmegaConf.select(started, k) != OmegaConf.select(config, k))
    allowed = set(CHANGEABLE_ON_RESUME)
    if config.train.schedule != "constant":
        allowed.discard("train.steps")
    refused = [k for k in changed if k not in allowed]
    if refused:
        differences = ", ".join(
            f"{k} {OmegaConf.select(started, k)!r} -> {OmegaConf.select(config, k)!r}"
            for k in refused
        )
        raise ValueError(
            f"{run_dir / _rundir.CONFIG} was changed since the run started ({differences}); "
            "its records and checkpoints belong to the old config. Undo the change, or start "
            f"a new run with it (only {', '.join(CHANGEABLE_ON_RESUME)} may change on resume, "
            "train.steps under the constant schedule only)"
        )
    return bool(changed)


def resume(run_dir, *, progress: bool | None = None, echo=print, guard=None, on_eval=None) -> dict:
    """Continue the run in ``run_dir`` from its latest committed checkpoint (from step 0
    when it has none), cutting the metric records past it; a finished run is left as it
    is and its summary returned. A missing ``task.json`` or ``run.json`` (a kill just
    after ``config.yaml`` was written, or a deletion) is written again from the config:
    the directory stays one that ``load_run`` opens.

    Refused with a ValueError, nothing written: a ``config.yaml`` changed since the run
    started (but for ``CHANGEABLE_ON_RESUME``); a ``task.json`` that cannot be read; a
    finished run without its ``checkpoints/``; and metric records further past the newest
    checkpoint than a save in flight leaves them (deleted checkpoints), which a restart
    from an older step would rewrite. ``guard``: see the module docstring.
    """
    run_dir = pathlib.Path(run_dir)
    _distributed.check_same("run directories", str(run_dir))
    echo = _distributed.writer_echo(echo)
    if (run_dir / _rundir.SWEEP).exists():
        raise ValueError(
            f"{run_dir} is a sweep directory; seqlab.experiments.resume_sweep (or "
            "`seqlab resume`) continues it"
        )
    config = _rundir.read_config(run_dir)
    summary = _rundir.read_summary(run_dir)
    task_missing = not (run_dir / _rundir.TASK).exists()
    if not task_missing:
        _rundir.read_info(run_dir)  # one that cannot be read is refused, not overwritten
    if summary is not None and summary.get("status") in _rundir.FINAL_STATUSES:
        if not (run_dir / _rundir.CHECKPOINTS).is_dir():
            raise ValueError(
                f"{run_dir} is {summary['status']} but its {_rundir.CHECKPOINTS}/ is missing "
                "(deleted?): load_run cannot open it; train it again as a new run"
            )
        if task_missing and _distributed.is_writer():
            _check(guard)
            info = Experiment.from_config(config).data.info
            _rundir.write_json(run_dir / _rundir.TASK, info)
            echo(f"restored {run_dir / _rundir.TASK}")
        echo(f"{run_dir} is already {summary['status']} at step {summary['step']}")
        return summary
    changed = _check_unchanged(run_dir, config)
    experiment = Experiment.from_config(config)
    records = _rundir.read_metrics(run_dir / _rundir.METRICS)
    step, state, meta = None, None, {}
    if (run_dir / _rundir.CHECKPOINTS).is_dir():
        # Read-only: nothing is created or cleaned up, and no background work of orbax's
        # can outlive an error raised here (the training loop opens its own manager).
        checkpoints = open_checkpoints(run_dir, experiment, read_only=True)
        try:
            step = checkpoints.latest_step()
            if step is not None:
                state, meta = restore_state(checkpoints, experiment, step)
        finally:
            checkpoints.close()
    # orbax commits a save in the background and waits for it only at the next save, so
    # a kill leaves the records at most two checkpoint intervals past the newest commit;
    # further means checkpoints were deleted.
    last = max((r["step"] for r in records), default=0)
    if last > (step or 0) + 2 * config.checkpoint.every:
        newest = (
            f"no checkpoint in {_rundir.CHECKPOINTS}/"
            if step is None
            else f"its newest checkpoint is step {step}"
        )
        raise ValueError(
            f"{run_dir} has metric records up to step {last} but {newest} (deleted?): "
            f"a restart from step {step or 0} would rewrite them; start a new run instead"
        )
    _distributed.barrier("resume-checked")
    if _distributed.is_writer():
        _check(guard)
        run_missing = not (run_dir / _rundir.RUN).exists()
        if changed or run_missing:  # the allowed changes join the run's config
            _rundir.write_json(run_dir / _rundir.RUN, {"config": to_dict(config)})
        if task_missing:
            _rundir.write_json(run_dir / _rundir.TASK, experiment.data.info)
            echo(f"restored {run_dir / _rundir.TASK}")
    if step is None:
        echo(f"{run_dir} has no checkpoint yet: starting from step 0")
        state = experiment.init_state()
    else:
        echo(f"resuming {run_dir} from step {step}")
    return _train_loop(
        experiment,
        run_dir,
        state,
        step or 0,
        meta,
        progress=progress,
        echo=echo,
        guard=guard,
        on_eval=on_eval,
    )


def _record(step, train_metrics, per_seed, ensemble, seeds, elapsed) -> dict:
    record = {"step": step}
    for name, values in {**train_metrics, **per_seed}.items():
        record[name] = float(np.mean(np.asarray(values, np.float64)))
    record.update(ensemble)
    if len(seeds) > 1:
        record["seeds"] = {
            name: [float(v) for v in np.asarray(values, np.float64)]
            for name, values in {**train_metrics, **per_seed}.items()
        }
    record["elapsed"] = round(elapsed, 3)
    return record


def _train_loop(
    experiment, run_dir, state, step, meta, *, progress, echo, guard, on_eval=None
) -> dict:
    config = experiment.config
    total, log_every = config.train.steps, config.train.log_every
    metric, mode = experiment.main_metric()
    sign = 1.0 if mode == "min" else -1.0
    stopping = dict(meta.get("early_stopping", {"best": None, "best_step": None, "bad_evals": 0}))
    _check(guard)  # the manager cleans orbax's temporary folders, the log cuts records
    checkpoints = open_checkpoints(run_dir, experiment, guard=guard)
    writer = _distributed.is_writer()
    log = None
    # A run killed after its last checkpoint (stopped early, diverged) but before its
    # summary resumes into that status instead of training on.
    status = meta.get("status", "running")
    start = time.perf_counter() - float(meta.get("elapsed", 0.0))
    bar = tqdm(
        total=total,
        initial=step,
        unit="step",
        desc=run_dir.name,
        disable=(not progress or not writer)
        if progress is not None
        else (None if writer else True),
        dynamic_ncols=True,
    )
    record = meta.get("record")
    try:
        if writer:
            _check(guard)
            log = _rundir.MetricLog(run_dir, start=step)
        while step < total and status == "running":
            num_steps = min(log_every - step % log_every, total - step)
            state, train_metrics = experiment.train_chunk(state, step, num_steps)
            jax.block_until_ready(state)  # `elapsed` then times the work, not its dispatch
            step += num_steps
            per_seed, ensemble = experiment.evaluate(state["params"])
            elapsed = time.perf_counter() - start
            record = _record(step, train_metrics, per_seed, ensemble, experiment.seeds, elapsed)
            if writer:
                _check(guard)
                log.write(record)
            if metric not in record:
                raise ValueError(
                    f"checkpoint.best_metric {metric!r} is not a metric of this task; it has "
                    f"{', '.join(k for k in record if k.startswith('eval'))}"
                )
            value = record[metric]
            if not np.isfinite(record["train/loss"]):
                status = "diverged"
            elif stopping["best"] is None or sign * value < sign * stopping["best"]:
                stopping.update(best=value, best_step=step, bad_evals=0)
            else:
                stopping["bad_evals"] += 1
                patience = config.train.early_stopping_patience
                if patience and stopping["bad_evals"] >= patience:
                    status = "stopped_early"
            if on_eval is not None and on_eval(step, record):
                if status == "running" and step < total:  # the last step has nothing to save
                    status = "pruned"
            if step % config.checkpoint.every == 0 or step == total or status != "running":
                checkpoints.save(
                    step,
                    state,
                    {
                        "step": step,
                        "data_position": experiment.data_position(step),
                        "early_stopping": stopping,
                        "metrics": {k: v for k, v in record.items() if k != "seeds"},
                        "record": record,
                        "elapsed": elapsed,
                        "seeds": list(experiment.seeds),
                        "status": status,
                    },
                    record,
                )
            bar.set_postfix({"loss": f"{record['train/loss']:.4g}", metric: f"{value:.4g}"})
            bar.update(num_steps)
        # The summary names the best step that has a checkpoint (the one kept as best), so
        # that load_run(...).restore(best_step) works; early stopping above counts every
        # evaluation, checkpointed or not.
        checkpoints.wait()
        best_step = checkpoints.best_step()
        best = (best_step, None if best_step is None else checkpoints.metric(best_step))
    finally:
        bar.close()
        try:
            checkpoints.close()  # waits for the save in flight (dropped if the guard refuses)
        finally:
            if log is not None:
                log.close()
    if status == "running":
        status = "finished"
    # The writer finishes (with host copies of the replicated state under several
    # processes, on its own device); the others wait for its summary.
    if writer:
        with experiment.source.writer_device():
            summary = finish(
                experiment,
                run_dir,
                experiment.source.host(state),
                step,
                record,
                best,
                status,
                guard=guard,
            )
        _echo_summary(summary, echo)
    _distributed.barrier("run-finished")
    return summary if writer else _rundir.read_summary(run_dir)


def finish(experiment, run_dir, state, step, record, best, status, *, guard=None) -> dict:
    """Write summary.json, the plots and the final gradient-norm analysis of a run;
    ``best`` is (step, value) of the best checkpointed step (or (None, None)); ``guard``
    is called before each of those writes."""
    metric, mode = experiment.main_metric()
    info = experiment.data.info
    summary = {
        "status": status,
        "task": experiment.config.task,
        "step": step,
        "seeds": list(experiment.seeds),
        "main_metric": metric,
        "mode": mode,
        "best_step": best[0],
        "best": best[1],
        "final": {k: v for k, v in (record or {}).items() if k not in ("seeds", "step")},
        "baselines": info.get("baselines", {}),
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }
    if record and "seeds" in record:
        summary["final_per_seed"] = record["seeds"]
    warnings = [] if status == "diverged" else _warnings(metric, mode, summary["final"], info)
    if warnings:
        summary["warnings"] = warnings
    extra = _analyze.samples(experiment, state["params"])
    if extra:
        summary["samples"] = extra
    try:  # it checks the guard itself, just before its own writes
        _analyze.analyze_params(experiment, state["params"], step, run_dir, guard=guard)
    except ValueError as error:
        summary["analysis"] = f"skipped: {error}"
    _check(guard)
    _rundir.write_json(run_dir / _rundir.SUMMARY, summary)
    _check(guard)
    _plots.plot_run(run_dir)
    return summary


# A final main metric this many times worse than the task's trivial baseline flags a run
# that diverged while staying finite (train.lr=100 on the adding problem: MSE in the
# thousands against a baseline of 0.167).
DIVERGED_FACTOR = 10.0


def _warnings(metric: str, mode: str, final: dict, info: dict) -> list[str]:
    """Warnings for a run that ended without diverging (its train loss stayed finite)."""
    value, baseline = final.get(metric), info.get("baselines", {}).get(metric)
    if value is None or baseline is None or mode != "min" or not baseline > 0:
        return []
    if not np.isfinite(value):
        return [f"final {metric} is {value}, though the train loss stayed finite"]
    if value <= DIVERGED_FACTOR * baseline:
        return []
    return [
        f"final {metric} {value:.4g} is more than {DIVERGED_FACTOR:g}x the task's baseline "
        f"{baseline:.4g}: the run has probably diverged (a lower train.lr?)"
    ]


def _echo_summary(summary: dict, echo) -> None:
    final = summary["final"]
    parts = [f"{k} {v:.4g}" for k, v in final.items() if k.startswith("eval") and "/" in k]
    baselines = ", ".join(f"{k} {v:.4g}" for k, v in summary["baselines"].items())
    echo(f"{summary['status']} at step {summary['step']}: " + ", ".join(parts))
    if baselines:
        echo(f"  baseline: {baselines}")
    for warning in summary.get("warnings", []):
        echo(f"  warning: {warning}")
