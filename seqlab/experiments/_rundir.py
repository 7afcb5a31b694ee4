"""The files of a run directory: their names, the readers, and the metric log that
survives a kill.

config.yaml      the resolved config (OmegaConf)
run.json         the config the run started with: resume refuses a config.yaml edited
                 since (but for the keys seqlab.experiments._run.CHANGEABLE_ON_RESUME)
task.json        the task's info: what the model is built from, vocabularies, baselines
metrics.jsonl    one JSON record per log step, flushed and fsynced as written
tensorboard/     TensorBoard event files (tensorboardX's format), flushed as written
checkpoints/     orbax CheckpointManager steps
summary.json     written when the run ends
plots/, analysis/, report.md

A sweep directory holds sweep.json (the plan), points/<name>/ (one run directory each),
results.csv (and cv.csv), plots/ and report.md.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import time
import uuid

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqlab.experiments._config import validate
from seqlab.experiments._lookup import default_config

CONFIG = "config.yaml"
TASK = "task.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
RUN = "run.json"
# What `run` writes first, before training: their temporaries may be left by a kill.
RUN_FILES = (CONFIG, RUN, TASK)
CHECKPOINTS = "checkpoints"
SWEEP = "sweep.json"
# The statuses of a run that has ended: resume and sweeps leave such a run as it is
# ("pruned": stopped by a seqlab tune pruner).
FINAL_STATUSES = ("finished", "stopped_early", "diverged", "pruned")


def read_config(run_dir: str | pathlib.Path):
    """The typed config saved in ``run_dir/config.yaml`` (checked against its schema)."""
    path = pathlib.Path(run_dir) / CONFIG
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory: {path.name} is missing")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"{path} cannot be read as an experiment config: {reason}") from None
    config = _typed_config(str(path), raw)
    validate(config)
    return config


def config_from_dict(where: str, raw):
    """The typed config that ``to_dict`` gave ``raw`` (saved in ``where``), validated."""
    config = _typed_config(where, raw)
    try:
        validate(config)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return config


def _typed_config(where: str, raw):
    """``raw`` (read from ``where``) merged over its task's default config, not yet
    validated."""
    if not isinstance(raw, dict) or not isinstance(raw.get("task"), str):
        raise ValueError(f"{where} does not hold an experiment config (with a task name)")
    try:
        return OmegaConf.merge(default_config(raw["task"]), raw)
    except (OmegaConfBaseException, ValueError) as error:  # (ValueError: an unknown task)
        reason = str(error).splitlines()[0]
        raise ValueError(f"{where} cannot be read as an experiment config: {reason}") from None


def read_json(path: str | pathlib.Path, *, numbers: bool = False) -> dict:
    """The JSON object in a file of a run or sweep directory; a ValueError names the file
    when it cannot be read or holds something else. ``numbers``: the whole file holds
    numbers (an analysis result), so the strings "nan", "inf", "-inf" that ``write_json``
    wrote for non-finite floats are turned back into floats. Files that hold text (task
    vocabularies, configs) are read as they are."""
    path = pathlib.Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read: {error}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(payload).__name__}")
    return _from_json_safe(payload) if numbers else payload


def read_info(run_dir: str | pathlib.Path) -> dict:
    """The task's info saved in ``run_dir/task.json``."""
    return read_json(pathlib.Path(run_dir) / TASK)


def _require_keys(path: pathlib.Path, payload: dict, keys: tuple[str, ...]) -> dict:
    missing = [key for key in keys if key not in payload]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing)}")
    return payload


def read_summary(run_dir: str | pathlib.Path) -> dict | None:
    """``run_dir/summary.json``, or None while the run has not ended."""
    path = pathlib.Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    summary = _require_keys(path, read_json(path), ("status", "step", "final", "main_metric"))
    for key in ("final", "best", "final_per_seed"):  # the numbers of a summary
        if key in summary:
            summary[key] = _from_json_safe(summary[key])
    return summary


def read_sweep(out_dir: str | pathlib.Path) -> dict:
    """The plan of a sweep directory (``sweep.json``): base config, grid, folds, points,
    each checked against the shape ``prepare_sweep`` writes, so that a hand-edited file is
    one ValueError naming the file and the key (every command reads it through here)."""
    return _read_plan(pathlib.Path(out_dir) / SWEEP)[0]


def read_sweep_config(out_dir: str | pathlib.Path):
    """The typed base config of a sweep directory's plan (checked as ``read_sweep`` does)."""
    return _read_plan(pathlib.Path(out_dir) / SWEEP)[1]


# A point's name is a folder of points/: no separators, no "." or "..".
_POINT_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9=._-]+")


