"""seqlab tune: the space and its checks, a seeded study that repeats itself, pruning on
seqlab's evaluations, seeds per trial and the confirmation run, two workers on one SQLite
study, a worker killed mid-trial and its trial retried from the checkpoint, refusals, and
the study's report."""

import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optuna
import pytest
import yaml

from seqlab import experiments
from seqlab.cli import main
from seqlab.experiments import _rundir, _study, _tune
from seqlab.experiments._space import parse_space

# a toy adding problem: every trial trains in a second or two
TINY = {
    "data.seq_len": 12,
    "data.eval_size": 64,
    "train.batch_size": 16,
    "model.hidden_size": 8,
    "train.steps": 40,
    "train.log_every": 10,
    "checkpoint.every": 10,
}
LR = {"kind": "float", "low": 1e-3, "high": 0.1, "log": True}


def space(**keys):
    return parse_space({"fixed": dict(TINY), "space": keys or {"train.lr": LR}})


def write_space(path, **keys):
    path.write_text(yaml.safe_dump({"fixed": dict(TINY), "space": keys or {"train.lr": LR}}))
    return path


def study_of(out_dir):
    return _tune.load_existing(out_dir)[0]


@pytest.fixture
def adding():
    return experiments.find("adding")


# ------------------------------------------------------------------ the space


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"model.no_such_key": LR}, "model.no_such_key is not a key"),
        ({"train.lr": {"kind": "float", "low": 0.1, "high": 0.01}}, "low 0.1 > high 0.01"),
        ({"train.lr": {"kind": "float", "low": 0, "high": 0.1, "log": True}}, "low must be > 0"),
        ({"model.cell": {"kind": "categorical", "choices": ["lstm", "nope"]}}, "nope"),
        ({"train.lr": {"kind": "uniform", "low": 0, "high": 1}}, "kind must be one of"),
        ({"train.lr": {"kind": "float", "low": 1e-3, "hi": 1}}, "unknown field(s) hi"),
        ({"model.hidden_size": {"kind": "int", "low": 8, "high": 20, "step": 8}}, "multiple"),
        ({"model.hidden_size": {"kind": "int", "low": 8.5, "high": 20}}, "must be an integer"),
        ({"train.lr": {"kind": "categorical", "choices": [0.1, 0.1]}}, "repeats a value"),
        ({"model.hidden_size": {"kind": "categorical", "choices": [8, "8"]}}, "repeats a value"),
        ({"seed": {"kind": "int", "low": 0, "high": 3}}, "seed is not a hyperparameter"),
        ({"model.hidden_size": {"kind": "int", "low": 8, "high": 10**400}}, "too large"),
        # a cell option for a cell that does not take it: the condition is missing
        ({"model.cell_options.max_timescale": LR}, "max_timescale"),
        # a condition on a key that is not a categorical of the space
        ({"train.lr": {**LR, "when": {"model.cell": "gru"}}}, "must be a categorical key"),
        (
            {
                "model.cell": {"kind": "categorical", "choices": ["gru", "diag_gru"]},
                "model.cell_options.max_timescale": {**LR, "when": {"model.cell": "lstm"}},
            },
            "not among the choices",
        ),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(adding, keys, message):
    with pytest.raises(ValueError, match="space: ") as error:
        space(**keys).check(adding)
    assert message in str(error.value)


def test_conditional_keys_are_sampled_only_when_their_condition_holds(adding):
    conditional = space(
        **{
            "model.cell": {"kind": "categorical", "choices": ["gru", "diag_gru"]},
            "model.cell_options.max_timescale": {
                "kind": "float",
                "low": 10,
                "high": 1000,
                "log": True,
                "when": {"model.cell": "diag_gru"},
            },
        }
    )
    conditional.check(adding)  # each condition applied with its cell: accepted
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = conditional.suggest(trial)
        seen.add(values["model.cell"])
        assert ("model.cell_options.max_timescale" in values) == (
            values["model.cell"] == "diag_gru"
        )
        if "model.cell_options.max_timescale" in values:
            assert 10 <= values["model.cell_options.max_timescale"] <= 1000
        experiments.apply_overrides(adding, conditional.overrides(values))  # a valid config
        study.tell(trial, 0.0)
    assert seen == {"gru", "diag_gru"}


