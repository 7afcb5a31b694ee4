"""Sweeps: the cartesian product of override values, each point a run directory.

``sweep(config, {"model.cell": ["rnn", "lstm"], "model.hidden_size": ["32", "64"]}, out)``
trains every combination (each point's ``train.num_seeds`` seeds as one program,
data-parallel over the local devices) into ``out/points/<name>/``, then writes
``results.csv`` (one row per point), ``cv.csv`` for k-fold sweeps (mean and spread over
folds), comparison plots and ``report.md``. Started again with the same arguments, a
sweep skips finished points and resumes an interrupted one from its checkpoint.

Several workers (processes, hosts, SLURM array tasks) can share one sweep folder on a
shared filesystem: ``sweep(..., worker=i, num_workers=n)``. Each claims a point before it
trains it (``_claims``), so no two train the same point, and a worker started later or
restarted picks up whatever is unclaimed, unfinished, or held by a dead worker.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
import re

from seqlab.experiments import _distributed, _rundir
from seqlab.experiments._claims import STALE_AFTER, ClaimLost, Claims
from seqlab.experiments._config import apply_overrides, structured, to_dict
from seqlab.experiments._report import report_sweep, write_results
from seqlab.experiments._run import resume, run
from seqlab.experiments._train import Experiment


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["model.cell=rnn,lstm", "train.lr=1e-3"]`` -> {key: [values]} (a single value
    is an override shared by every point)."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"a sweep axis must look like key=v1,v2,..., got {item!r}")
        if key in grid:
            raise ValueError(f"{key} is given twice")
        grid[key] = [v for v in values.split(",") if v != ""]
    return grid


def _slug(overrides: list[str]) -> str:
    text = "_".join(o.split(".")[-1] for o in overrides) or "base"
    return re.sub(r"[^A-Za-z0-9=._-]+", "-", text)[:80]


def expand(grid: dict[str, list[str]], kfold: int = 0) -> list[list[str]]:
    """The override lists of every point (k-fold adds data.num_folds and data.fold)."""
    if kfold:
        if kfold < 2:
            raise ValueError(f"--kfold must be >= 2, got {kfold}")
        if "data.fold" in grid or "data.num_folds" in grid:
            raise ValueError("--kfold sets data.fold and data.num_folds itself")
        grid = {**grid, "data.num_folds": [str(kfold)], "data.fold": [str(i) for i in range(kfold)]}
    keys = list(grid)
    return [
        [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def prepare_sweep(config, grid: dict[str, list[str]], out_dir, *, kfold: int = 0) -> dict:
    """Check every point of ``grid`` over ``config`` (its overrides, its data) and write
    the plan ``sweep.json`` into ``out_dir`` (or check that the one there is the same);
    returns the plan. Nothing trains. Several workers may call it at once: the plan is
    created with a hard link, which exactly one of them wins."""
    out_dir = pathlib.Path(out_dir)
    config = structured(config)
    points = expand(grid, kfold)
    configs = [apply_overrides(config, overrides) for overrides in points]  # all checked first
    for overrides, point_config in zip(points, configs, strict=True):
        # each point's task-specific constraints (its data loads), before anything trains
        try:
            experiment = Experiment.from_config(point_config)
        except ValueError as error:
            raise ValueError(f"sweep point {' '.join(overrides) or 'base'}: {error}") from None
        if kfold and experiment.data.train is None:
            raise ValueError(
                f"--kfold needs a fixed dataset to split; task {config.task} generates its "
                "data (every fold would be the same)"
            )
    names = [f"p{i:03d}_{_slug(o)}" for i, o in enumerate(points)]
    plan = {
        "base": to_dict(config),
        "grid": grid,
        "kfold": kfold,
        "points": [{"name": n, "overrides": o} for n, o in zip(names, points, strict=True)],
    }
    plan = json.loads(json.dumps(plan))
    sweep_file = out_dir / _rundir.SWEEP
    if _distributed.is_writer() and not sweep_file.exists():
        # Another worker starting at the same time may have made the folder and be writing
        # its plan (a temporary file, then sweep.json): neither is foreign content.
        foreign = out_dir.exists() and any(
            not _rundir.is_temporary(path, of=_rundir.SWEEP) for path in out_dir.iterdir()
        )
        if foreign and not sweep_file.exists():
            raise ValueError(f"{out_dir} exists and is not a sweep; choose another --out")
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = _rundir.temporary(sweep_file)
        try:
            tmp.write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
            os.link(tmp, sweep_file)  # fails when another worker wrote its plan first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    _distributed.barrier("sweep-planned")
    if _rundir.read_sweep(out_dir) != plan:
        raise ValueError(
            f"{out_dir} holds a different sweep (other config, grid or folds); choose another --out"
        )
    return plan


def sweep(
    config,
    grid: dict[str, list[str]],
    out_dir,
    *,
    kfold: int = 0,
    progress=None,
    echo=print,
    worker: int = 0,
    num_workers: int = 1,
    stale_after: float = STALE_AFTER,
):
    """Run every point of ``grid`` over ``config``; returns the path of results.csv.

    As worker ``worker`` of ``num_workers`` sharing ``out_dir``: a point is claimed
    before it trains (``seqlab.experiments._claims``: the rule for taking over the claim
    of a dead worker, ``stale_after`` seconds without a heartbeat), this worker's share
    (points ``i`` with ``i % num_workers == worker``) comes first and then whatever no
    live worker holds. results.csv, cv.csv and report.md are written from the points
    finished so far; every worker writes them when it runs out of points, and
    ``seqlab report DIR`` writes them at any time.
    """
    if not 0 <= worker < num_workers:
        raise ValueError(
            f"--worker must be in 0 .. {num_workers - 1} (--num-workers {num_workers}), "
            f"got {worker}"
        )
    if not stale_after > 0:
        raise ValueError(f"--stale-after must be a positive number of seconds, got {stale_after}")
    if _distributed.multiprocess() and num_workers > 1:
        raise ValueError(
            "--num-workers > 1 under SEQLAB_DISTRIBUTED=1: the processes of one job train "
            "each point together; run one sweep worker per job"
        )
    out_dir = pathlib.Path(out_dir)
    config = structured(config)
    echo = _distributed.writer_echo(echo)
    plan = prepare_sweep(config, grid, out_dir, kfold=kfold)
    configs = {p["name"]: apply_overrides(config, p["overrides"]) for p in plan["points"]}
    # The processes of one jax.distributed job train each point together: no claims.
    claims = None
    if not _distributed.multiprocess():
        claims = Claims(out_dir, f"{worker}/{num_workers}", stale_after=stale_after)
    count = len(plan["points"])
    order = [i for i in range(count) if i % num_workers == worker]
    order += [i for i in range(count) if i % num_workers != worker]
    busy = []
    for index in order:
        name, overrides = plan["points"][index]["name"], plan["points"][index]["overrides"]
        point_dir = out_dir / "points" / name
        label = f"[{index + 1}/{count}] {' '.join(overrides) or 'base'}"
        if _finished(point_dir):
            if index % num_workers == worker:
                echo(f"{label}: done, skipped")
            continue
        claim = None if claims is None else claims.try_claim(name)
        if claims is not None and claim is None:
            holder = claims.holder(name) or {}
            echo(f"{label}: held by worker {holder.get('worker', '?')}, skipped")
            busy.append(name)
            continue
        try:
            with claim if claim is not None else contextlib.nullcontext():
                if _finished(point_dir):  # finished by another worker since we looked
                    continue
                echo(label)
                # the claim is checked before every write into the point: a worker that
                # lost it (frozen past --stale-after) writes nothing more there
                guard = None if claim is None else claim.check
                if (point_dir / _rundir.CONFIG).exists():
                    resume(point_dir, progress=progress, echo=echo, guard=guard)
                else:
                    # run() refuses a non-empty folder without config.yaml: nothing is
                    # overwritten
                    run(configs[name], point_dir, progress=progress, echo=echo, guard=guard)
        except ClaimLost:
            echo(
                f"{label}: another worker took this point over (no heartbeat from this one "
                f"for {claims.stale_after:g} s); left to it"
            )
            busy.append(name)
    results = out_dir / "results.csv"
    if _distributed.is_writer():
        results = write_results(out_dir)
        report_sweep(out_dir)
    unfinished = [
        p["name"] for p in plan["points"] if not _finished(out_dir / "points" / p["name"])
    ]
    if unfinished:
        echo(
            f"results so far: {results} ({count - len(unfinished)} of {count} points "
            f"finished; {len(unfinished)} with other workers or unfinished: "
            f"`seqlab report {out_dir}` merges again later)"
        )
    else:
        echo(f"results: {results}")
    return results


def _finished(point_dir: pathlib.Path) -> bool:
    summary = _rundir.read_summary(point_dir)
    return summary is not None and summary.get("status") in _rundir.FINAL_STATUSES


def resume_sweep(out_dir, *, progress=None, echo=print, **workers):
    """Continue the sweep in ``out_dir`` from its ``sweep.json``: finished points are
    skipped, an interrupted one resumes from its checkpoint, the rest run; returns the path
    of results.csv."""
    out_dir = pathlib.Path(out_dir)
    if not (out_dir / _rundir.SWEEP).exists():
        raise ValueError(f"{out_dir} is not a sweep directory: {_rundir.SWEEP} is missing")
    plan = _rundir.read_sweep(out_dir)
    config = _rundir.read_sweep_config(out_dir)
    return sweep(
        config, plan["grid"], out_dir, kfold=plan["kfold"], progress=progress, echo=echo, **workers
    )
