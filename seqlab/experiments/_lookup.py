"""Find an experiment by name or path.

An experiment file is a small Python module with a ``config()`` function returning an
``ExperimentConfig`` (big_vision style), its docstring saying what it runs and how long
it takes. ``seqlab run NAME`` looks for ``NAME.py`` in ``./experiments/``, then in the
``experiments/`` folder of the seqlab checkout, and finally falls back to the default
config of the task called NAME.
"""

from __future__ import annotations

import importlib.util
import pathlib

from seqlab.experiments import tasks as task_registry
from seqlab.experiments._config import ExperimentConfig, structured

REPO_EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"


def default_config(task_name: str):
    """The typed default config of a task (its DataConfig subclass in ``data``)."""
    task = task_registry.get(task_name)
    config = ExperimentConfig(task=task_name, data=task.data_config())
    return structured(task.default_config(config))


def search_dirs() -> list[pathlib.Path]:
    dirs = [pathlib.Path.cwd() / "experiments", REPO_EXPERIMENTS]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in dirs[:i]]


def available() -> list[str]:
    names = {p.stem for d in search_dirs() for p in d.glob("*.py") if not p.stem.startswith("_")}
    return sorted(names | set(task_registry.registered()))


def load_file(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(f"seqlab_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ValueError(f"experiment file {path} does not parse: {error}") from None
    if not callable(getattr(module, "config", None)):
        raise ValueError(f"experiment file {path} must define config() -> ExperimentConfig")
    return structured(module.config())


def find(name_or_path: str):
    """The typed config of an experiment name or file."""
    path = pathlib.Path(name_or_path)
    if path.suffix == ".py" or path.parent != pathlib.Path("."):
        if path.suffix != ".py":
            raise ValueError(f"an experiment file is a Python module (.py), got {path}")
        if not path.is_file():
            raise ValueError(f"no experiment file at {path}")
        return load_file(path)
    for directory in search_dirs():
        candidate = directory / f"{name_or_path}.py"
        if candidate.is_file():
            return load_file(candidate)
    if name_or_path in task_registry.registered():
        return default_config(name_or_path)
    raise ValueError(
        f"unknown experiment {name_or_path!r}; expected a file path or one of: "
        f"{', '.join(available())}"
    )