@pytest.mark.parametrize(
    "balance, message",
    [("train.lr", "unconditional categorical"), ("model.nope", "unconditional categorical")],
)
def test_balance_must_name_a_categorical_key(balance, message):
    with pytest.raises(ValueError, match=message):
        parse_space({"balance": balance, "space": {"train.lr": LR}})


def test_a_balanced_study_gives_each_choice_its_turn(tmp_path, adding, standard_promotion):
    cells = {"kind": "categorical", "choices": ["rnn", "gru"]}
    balanced = parse_space(
        {
            "balance": "model.cell",
            "fixed": dict(TINY),
            "space": {"model.cell": cells, "train.lr": LR},
        }
    )
    out = tmp_path / "balanced"
    _tune.tune(adding, balanced, out, trials=3, pruner="none", progress=False)
    study = study_of(out)
    assert [t.params["model.cell"] for t in study.trials] == ["rnn", "gru", "rnn"]
    assert len({t.params["train.lr"] for t in study.trials}) == 3  # the sampler chose the rest
    # continued with a bigger budget (the command line), the turns go on; resume is a no-op
    assert main(["tune", str(out), "--trials", "4"]) == 0
    assert [t.params["model.cell"] for t in study_of(out).trials] == ["rnn", "gru", "rnn", "gru"]
    assert main(["resume", str(out)]) == 0
    assert len(study_of(out).trials) == 4
    before = (out / "tune.json").read_bytes()
    assert main(["tune", str(out), "--sampler", "grid"]) == 2  # grid cannot take turns
    assert (out / "tune.json").read_bytes() == before
    text = (out / "report.md").read_text()
    assert "| rnn |" in text and "2 complete" in text


def test_the_readme_space_is_accepted(adding):
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    (block,) = re.findall(r"```yaml\n(.*?)```", readme.read_text(), flags=re.DOTALL)
    readme_space = parse_space(yaml.safe_load(block))
    assert readme_space.balance == "model.cell"
    readme_space.check(adding)


