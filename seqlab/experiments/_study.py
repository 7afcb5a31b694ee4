"""The study behind ``seqlab tune``: its settings, Optuna storage, sampler and pruner, the
record in ``tune.json`` that a study is never continued without, and its summary.

``_tune`` runs trials with these; ``_tune_report`` reports on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pathlib
import warnings

import numpy as np
from omegaconf import OmegaConf

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
    """How a study is run (may change between invocations, unlike STUDY_KEYS; the study's
    name and storage never do). ``storage`` None: ``DIR/study.db``, found again wherever
    the study directory is moved or copied."""

    trials: int
    study: str
    storage: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    sampler_seed: int = 0
    prune_warmup: int = 0
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    grace_period: float = GRACE_PERIOD

    def check(self) -> None:
        def number(value) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        if not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"--trials must be an integer >= 1, got {self.trials!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"
            )
        if self.pruner not in PRUNERS:
            raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if not isinstance(self.prune_warmup, int) or self.prune_warmup < 0:
            raise ValueError(f"--prune-warmup must be >= 0 steps, got {self.prune_warmup!r}")
        if not isinstance(self.sampler_seed, int) or not 0 <= self.sampler_seed < 2**32:
            raise ValueError(f"--sampler-seed must be in 0 .. 2**32-1, got {self.sampler_seed!r}")
        if not number(self.heartbeat_interval) or not 1 <= self.heartbeat_interval <= 3600:
            raise ValueError(
                f"--heartbeat-interval must be 1 .. 3600 seconds, got {self.heartbeat_interval!r}"
            )
        if not number(self.grace_period) or not (
            self.heartbeat_interval < self.grace_period <= 7 * 86400
        ):
            raise ValueError(
                f"--grace-period must exceed --heartbeat-interval ({self.heartbeat_interval}) "
                f"and be at most a week, got {self.grace_period!r}"
            )
        if not isinstance(self.study, str) or not self.study:
            raise ValueError("--study must be a non-empty name")


def normalize_storage(url: str | None) -> str | None:
    """``--storage`` as saved in tune.json: paths made absolute (a study is continued and
    reported from any folder); in-memory databases refused (every worker and thread would
    see its own)."""
    if url is None:
        return None
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"--storage must be a database URL or a file path, got {url!r}")
    if "://" not in url:
        return str(pathlib.Path(url).absolute())
    if url.startswith("sqlite"):
        _, _, path = url.partition(":///")
        if not path or path.startswith(":memory:") or "mode=memory" in url:
            raise ValueError(
                f"--storage {url}: an in-memory database keeps nothing and no other worker "
                "sees it; give a file (sqlite:///path/to/study.db)"
            )
        if not path.startswith("/"):
            return f"{url.partition(':///')[0]}:///{pathlib.Path(path).absolute()}"
    return url


def storage_url(out_dir, settings: Settings) -> str:
    """The storage of the study in ``out_dir``: its ``--storage``, or ``DIR/study.db``."""
    if settings.storage is not None:
        return settings.storage
    path = (pathlib.Path(out_dir) / "study.db").absolute()
    if any(c in str(path) for c in "?#%"):
        raise ValueError(
            f"{out_dir}: a study directory whose path holds ?, # or % cannot hold its SQLite "
            "database (they mean something in a URL); choose another --out or give --storage"
        )
    return f"sqlite:///{path}"


def open_storage(url: str, settings: Settings | None = None):
    """An Optuna storage for ``url``: a database URL (``sqlite:///...``,
    ``postgresql://...``) with the heartbeat and retry of dead workers' trials, or any other
    string as the path of a journal file. A ValueError says why it cannot be opened."""
    optuna = load_optuna()
    settings = settings or Settings(trials=1, study="-")
    try:
        if "://" not in url:
            from optuna.storages.journal import JournalFileBackend

            path = pathlib.Path(url)
            if not path.parent.is_dir():
                raise ValueError(f"its folder {path.parent} does not exist")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine = {}
        if url.startswith("sqlite"):
            from sqlalchemy.pool import NullPool

            # workers wait up to 2 minutes for each other's writes; no pool: a connection
            # is closed as soon as Optuna's session is done with it (none is left open)
            engine = {"connect_args": {"timeout": 120}, "poolclass": NullPool}
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


def _one_sampler(settings: Settings, space: Space, seed: int):
    optuna = load_optuna()
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


def check_sampler(settings: Settings, space: Space) -> None:
    """Refuse a sampler this space cannot use (before anything is written)."""
    if space.balance and settings.sampler == "grid":
        raise ValueError(
            "space: balance: takes turns through enqueued trials, which the grid sampler "
            "cannot complete; the grid already gives every choice its share"
        )
    make_sampler(settings, space)  # a grid of float ranges, CMA-ES without cmaes


def make_sampler(settings: Settings, space: Space):
    """The study's sampler: ``--sampler``, made again for every trial with a seed drawn
    from (``--sampler-seed``, the trial's number). One worker repeats a seeded study
    exactly; two workers, or a study continued later, never replay the same random
    numbers (one seed per process would give every worker the same first trials)."""
    make = _per_trial_seed()
    # the grid sampler shuffles its grid with its seed and trials record an index into
    # that order: every trial (and worker) must see the same order, so it is never rebuilt
    rebuild = settings.sampler != "grid"
    return make(lambda seed: _one_sampler(settings, space, seed), settings.sampler_seed, rebuild)


@functools.cache
def _per_trial_seed():
    """``PerTrialSeed``, made on first use (optuna is imported only when a study runs)."""

    class PerTrialSeed(load_optuna().samplers.BaseSampler):
        """A sampler rebuilt at ``before_trial`` with a seed of (seed, trial number) when
        ``rebuild``; every other call goes to it (``inner``). TPE, random and CMA-ES keep
        their state in the study (CMA-ES in the trials' system attributes), so rebuilding
        loses nothing; the grid sampler is not rebuilt (its order is its seed's)."""

        def __init__(self, make, seed: int, rebuild: bool = True):
            self._make, self._seed, self._rebuild = make, seed, rebuild
            self.inner = make(seed)

        def before_trial(self, study, trial) -> None:
            if self._rebuild:
                state = np.random.SeedSequence([self._seed, trial.number]).generate_state(1)
                self.inner = self._make(int(state[0]))
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            if isinstance(self.inner, load_optuna().samplers.GridSampler):
                return  # it only calls study.stop(), which works inside optimize() alone
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return PerTrialSeed


def _trial_bounds(config, space: Space, key: str, end: str):
    """A train.* setting every trial shares, or the ``end`` of its range when searched."""
    param = next((p for p in space.params if p.key == key), None)
    if param is None:
        return OmegaConf.select(apply_overrides(config, list(space.fixed)), key)
    values = [int(v) for v in param.boundary()]
    return max(values) if end == "high" else min(values)


def make_pruner(settings: Settings, config, space: Space):
    """``--pruner``, sized from what the trials run (``fixed:`` and searched values
    included): the first evaluation at ``train.log_every``, the last at ``train.steps``.
    With ``balance: KEY`` the median and successive-halving pruners compare a trial only
    with the trials of its own choice of KEY (a cell that leaves its plateau later than
    the others is judged against its own kind, and the median pruner waits for 2 finished
    trials of the group instead of 5); Hyperband's brackets span the study."""
    optuna = load_optuna()
    first = _trial_bounds(config, space, "train.log_every", "low")
    warmup = settings.prune_warmup
    if settings.pruner == "median":
        # Optuna's default of 5 finished trials before any pruning; within a balanced
        # group, 2 (the group has a share of the budget, and 5 would leave nothing to prune)
        startup = 2 if space.balance else 5
        median = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
        return _within_balance(median, space)
    if settings.pruner == "sha":
        halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(first, warmup))
        return _within_balance(halving, space)
    if settings.pruner == "hyperband":
        steps = _trial_bounds(config, space, "train.steps", "high")
        return optuna.pruners.HyperbandPruner(
            min_resource=max(first, warmup), max_resource=max(steps, first, warmup)
        )
    return optuna.pruners.NopPruner()


def _within_balance(pruner, space: Space):
    if not space.balance:
        return pruner
    return _grouped_pruner()(pruner, space.balance)


class _GroupView:
    """The study as a pruner sees it within one group: only the trials whose ``key`` took
    ``value``; everything else is the study's."""

    def __init__(self, study, key: str, value):
        self._study, self._key, self._value = study, key, value

    def get_trials(self, deepcopy: bool = True, states=None):
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.params.get(self._key) == self._value]

    @property
    def trials(self):
        return self.get_trials()

    def __getattr__(self, name):
        return getattr(self._study, name)


@functools.cache
def _grouped_pruner():
    class GroupedPruner(load_optuna().pruners.BasePruner):
        """``inner`` applied within the group of trials sharing the trial's ``key``."""

        def __init__(self, inner, key: str):
            self.inner, self.key = inner, key

        def prune(self, study, trial) -> bool:
            return self.inner.prune(_GroupView(study, self.key, trial.params.get(self.key)), trial)

    return GroupedPruner


def is_heartbeat_enabled(study) -> bool:
    """Whether the study's storage records heartbeats (Optuna's databases do; its journal
    file does not)."""
    storage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)
    return interval() is not None


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
    choice of every categorical key and both ends of every range; returns the metric
    names of the task. A ValueError names what is wrong; nothing is written."""
    space.check(config)
    names: list[str] = []
    seen = set()
    for assignment in space.corners():
        overrides = [*space.overrides(assignment), f"train.num_seeds={seeds}"]
        key = tuple(overrides)
        if key in seen:
            continue
        seen.add(key)
        try:
            experiment = Experiment.from_config(apply_overrides(config, overrides))
            experiment.check()
            names = experiment.metric_names()
        except Exception as error:  # noqa: BLE001 - e.g. OverflowError of a huge size
            shown = " ".join(override(k, v) for k, v in assignment.items())
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise ValueError(f"space: {shown}: {reason}") from None
    if metric not in names:
        raise ValueError(
            f"--metric {metric!r} is not a metric of this task; it has {', '.join(names)}"
        )
    return names


def check_plan(out_dir: pathlib.Path, record: dict, settings: Settings) -> None:
    """Refuse an ``out_dir`` that holds another study (other config, space, metric,
    direction or seeds; or another name or storage), or that is not a study; writes
    nothing."""
    path = out_dir / TUNE
    if path.exists():
        old, old_settings = read_plan(out_dir)
        changed = _difference(old, record)
        if changed:
            raise ValueError(
                f"{out_dir} holds a study created with another {changed}; continue it "
                f"with `seqlab tune {out_dir}`, or choose another --out"
            )
        for name in ("study", "storage"):
            if getattr(old_settings, name) != getattr(settings, name):
                shown = getattr(old_settings, name) or "DIR/study.db"
                raise ValueError(
                    f"{out_dir} holds the study whose {name} is {shown}, not "
                    f"{getattr(settings, name) or 'DIR/study.db'}; continue it with "
                    f"`seqlab tune {out_dir}`, or choose another --out"
                )
    elif out_dir.exists() and any(
        p.name != TRIALS and not p.name.startswith((".", "study.db")) for p in out_dir.iterdir()
    ):
        raise ValueError(f"{out_dir} exists and is not a study; choose another --out")


def write_plan(out_dir: pathlib.Path, record: dict, settings: Settings) -> None:
    """Write ``tune.json``: the study's record and the settings it last ran with."""
    _rundir.write_json(out_dir / TUNE, {"study": record, "settings": dataclasses.asdict(settings)})


def read_plan(out_dir) -> tuple[dict, Settings]:
    """(record, settings) of the study in ``out_dir``; a ValueError when tune.json is
    missing or damaged."""
    path = pathlib.Path(out_dir) / TUNE
    if not path.is_file():
        raise ValueError(f"{out_dir} is not a study directory: {TUNE} is missing")
    plan = _rundir.read_json(path)
    try:
        record, settings = plan["study"], Settings(**plan["settings"])
        missing = [k for k in STUDY_KEYS if k not in record]
        if missing:
            raise KeyError(", ".join(missing))
        settings.check()
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {error})") from None
    return record, settings


