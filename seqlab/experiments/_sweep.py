"""Sweeps: the cartesian product of override values, each point a run directory.

``sweep(config, {"model.cell": ["rnn", "lstm"], "model.hidden_size": ["32", "64"]}, out)``
trains every combination (each point's ``train.num_seeds`` seeds as one program,
data-parallel over the local devices) into ``out/points/<name>/``, then writes
``results.csv`` (one row per point), ``cv.csv`` for k-fold sweeps (mean and spread over
folds), comparison plots and ``report.md``. Started again with the same arguments, a
sweep skips finished points and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import re

from omegaconf import OmegaConf

from seqlab.experiments import _rundir
from seqlab.experiments._config import apply_overrides, structured, to_dict, validate
from seqlab.experiments._lookup import default_config
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


def sweep(
    config, grid: dict[str, list[str]], out_dir, *, kfold: int = 0, progress=None, echo=print
):
    """Run every point of ``grid`` over ``config``; returns the path of results.csv."""
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
    sweep_file = out_dir / _rundir.SWEEP
    if sweep_file.exists():
        saved = _rundir.read_sweep(out_dir)
        if saved != json.loads(json.dumps(plan)):
            raise ValueError(
                f"{out_dir} holds a different sweep (other config, grid or folds); choose "
                "another --out"
            )
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} exists and is not a sweep; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    _rundir.write_json(sweep_file, plan)
    for index, (name, overrides, point_config) in enumerate(
        zip(names, points, configs, strict=True)
    ):
        point_dir = out_dir / "points" / name
        label = f"[{index + 1}/{len(points)}] {' '.join(overrides) or 'base'}"
        summary = _rundir.read_summary(point_dir)
        if summary is not None and summary.get("status") in _rundir.FINAL_STATUSES:
            echo(f"{label}: done, skipped")
            continue
        echo(label)
        if (point_dir / _rundir.CONFIG).exists():
            resume(point_dir, progress=progress, echo=echo)
        else:
            # run() refuses a non-empty folder without config.yaml: nothing is overwritten
            run(point_config, point_dir, progress=progress, echo=echo)
    results = write_results(out_dir)
    report_sweep(out_dir)
    echo(f"results: {results}")
    return results


def resume_sweep(out_dir, *, progress=None, echo=print):
    """Continue the sweep in ``out_dir`` from its ``sweep.json``: finished points are
    skipped, an interrupted one resumes from its checkpoint, the rest run; returns the path
    of results.csv."""
    out_dir = pathlib.Path(out_dir)
    if not (out_dir / _rundir.SWEEP).exists():
        raise ValueError(f"{out_dir} is not a sweep directory: {_rundir.SWEEP} is missing")
    plan = _rundir.read_sweep(out_dir)
    base = plan["base"]
    if not isinstance(base, dict) or "task" not in base:
        raise ValueError(f"{out_dir / _rundir.SWEEP} is damaged: its base config has no task")
    config = OmegaConf.merge(default_config(base["task"]), base)
    validate(config)
    return sweep(config, plan["grid"], out_dir, kfold=plan["kfold"], progress=progress, echo=echo)