def test_a_balanced_study_prunes_within_each_choice(adding):
    """With balance: model.cell the median pruner compares a trial with its own cell's
    trials: a slow cell is not pruned for being slower than another cell."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    cells = {"kind": "categorical", "choices": ["lstm", "gru"]}
    keys = {"model.cell": cells, "train.lr": LR}
    distributions = {
        "model.cell": CategoricalDistribution(["lstm", "gru"]),
        "train.lr": FloatDistribution(1e-3, 0.1, log=True),
    }
    verdicts = {}
    for balance in ("model.cell", None):
        raw = {"fixed": dict(TINY), "space": keys} | ({"balance": balance} if balance else {})
        balanced = parse_space(raw)
        settings = _tune.Settings(trials=10, study="s", pruner="median")
        pruner = _study.make_pruner(settings, adding, balanced)
        study = optuna.create_study(pruner=pruner)
        for cell, value in [("lstm", 1.0)] * 5 + [("gru", 0.1)] * 5:
            study.add_trial(
                optuna.trial.create_trial(
                    params={"model.cell": cell, "train.lr": 0.01},
                    distributions=distributions,
                    value=value,
                    intermediate_values={10: value},
                )
            )
        study.enqueue_trial({"model.cell": "lstm", "train.lr": 0.02})
        trial = study.ask(distributions)
        trial.report(0.9, 10)  # better than its own cell's 1.0, worse than the study's 0.55
        verdicts[balance] = trial.should_prune()
    assert verdicts == {"model.cell": False, None: True}


def test_the_shipped_space_is_accepted(adding):
    shipped = experiments.load_space(experiments._lookup.REPO_EXPERIMENTS / "tune_cells.yaml")
    assert {p.key for p in shipped.params} >= {"model.cell", "train.lr"}
    assert set(shipped.params[0].choices) == {"rnn", "lstm", "gru", "diag_gru"}
    shipped.check(adding)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--space", "{space}", "--trials", "0"], "--trials must be an integer >= 1"),
        (["--space", "{space}", "--trials", "2", "--metric", "eval/nope"], "eval/nope"),
        (["--space", "{bad}", "--trials", "2"], "low 0.5 > high 0.1"),
        (["--trials", "2"], "needs --space"),
        (["--space", "{space}", "--trials", "2", "--storage", "nodriver://x/y"], "--storage"),
        (["--space", "{space}", "--trials", "2", "--storage", "/no/such/dir/j.log"], "--storage"),
    ],
)
def test_command_line_refusals_are_one_line_with_status_2(
    tmp_path, capsys, argv, message, standard_promotion
):
    good = write_space(tmp_path / "space.yaml")
    bad = write_space(
        tmp_path / "bad.yaml", **{"train.lr": {"kind": "float", "low": 0.5, "high": 0.1}}
    )
    argv = [a.format(space=good, bad=bad) for a in argv]
    out = tmp_path / "study"
    assert main(["tune", "adding", *argv, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("seqlab tune: error:")
    assert message in error
    assert not (out / "tune.json").exists()  # nothing of a study was written


# ------------------------------------------------------------------ studies in process


@pytest.fixture(scope="module")
def pruned_study(tmp_path_factory):
    """Five good trials (enqueued), then a bad one: the median pruner stops it."""
    out = tmp_path_factory.mktemp("tune") / "pruned"
    config = experiments.find("adding")
    with jax.numpy_dtype_promotion("standard"):
        study, *_ = _tune.prepare_study(
            config, space(), out, trials=6, sampler="random", pruner="median"
        )
        for lr in (0.03, 0.04, 0.05, 0.06, 0.07):
            study.enqueue_trial({"train.lr": lr})
        study.enqueue_trial({"train.lr": 1e-3})  # learns nothing in 40 steps
        summary = _tune.continue_study(out, progress=False)
    return out, summary


def test_pruning_stops_a_bad_trial_and_its_directory_says_so(pruned_study):
    out, summary = pruned_study
    assert summary["trials"] == {"complete": 5, "pruned": 1}
    study = study_of(out)
    bad = study.trials[5]
    assert bad.state == optuna.trial.TrialState.PRUNED and bad.params["train.lr"] == 1e-3
    run_summary = _rundir.read_summary(out / "trials" / "5")
    assert run_summary["status"] == "pruned"
    assert run_summary["step"] < 40
    steps = [r["step"] for r in _rundir.read_metrics(out / "trials" / "5" / "metrics.jsonl")]
    assert steps == list(range(10, run_summary["step"] + 1, 10))  # its records are kept
    # what Optuna saw is what the run recorded, step for step
    records = _rundir.read_metrics(out / "trials" / "5" / "metrics.jsonl")
    assert bad.intermediate_values == {r["step"]: r["eval/loss"] for r in records}
    # the pruned run is final: resuming it trains nothing more
    assert experiments.resume(out / "trials" / "5", progress=False)["status"] == "pruned"
    # a trial is an ordinary run directory
    run = experiments.load_run(out / "trials" / "0")
    assert math.isclose(run.config.train.lr, 0.03)
    assert study.trials[0].value == pytest.approx(run.metrics[-1]["eval/loss"])


def test_the_report_of_a_study(pruned_study, capsys):
    out, _ = pruned_study
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "Trials: 5 complete, 1 pruned." in text
    assert "| 5 | pruned |" in text
    assert "Parameter importances" in text and "| train.lr |" in text
    assert "Pruning stopped 1 trial(s)" in text
    for name in ("optimization_history", "parallel_coordinate"):
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert f"plots/{name}.png" in text
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[6].startswith("5,pruned,")
    study = study_of(out)
    best = min((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    assert f"**Best trial: {best.number}**" in text


def test_a_seeded_study_repeats_its_trials(tmp_path, adding, standard_promotion):
    runs = []
    for name in ("a", "b"):
        _tune.tune(
            adding,
            space(),
            tmp_path / name,
            trials=3,
            sampler="tpe",
            sampler_seed=7,
            progress=False,
        )
        runs.append([(t.params, t.value) for t in study_of(tmp_path / name).trials])
    assert runs[0] == runs[1]
    assert len({p["train.lr"] for p, _ in runs[0]}) == 3  # three different trials
    _tune.tune(
        adding, space(), tmp_path / "c", trials=3, sampler="tpe", sampler_seed=8, progress=False
    )
    assert [t.params for t in study_of(tmp_path / "c").trials] != [p for p, _ in runs[0]]


def test_the_cmaes_sampler_searches_a_float_range(tmp_path, adding, standard_promotion):
    pytest.importorskip("cmaes")
    keys = {"train.lr": LR, "train.clip_norm": {"kind": "float", "low": 0.5, "high": 5.0}}
    _tune.tune(adding, space(**keys), tmp_path / "cma", trials=2, sampler="cmaes", progress=False)
    trials = study_of(tmp_path / "cma").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(1e-3 <= t.params["train.lr"] <= 0.1 for t in trials)
    assert trials[0].params != trials[1].params


def test_seeds_per_trial_and_the_confirmation_on_fresh_seeds(tmp_path, adding, standard_promotion):
    out = tmp_path / "seeded"
    _tune.tune(adding, space(), out, trials=2, seeds=2, sampler="random", progress=False)
    study = study_of(out)
    for trial in study.trials:
        summary = _rundir.read_summary(out / "trials" / str(trial.number))
        assert summary["seeds"] == [0, 1]
        per_seed = summary["final_per_seed"]["eval/loss"]
        assert per_seed[0] != per_seed[1]
        assert trial.value == pytest.approx(np.mean(per_seed), rel=1e-6)
    assert main(["tune", str(out), "--confirm", "best", "--seeds", "3"]) == 0
    best = min(study.trials, key=lambda t: t.value)
    result = json.loads((out / "confirm" / f"trial{best.number}-seeds3.json").read_text())
    assert result["seeds"] == [2, 3, 4]  # none of the trials' seeds
    run = _rundir.read_summary(out / result["run_dir"])
    assert result["values"] == run["final_per_seed"]["eval/loss"]
    values = np.asarray(result["values"])
    half = 4.302653 * values.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 dof)
    assert result["ci95"] == pytest.approx([values.mean() - half, values.mean() + half], rel=1e-5)
    assert main(["report", str(out)]) == 0
    assert (
        f"Confirmation of trial {best.number} over 3 fresh seeds" in (out / "report.md").read_text()
    )


@pytest.mark.parametrize("dof, expected", [(2, 4.302653), (9, 2.262157), (30, 2.042272)])
def test_t_quantile(dof, expected):
    assert _tune._t_quantile(0.975, dof) == pytest.approx(expected, abs=2e-5)


def test_a_study_continued_with_another_space_is_refused(
    tmp_path, adding, capsys, standard_promotion
):
    good = write_space(tmp_path / "space.yaml")
    other = write_space(
        tmp_path / "other.yaml", **{"train.lr": {"kind": "float", "low": 1e-4, "high": 0.1}}
    )
    out = tmp_path / "study"
    journal = tmp_path / "shared.journal"
    _tune.prepare_study(adding, good, out, trials=1, storage=str(journal))
    assert main(["tune", "adding", "--space", str(other), "--trials", "1", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "created with another space" in error
    # the same study name in the same storage, from another folder
    argv = ["--space", str(other), "--trials", "1", "--storage", str(journal), "--study", "study"]
    assert main(["tune", "adding", *argv, "--out", str(tmp_path / "elsewhere")]) == 2
    error = capsys.readouterr().err
    assert "created with another space" in error and error.count("\n") == 1


# ------------------------------------------------------------------ workers and faults


def start(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "seqlab", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def done(process, timeout=300):
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    assert process.returncode == 0, err[-3000:]
    return out


def random_study(path, out, *, trials: int) -> list:
    """The command line of a study of random trials without pruning."""
    argv = ["tune", "adding", "--space", path, "--trials", trials, "--out", out]
    return [*argv, "--sampler", "random", "--pruner", "none"]


def test_two_workers_share_one_sqlite_study(tmp_path):
    path = write_space(tmp_path / "space.yaml")
    out = tmp_path / "study"
    argv = random_study(path, out, trials=6)
    first = start(*argv, "--worker", 0, "--num-workers", 2)
    second = start(*argv, "--worker", 1, "--num-workers", 2)
    try:
        logs = [done(first), done(second)]
    finally:
        first.kill(), second.kill()
    ran = [int(log.split("ran ")[1].split(" trial")[0]) for log in logs]
    assert sum(ran) == 6, logs
    study = study_of(out)
    trials = [t for t in study.trials if not t.user_attrs.get("surplus")]
    assert len(trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for trial in trials:  # each trial ran once: one record per step, in its own directory
        steps = [
            r["step"]
            for r in _rundir.read_metrics(out / "trials" / str(trial.number) / "metrics.jsonl")
        ]
        assert steps == [10, 20, 30, 40]
        lines = (out / "trials" / str(trial.number) / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 4


def test_a_killed_worker_s_trial_is_retried_from_its_checkpoint(tmp_path):
    keys = {"train.lr": {"kind": "categorical", "choices": [0.03]}}
    path = tmp_path / "space.yaml"
    fixed = {**TINY, "train.steps": 400, "train.log_every": 20, "checkpoint.every": 20}
    path.write_text(yaml.safe_dump({"fixed": fixed, "space": keys}))
    out = tmp_path / "study"
    beat = ["--heartbeat-interval", "1", "--grace-period", "4"]
    worker = start("tune", "adding", "--space", path, "--trials", "1", "--out", out, *beat)
    checkpoints = out / "trials" / "0" / "checkpoints"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # until a checkpoint of step 60 or later is committed
            names = [p.name for p in checkpoints.iterdir()] if checkpoints.is_dir() else []
            if any(name.isdigit() and int(name) >= 60 for name in names):
                break
            assert worker.poll() is None, worker.communicate()[1][-2000:]
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    killed_steps = [r["step"] for r in _rundir.read_metrics(out / "trials" / "0" / "metrics.jsonl")]
    assert 0 < max(killed_steps) < 400
    assert study_of(out).trials[0].state == optuna.trial.TrialState.RUNNING
    # started at once: the worker waits until the trial's heartbeat is stale, then retries it
    log = done(start("tune", out, *beat))
    assert "waiting for 1 running trial(s)" in log
    study = study_of(out)
    assert [t.state for t in study.trials] == [
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.COMPLETE,
    ]
    retry = study.trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.params == study.trials[0].params
    assert "retry of trial 0" in log
    resumed_from = int(log.split("from step ")[1].split()[0])
    assert resumed_from >= 60  # not from scratch
    steps = [r["step"] for r in _rundir.read_metrics(out / "trials" / "1" / "metrics.jsonl")]
    assert steps == list(range(20, 401, 20))  # continuous: no step twice, none lost
    lines = (out / "trials" / "1" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(steps)
    assert retry.value == pytest.approx(json.loads(lines[-1])["eval/loss"])
    text = (out / "report.md").read_text()
    assert "retried as 1" in text and "retry of 0" in text


def test_submitted_workers_share_the_study(tmp_path):
    """--submit local: submitit's local executor runs the workers (as on SLURM)."""
    pytest.importorskip("submitit")
    path = write_space(tmp_path / "space.yaml")
    out = tmp_path / "study"
    argv = random_study(path, out, trials=3)
    log = done(start(*argv, "--submit", "local", "--num-workers", "2"))
    assert "submitted 2 worker(s)" in log
    trials = study_of(out).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert (out / "report.md").exists() and len(list((out / "submitit").rglob("*_log.out"))) >= 2


