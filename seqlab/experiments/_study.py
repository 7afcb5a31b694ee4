"""The study behind ``seqlab tune``: its settings, Optuna storage, sampler and pruner, the
record in ``tune.json`` that a study is never continued without, and its summary.

``_tune`` runs trials with these; ``_tune_report`` reports on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import warnings

from seqlab.experiments import _rundir
from seqlab.experiments._config import apply_overrides, to_dict
from seqlab.experiments._space import Space, override, parse_space
from seqlab.experiments._train import Experiment

TUNE = "tune.json"
TRIALS = "trials"
CONFIRM = "confirm"
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "sha", "hyperband", "none")
DIRECTIONS = ("minimize", "maximize")
HEARTBEAT_INTERVAL = 30.0  # seconds between a running trial's heartbeats
GRACE_PERIOD = 120.0  # seconds without one after which the trial counts as dead
MAX_RETRY = 3  # retries of a trial whose worker died, before it stays failed
# What a study is created with: continuing it with any of these changed is refused.
STUDY_KEYS = ("base", "space", "metric", "direction", "seeds")


def load_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@contextlib.contextmanager
def quiet_experimental():
    """Optuna flags the heartbeat helpers and some sampler options as experimental."""
    optuna = load_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a study is run (may change between invocations, unlike STUDY_KEYS)."""

    trials: int
    study: str
    storage: str
    sampler: str = "tpe"
    pruner: str = "median"
    sampler_seed: int = 0
    prune_warmup: int = 0
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    grace_period: float = GRACE_PERIOD

    def check(self) -> None:
        if self.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {self.trials}")
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"
            )
        if self.pruner not in PRUNERS:
            raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.prune_warmup < 0:
            raise ValueError(f"--prune-warmup must be >= 0 steps, got {self.prune_warmup}")
        if not self.heartbeat_interval >= 1:
            raise ValueError(
                f"--heartbeat-interval must be >= 1 second, got {self.heartbeat_interval}"
            )
        if not self.grace_period > self.heartbeat_interval:
            raise ValueError(
                f"--grace-period ({self.grace_period}) must exceed --heartbeat-interval "
                f"({self.heartbeat_interval})"
            )
        if not self.study:
            raise ValueError("--study must be a non-empty name")


def default_storage(out_dir) -> str:
    return f"sqlite:///{(pathlib.Path(out_dir) / 'study.db').absolute()}"


def open_storage(url: str, settings: Settings | None = None):
    """An Optuna storage for ``url``: a database URL (``sqlite:///...``,
    ``postgresql://...``) with the heartbeat and retry of dead workers' trials, or any other
    string as the path of a journal file. A ValueError says why it cannot be opened."""
    optuna = load_optuna()
    settings = settings or Settings(trials=1, study="-", storage=url)
    try:
        if "://" not in url:
            from optuna.storages.journal import JournalFileBackend

            path = pathlib.Path(url)
            if not path.parent.is_dir():
                raise ValueError(f"its folder {path.parent} does not exist")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine = {}
        if url.startswith("sqlite"):
            engine = {"connect_args": {"timeout": 120}}  # workers wait for each other's writes
        with quiet_experimental(), _creation_lock(url):
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=max(1, round(settings.heartbeat_interval)),
                grace_period=max(2, round(settings.grace_period)),
                heartbeat_stale_trial_callback=retry,
            )
    except Exception as error:  # noqa: BLE001 - sqlalchemy, drivers, files: one line
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise ValueError(f"--storage {url} cannot be opened: {reason}") from None


@contextlib.contextmanager
def _creation_lock(url: str):
    """Workers starting together on one new SQLite file would race to create its tables
    (one fails on a UNIQUE constraint): they open it one at a time, under a lock file
    beside it."""
    path = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:" or not pathlib.Path(path).parent.is_dir():
        yield
        return
    import fcntl

    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def make_sampler(settings: Settings, space: Space):
    optuna = load_optuna()
    seed = settings.sampler_seed
    with quiet_experimental():
        if settings.sampler == "tpe":
            # multivariate + group: the keys' joint density, per group of keys that occur
            # together (conditional keys); constant_liar: with several workers, running
            # trials count as bad guesses so the workers do not all sample one region
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
            )
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if settings.sampler == "grid":
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ValueError(
                "--sampler cmaes needs the cmaes package: pip install 'seqlab[tune]'"
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(settings: Settings, config):
    optuna = load_optuna()
    first = config.train.log_every  # the first evaluation
    warmup = settings.prune_warmup
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if settings.pruner == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(first, warmup))
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(first, warmup), max_resource=config.train.steps
        )
    return optuna.pruners.NopPruner()


def infer_direction(metric: str) -> str:
    return "maximize" if metric.endswith(("accuracy", "exact_match")) else "minimize"


def study_record(config, space: Space, metric: str, direction: str, seeds: int) -> dict:
    record = {
        "base": to_dict(config),
        "space": space.to_dict(),
        "metric": metric,
        "direction": direction,
        "seeds": seeds,
    }
    return json.loads(json.dumps(record))


