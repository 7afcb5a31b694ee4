"""The files of a run directory: their names, the readers, and the metric log that
survives a kill.

config.yaml      the resolved config (OmegaConf)
run.json         the config the run started with: resume refuses a config.yaml edited
                 since (but for the keys seqlab.experiments._run.CHANGEABLE_ON_RESUME)
task.json        the task's info: what the model is built from, vocabularies, baselines
metrics.jsonl    one JSON record per log step, flushed and fsynced as written
tensorboard/     TensorBoard event files (tensorboardX)
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
CHECKPOINTS = "checkpoints"
SWEEP = "sweep.json"
# The statuses of a run that has ended: resume and sweeps leave such a run as it is.
FINAL_STATUSES = ("finished", "stopped_early", "diverged")


def read_config(run_dir: str | pathlib.Path):
    """The typed config saved in ``run_dir/config.yaml`` (checked against its schema)."""
    path = pathlib.Path(run_dir) / CONFIG
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory: {path.name} is missing")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or "task" not in raw:
            raise ValueError(f"{path} does not hold an experiment config")
        config = OmegaConf.merge(default_config(raw["task"]), raw)
    except (yaml.YAMLError, OmegaConfBaseException) as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"{path} cannot be read as an experiment config: {reason}") from None
    validate(config)
    return config


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
    """The plan of a sweep directory (``sweep.json``): base config, grid, folds, points."""
    path = pathlib.Path(out_dir) / SWEEP
    plan = _require_keys(path, read_json(path), ("base", "grid", "kfold", "points"))
    for point in plan["points"]:
        if not isinstance(point, dict) or set(point) != {"name", "overrides"}:
            raise ValueError(f"{path} is damaged: a point must have a name and overrides")
    return plan


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
    """Appends records to ``metrics.jsonl`` (flush + fsync each) and TensorBoard.

    Opening an existing log (a resumed run) first cuts a partial last line left by a
    kill; records for steps already in the file are not written again.
    """

    def __init__(self, run_dir: pathlib.Path, *, tensorboard: bool = True):
        self.path = run_dir / METRICS
        self.steps = {r["step"] for r in read_metrics(self.path)}
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as file:
                    file.truncate(data.rfind(b"\n") + 1)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.writer = None
        if tensorboard:
            # imported here: tensorboardX imports torch when it is installed (about 1 s),
            # which only runs that write events should pay
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), flush_secs=10)

    def write(self, record: dict) -> bool:
        """Append ``record`` unless its step is already logged; True when written."""
        if record["step"] in self.steps:
            return False
        self.file.write(json.dumps(_json_safe(record)) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.steps.add(record["step"])
        if self.writer is not None:
            for name, value in record.items():
                # TensorBoard gets finite scalars only (NaN/inf stay in metrics.jsonl)
                finite = isinstance(value, int | float) and math.isfinite(value)
                if name != "step" and finite:
                    self.writer.add_scalar(name, value, record["step"])
        return True

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def write_json(path: pathlib.Path, payload) -> None:
    """Write JSON atomically (temporary file, then rename): a kill never leaves half.
    The folder is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(_json_safe(payload), indent=2) + "\n")


def _temporary(path: pathlib.Path) -> pathlib.Path:
    """A name beside ``path`` that no other process or worker writes at the same time."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_text(path: pathlib.Path, text: str) -> None:
    """Write text atomically (a temporary file of this process, then rename): a kill, or
    another worker writing the same file, never leaves half of it."""
    tmp = _temporary(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