def test_journal_storage_a_copied_study_and_continued_sampling(
    tmp_path, adding, standard_promotion
):
    journal = tmp_path / "journal.log"
    out = tmp_path / "j"
    _tune.tune(
        adding, space(), out, trials=2, storage=str(journal), sampler="random", progress=False
    )
    assert [t.state for t in study_of(out).trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # the default SQLite storage sits in the study directory: a copy is a study of its own
    first = tmp_path / "first"
    _tune.tune(adding, space(), first, trials=2, sampler="random", pruner="none", progress=False)
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(first, copy)
    _tune.continue_study(copy, trials=4, progress=False)
    assert len(study_of(first).trials) == 2 and len(study_of(copy).trials) == 4
    lrs = [t.params["train.lr"] for t in study_of(copy).trials]
    assert len(set(lrs)) == 4  # the continuation does not replay the first trials' draws
    assert sorted(p.name for p in (copy / "trials").iterdir()) == ["0", "1", "2", "3"]


def test_a_failed_command_leaves_the_study_as_it_was(tmp_path, adding, capsys, standard_promotion):
    path = write_space(tmp_path / "space.yaml")
    out = tmp_path / "study"
    _tune.tune(adding, path, out, trials=1, sampler="random", progress=False)
    before = (out / "tune.json").read_bytes()
    start_command = ["tune", "adding", "--space", str(path), "--trials", "2", "--out", str(out)]
    for extra, message in [
        (["--storage", "sqlite:////no/such/dir/x.db"], "storage"),
        (["--study", "other"], "study"),
        (["--grace-period", "inf"], "--grace-period"),
        (["--storage", "sqlite://"], "in-memory"),
    ]:
        assert main([*start_command, *extra]) == 2, extra
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, error
        assert (out / "tune.json").read_bytes() == before
    for argv, message in [
        (["tune", str(out), "--storage", "x.log"], "takes no --storage"),
        (["tune", str(out), "--seeds", "2"], "takes no --seeds"),
        (["tune", str(out), "--confirm", "best", "--seeds", "0"], "--seeds >= 2"),
        (["tune", "adding", "--space", str(path), "--trials", "1", "--seeds", "0"], "--seeds"),
    ]:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert main(["tune", str(out)]) == 0  # the same study continues (nothing to run)
    assert len(study_of(out).trials) == 1


def test_the_grid_sampler_stops_when_the_grid_is_covered(
    tmp_path, adding, standard_promotion, capsys
):
    keys = {
        "train.clip_norm": {"kind": "categorical", "choices": [0.5, 1.0, 2.0]},
        "train.lr": {"kind": "categorical", "choices": [0.01, 0.03]},
    }
    out = tmp_path / "grid"
    _tune.tune(adding, space(**keys), out, trials=10, sampler="grid", pruner="none", progress=False)
    points = [(t.params["train.clip_norm"], t.params["train.lr"]) for t in study_of(out).trials]
    assert sorted(points) == sorted((c, lr) for c in (0.5, 1.0, 2.0) for lr in (0.01, 0.03))
    assert "the grid is exhausted" in capsys.readouterr().out


def test_a_study_is_refused_across_the_processes_of_one_distributed_job(
    tmp_path, adding, monkeypatch
):
    monkeypatch.setattr(_tune._distributed, "multiprocess", lambda: True)
    with pytest.raises(ValueError, match="one tune worker per job"):
        _tune.prepare_study(adding, space(), tmp_path / "study", trials=1)
    assert not (tmp_path / "study").exists()


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_retried(
    tmp_path, adding, standard_promotion
):
    """Optuna's staleness check skips a running trial that never beat; seqlab fails it
    (and queues its retry) once it is older than the grace period."""
    out = tmp_path / "study"
    beat = {"heartbeat_interval": 1, "grace_period": 2}
    study, *_ = _tune.prepare_study(adding, space(), out, trials=1, sampler="random", **beat)
    with pytest.warns(UserWarning, match="Heartbeat"):
        study.ask()  # a worker that asked, then died at once
    time.sleep(2.5)
    _tune.continue_study(out, progress=False)
    states = [t.state for t in study_of(out).trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert study_of(out).trials[1].system_attrs["retry_history"] == [0]