def space_of(record: dict) -> Space:
    saved = record["space"]
    space = parse_space({"space": saved["space"], "balance": saved.get("balance")})
    return dataclasses.replace(space, fixed=tuple(saved["fixed"]))


def open_study(out_dir, record: dict, settings: Settings, space: Space, config, *, create: bool):
    """The Optuna study of ``out_dir`` (created when ``create``), checked to be the study
    ``record`` describes."""
    optuna = load_optuna()
    url = storage_url(out_dir, settings)
    storage = open_storage(url, settings)
    direction = record["direction"]
    stamp = json.dumps(record, sort_keys=True)
    try:
        if create:
            study = optuna.create_study(
                storage=storage,
                study_name=settings.study,
                direction=direction,
                sampler=make_sampler(settings, space),
                pruner=make_pruner(settings, config, space),
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(
                study_name=settings.study,
                storage=storage,
                sampler=make_sampler(settings, space),
                pruner=make_pruner(settings, config, space),
            )
    except KeyError:
        raise ValueError(f"no study {settings.study!r} in {url}") from None
    saved = study.user_attrs.get("seqlab")
    if saved is None:
        study.set_user_attr("seqlab", stamp)
        saved = study.user_attrs.get("seqlab")
    if saved != stamp:
        changed = _difference(json.loads(saved), record)
        raise ValueError(
            f"study {settings.study!r} in {url} was created with another "
            f"{changed or 'setup'}: refused (choose another --study or --out)"
        )
    return study


def load_existing(out_dir):
    """(study, record, settings) of the study in ``out_dir``, to read (no sampler)."""
    optuna = load_optuna()
    record, settings = read_plan(out_dir)
    url = storage_url(out_dir, settings)
    try:
        study = optuna.load_study(study_name=settings.study, storage=open_storage(url, settings))
    except KeyError:
        raise ValueError(f"no study {settings.study!r} in {url}") from None
    return study, record, settings


def study_summary(out_dir, study=None) -> dict:
    """Counts of trials by state, the best trial, and the best per ``model.cell``."""
    optuna = load_optuna()
    out_dir = pathlib.Path(out_dir)
    record, _ = read_plan(out_dir)
    if study is None:
        study, _, _ = load_existing(out_dir)
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    retried = {n for t in trials for n in t.system_attrs.get("retry_history") or []}
    counts: dict[str, int] = {}
    for t in trials:
        state = "retried" if t.number in retried else t.state.name.lower()
        counts[state] = counts.get(state, 0) + 1
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