def _read_plan(path: pathlib.Path):
    plan = _require_keys(path, read_json(path), ("base", "grid", "kfold", "points"))

    def damaged(what: str, value) -> ValueError:
        return ValueError(f"{path} is damaged: {what}, got {json.dumps(value)[:200]}")

    where = f"{path}: its base config"
    config = _typed_config(where, plan["base"])
    try:
        validate(config)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    grid, kfold, points = plan["grid"], plan["kfold"], plan["points"]
    scalar = str | int | float | bool | None
    if not isinstance(grid, dict) or not all(
        key and isinstance(values, list) and all(isinstance(v, scalar) for v in values)
        for key, values in grid.items()
    ):
        raise damaged("grid must map each key to a list of values", grid)
    if type(kfold) is not int or kfold == 1 or kfold < 0:
        raise damaged("kfold must be 0 (no folds) or an integer >= 2", kfold)
    if not isinstance(points, list):
        raise damaged("points must be a list", points)
    for point in points:
        if not isinstance(point, dict) or set(point) != {"name", "overrides"}:
            raise damaged("a point must have a name and overrides", point)
        name, overrides = point["name"], point["overrides"]
        if not isinstance(name, str) or not _POINT_NAME.fullmatch(name):
            raise damaged("a point's name must be a folder name (letters, digits, =._-)", name)
        if not isinstance(overrides, list) or not all(
            isinstance(o, str) and "=" in o and not o.startswith("=") for o in overrides
        ):
            raise damaged("a point's overrides must be a list of key=value strings", overrides)
    names = [point["name"] for point in points]
    if len(set(names)) != len(names):
        raise damaged("the points' names must differ", names)
    return plan, config


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """The records of a ``metrics.jsonl``, one per step (the first record of a step wins,
    a resumed run never rewrites one), skipping a last line cut short by a kill."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    records, seen = [], set()
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a partial last line: the write was interrupted
                break
            raise ValueError(f"{path}:{number} is not a JSON record") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(
                f"{path}:{number} must be a JSON object with an integer step, got {line[:80]!r}"
            )
        record = _from_json_safe(record)
        if record.get("step") not in seen:
            seen.add(record.get("step"))
            records.append(record)
    return records


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _from_json_safe(value):
    """Inverse of ``_json_safe``: the strings "nan", "inf", "-inf" back to floats."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json_safe(v) for v in value]
    return value


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or inf: keep them readable as strings
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class MetricLog:
    """Appends records to ``metrics.jsonl`` (flush + fsync each) and TensorBoard (flushed
    each, no background thread): a record is on disk when ``write`` returns, and nothing
    is written after that, so a caller that checks before each write (a sweep worker that
    may lose its point) controls every byte.

    Opening an existing log (a resumed run) first cuts a partial last line left by a
    kill, and the records past ``start`` (when given), the step the run continues from:
    they were computed after its newest committed checkpoint (orbax saves in the
    background while training runs on) and are computed and written again, so each step
    keeps one record, from the computation the checkpoints continue. TensorBoard is told
    to drop its events past ``start`` too (a purge marker, as tensorboardX's
    ``purge_step``). Records for steps already in the file are not written again.
    """

    def __init__(
        self, run_dir: pathlib.Path, *, start: int | None = None, tensorboard: bool = True
    ):
        self.path = run_dir / METRICS
        start = math.inf if start is None else start
        if self.path.exists():
            data = self.path.read_bytes()
            end = 0
            for line in data.splitlines(keepends=True):
                if not line.endswith(b"\n") or (line.strip() and json.loads(line)["step"] > start):
                    break  # a partial last line, or the first record past start
                end += len(line)
            if end < len(data):
                with open(self.path, "r+b") as file:
                    file.truncate(end)
                    os.fsync(file.fileno())
        self.steps = {r["step"] for r in read_metrics(self.path)}
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.events = None
        if tensorboard:
            # imported here: tensorboardX imports torch when it is installed (about 1 s),
            # which only runs that write events should pay
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto import event_pb2, summary_pb2

            self._event, self._summary = event_pb2, summary_pb2
            folder = run_dir / "tensorboard"
            folder.mkdir(exist_ok=True)
            # tensorboardX names the file by the second and the host: a suffix of its own
            # keeps a resume within the same second from overwriting the last file
            self.events = EventsWriter(str(folder / "events"), f".{uuid.uuid4().hex[:8]}")
            # Written on every start at a step, not only when records past it remain: a
            # kill after the cut of metrics.jsonl but before this marker would otherwise
            # leave TensorBoard the old events past ``start`` beside the recomputed ones.
            if start != math.inf:
                self.events.write_event(
                    event_pb2.Event(
                        wall_time=time.time(),
                        step=start + 1,
                        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
                    )
                )
            self.events.flush()

    def write(self, record: dict) -> bool:
        """Append ``record`` unless its step is already logged; True when written."""
        if record["step"] in self.steps:
            return False
        self.file.write(json.dumps(_json_safe(record)) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.steps.add(record["step"])
        if self.events is not None:
            # TensorBoard gets finite scalars only (NaN/inf stay in metrics.jsonl)
            values = [
                self._summary.Summary.Value(tag=name, simple_value=value)
                for name, value in record.items()
                if name != "step" and isinstance(value, int | float) and math.isfinite(value)
            ]
            self.events.write_event(
                self._event.Event(
                    wall_time=time.time(),
                    step=record["step"],
                    summary=self._summary.Summary(value=values),
                )
            )
            self.events.flush()
        return True

    def close(self) -> None:
        self.file.close()
        if self.events is not None:
            self.events.close()


def write_json(path: pathlib.Path, payload) -> None:
    """Write JSON atomically (temporary file, then rename): a kill never leaves half.
    The folder is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(_json_safe(payload), indent=2) + "\n")


def temporary(path: pathlib.Path) -> pathlib.Path:
    """A name beside ``path`` that no other process or worker writes at the same time."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def is_temporary(path: pathlib.Path, of: str) -> bool:
    """Whether ``path`` is a name ``temporary`` gives for a file named ``of``: another
    writer's file on its way in (or left by a writer killed before its rename)."""
    return re.fullmatch(rf"\.{re.escape(of)}\.\d+\.[0-9a-f]{{8}}\.tmp", path.name) is not None


def write_text(path: pathlib.Path, text: str) -> None:
    """Write text atomically (a temporary file of this process, then rename): a kill, or
    another worker writing the same file, never leaves half of it."""
    tmp = temporary(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