def _difference(old: dict, new: dict) -> str:
    names = [k for k in STUDY_KEYS if old.get(k) != new.get(k)]
    names = [{"base": "experiment config"}.get(k, k) for k in names]
    return ", ".join(names)


def check_study(config, space: Space, metric: str, seeds: int) -> list[str]:
    """Check the space against the config and build (and trace) the experiment at every
    choice of every categorical key; returns the metric names of the task. A ValueError
    names what is wrong; nothing is written."""
    space.check(config)
    names: list[str] = []
    seen = set()
    for assignment, build in space.corners():
        overrides = [*space.overrides(assignment), f"train.num_seeds={seeds}"]
        key = tuple(overrides)
        if not build or key in seen:
            continue
        seen.add(key)
        try:
            experiment = Experiment.from_config(apply_overrides(config, overrides))
            experiment.check()
            names = experiment.metric_names()
        except ValueError as error:
            shown = " ".join(override(k, v) for k, v in assignment.items())
            raise ValueError(f"space: {shown}: {error}") from None
    if metric not in names:
        raise ValueError(
            f"--metric {metric!r} is not a metric of this task; it has {', '.join(names)}"
        )
    return names


def write_plan(out_dir: pathlib.Path, record: dict, settings: Settings) -> None:
    """Create ``tune.json`` (or check that the one there holds the same study) and store
    the latest settings in it."""
    path = out_dir / TUNE
    if path.exists():
        old = _rundir.read_json(path)
        changed = _difference(old.get("study", {}), record)
        if changed:
            raise ValueError(
                f"{out_dir} holds a study created with another {changed}; continue it "
                f"with `seqlab tune {out_dir}`, or choose another --out"
            )
    elif out_dir.exists() and any(
        p.name != TRIALS and not p.name.startswith((".", "study.db")) for p in out_dir.iterdir()
    ):
        raise ValueError(f"{out_dir} exists and is not a study; choose another --out")
    _rundir.write_json(path, {"study": record, "settings": dataclasses.asdict(settings)})


def read_plan(out_dir) -> tuple[dict, Settings]:
    path = pathlib.Path(out_dir) / TUNE
    if not path.is_file():
        raise ValueError(f"{out_dir} is not a study directory: {TUNE} is missing")
    plan = _rundir.read_json(path)
    return plan["study"], Settings(**plan["settings"])


def space_of(record: dict) -> Space:
    saved = record["space"]
    space = parse_space({"space": saved["space"], "balance": saved.get("balance")})
    return dataclasses.replace(space, fixed=tuple(saved["fixed"]))


def open_study(out_dir, record: dict, settings: Settings, space: Space, config, *, create: bool):
    """The Optuna study of ``out_dir`` (created when ``create``), checked to be the study
    ``record`` describes."""
    optuna = load_optuna()
    storage = open_storage(settings.storage, settings)
    direction = record["direction"]
    stamp = json.dumps(record, sort_keys=True)
    try:
        if create:
            study = optuna.create_study(
                storage=storage,
                study_name=settings.study,
                direction=direction,
                sampler=make_sampler(settings, space),
                pruner=make_pruner(settings, config),
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(
                study_name=settings.study,
                storage=storage,
                sampler=make_sampler(settings, space),
                pruner=make_pruner(settings, config),
            )
    except KeyError:
        raise ValueError(f"no study {settings.study!r} in {settings.storage}") from None
    saved = study.user_attrs.get("seqlab")
    if saved is None:
        study.set_user_attr("seqlab", stamp)
        saved = study.user_attrs.get("seqlab")
    if saved != stamp:
        changed = _difference(json.loads(saved), record)
        raise ValueError(
            f"study {settings.study!r} in {settings.storage} was created with another "
            f"{changed or 'setup'}: refused (choose another --study or --out)"
        )
    return study


def study_summary(out_dir, study=None) -> dict:
    """Counts of trials by state, the best trial, and the best per ``model.cell``."""
    optuna = load_optuna()
    out_dir = pathlib.Path(out_dir)
    record, settings = read_plan(out_dir)
    if study is None:
        study = optuna.load_study(
            study_name=settings.study, storage=open_storage(settings.storage, settings)
        )
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    sign = 1.0 if record["direction"] == "minimize" else -1.0

    def row(t):
        return {
            "number": t.number,
            "value": t.value,
            "overrides": t.user_attrs.get("overrides", []),
        }

    summary = {"trials": counts, "metric": record["metric"], "direction": record["direction"]}
    if complete:
        summary["best"] = row(min(complete, key=lambda t: sign * t.value))
    if any(p.key == "model.cell" for p in space_of(record).params):
        per_cell = {}
        for t in complete:
            cell = t.params.get("model.cell")
            if cell not in per_cell or sign * t.value < sign * per_cell[cell].value:
                per_cell[cell] = t
        summary["best_per_cell"] = {c: row(t) for c, t in per_cell.items()}
    return summary
