"""The command line end to end, in subprocesses: run, kill and resume, sweep, report,
analyze, bad input (one line, exit status 2, nothing saved touched), data parallelism."""

import csv
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from seqlab.cli import main
from tests.helpers import xla_flags

TINY = [
    "model.hidden_size=8",
    "data.seq_len=12",
    "data.eval_size=64",
    "train.batch_size=16",
    "train.log_every=10",
    "checkpoint.every=20",
    "train.lr=0.01",
]


def seqlab(*args, check=True, env=None, timeout=300):
    result = subprocess.run(
        [sys.executable, "-m", "seqlab", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"seqlab {args} failed:\n{result.stderr[-3000:]}")
    return result


FAULTS = pathlib.Path(__file__).with_name("faults.py")


@pytest.fixture(scope="module")
def compile_cache() -> dict:
    """The environment of subprocesses that share JAX's persistent compilation cache: the
    run-wide one of tests/conftest.py (which every subprocess inherits anyway), spelled
    out for the tests that start several processes of one config."""
    return {"JAX_COMPILATION_CACHE_DIR": os.environ["SEQLAB_TEST_JAX_CACHE"]}


def killed(fault: str, *args, env: dict) -> None:
    """Run ``seqlab ARGS`` with ``fault`` injected (tests/faults.py); it must die of it."""
    result = subprocess.run(
        [sys.executable, str(FAULTS), fault, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, f"{fault}: {result.stderr[-3000:]}"


def tree_digest(directory: pathlib.Path) -> dict:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def read_tensorboard(directory: pathlib.Path) -> dict:
    """{tag: [(step, value)]} from TFRecord event files (framing read by hand)."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


FINISHED = ["run", "adding", *TINY, "train.steps=60"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, compile_cache):
    """One finished run for the tests that read it; tests that damage a run copy it. (Its
    compiled programs serve the kill tests' processes of the same config.)"""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = seqlab(*FINISHED, "--out", out, env=compile_cache)
    return out, result


def test_run_writes_a_complete_run_directory(finished_run):
    out, result = finished_run
    assert f"run directory: {out}" in result.stdout
    for name in ("config.yaml", "task.json", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50, 60]
    assert {"train/loss", "eval/loss", "eval/mse"} <= set(records[0])
    scalars = read_tensorboard(out / "tensorboard")
    assert [step for step, _ in scalars["eval/mse"]] == [10, 20, 30, 40, 50, 60]
    np.testing.assert_allclose(
        [v for _, v in scalars["eval/mse"]], [r["eval/mse"] for r in records], rtol=1e-6
    )
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [20, 40, 60]
    assert "model:\n  cell: lstm\n  hidden_size: 8" in (out / "config.yaml").read_text()


def test_report_and_analyze(finished_run):
    out, _ = finished_run
    analyzed = seqlab("analyze", out, "--step", "40")
    assert "step 40, layer 0: gradient norm decays by" in analyzed.stdout
    assert (out / "analysis" / "gradnorms_step40.json").is_file()
    seqlab("report", out)
    report = (out / "report.md").read_text()
    assert "Status **finished** at step 60" in report
    assert "![learning_curves](plots/learning_curves.png)" in report
    assert "gradnorms_step40.png" in report and (out / "plots" / "gradnorms_step40.png").is_file()
    bad = seqlab("analyze", out, "--step", "7", check=False)
    assert bad.returncode == 2 and "no checkpoint at step 7" in bad.stderr


def records_up_to(metrics: str, resumed: str) -> str:
    """The lines of ``metrics`` up to the step that ``resumed`` (a resume's output) names:
    what a resume keeps (it computes the records past its checkpoint again)."""
    start = int(re.search(r"resuming .* from step (\d+)", resumed).group(1))
    kept = [
        line
        for line in metrics.splitlines(keepends=True)
        if line.endswith("\n") and json.loads(line)["step"] <= start
    ]
    return "".join(kept)


def test_resume_after_sigkill_ends_where_an_uninterrupted_run_ends(tmp_path, compile_cache):
    args = ["run", "adding", *TINY, "train.steps=400", "train.num_seeds=2"]
    seqlab(*args, "--out", tmp_path / "straight", env=compile_cache)
    process = subprocess.Popen(
        [sys.executable, "-m", "seqlab", *map(str, args), "--out", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **compile_cache},
    )
    marker = tmp_path / "killed" / "checkpoints" / "40" / "commit_success.txt"
    deadline = time.time() + 120
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = tmp_path / "killed"
    before = (killed / "metrics.jsonl").read_text()
    assert not (killed / "summary.json").exists(), "the run ended before the kill"
    log = seqlab("resume", killed, env=compile_cache).stdout
    after = (killed / "metrics.jsonl").read_text()
    assert after.startswith(records_up_to(before, log))  # none up to its checkpoint lost
    from seqlab import load_run

    straight, resumed = load_run(tmp_path / "straight"), load_run(killed)
    import jax

    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    assert [r["eval/mse"] for r in straight.metrics] == [r["eval/mse"] for r in resumed.metrics]
    again = seqlab("resume", killed, env=compile_cache)
    assert "already finished" in again.stdout


def without_elapsed(run_dir: pathlib.Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed"} for line in lines]


def test_kills_at_many_points_of_run_and_resume_end_like_an_uninterrupted_run(
    finished_run, tmp_path, compile_cache
):
    """A run killed just after config.yaml, a resume killed inside the first save (only
    20.orbax-checkpoint-tmp, records up to 40), one killed between saves and one inside
    the last save: each resume continues from the newest committed checkpoint, cutting the
    records past it, and the run ends with every step recorded once and the records and
    parameters of the uninterrupted run."""
    out = tmp_path / "run"
    killed("kill-after-file:config.yaml", *FINISHED, "--out", out, env=compile_cache)
    assert not (out / "task.json").exists()
    killed("kill-in-save:20:40", "resume", out, env=compile_cache)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["20.orbax-checkpoint-tmp"]
    assert [r["step"] for r in without_elapsed(out)] == [10, 20, 30, 40]
    killed("kill-after-record:50", "resume", out, env=compile_cache)  # from step 0 again
    killed("kill-in-save:60:60", "resume", out, env=compile_cache)
    seqlab("resume", out, env=compile_cache)
    reference = finished_run[0]
    assert without_elapsed(out) == without_elapsed(reference)
    for name in ("task.json", "run.json"):  # written again by the first resume
        assert (out / name).read_text() == (reference / name).read_text(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["20", "40", "60"]
    import jax

    from seqlab import load_run

    straight, resumed = load_run(reference), load_run(out)
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_resume_restores_or_refuses_the_files_load_run_needs(finished_run, tmp_path, capsys):
    """A deleted task.json is written again (it follows from the config), one that cannot
    be read is refused and left alone, and a finished run whose checkpoints/ is gone is
    refused: resume never exits 0 on a directory that load_run cannot open."""
    from seqlab import load_run

    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    task = (out / "task.json").read_text()
    (out / "task.json").unlink()
    assert main(["resume", str(out)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert (out / "task.json").read_text() == task
    assert load_run(out).steps == [20, 40, 60]
    (out / "task.json").write_text("{")
    before = tree_digest(out)
    assert main(["resume", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "task.json cannot be read" in error, error
    assert tree_digest(out) == before
    (out / "task.json").write_text(task)
    shutil.rmtree(out / "checkpoints")
    assert main(["resume", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "checkpoints/ is missing" in error, error


def test_sweep_table_plots_and_restart_skips_finished_points(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "adding", "model.cell=rnn,gru", "train.num_seeds=2", "train.steps=20",
            *[f"{a}" for a in TINY], "--out", out]  # fmt: skip
    first = seqlab(*args)
    assert "[2/2] model.cell=gru" in first.stdout
    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    assert [r["model.cell"] for r in rows] == ["rnn", "gru"]
    assert all(r["status"] == "finished" and float(r["eval/mse std"]) >= 0 for r in rows)
    assert (out / "plots" / "final_metric.png").is_file()
    assert "| rnn |" in (out / "report.md").read_text().replace("p000_cell=rnn", "")
    summary = out / "points" / "p001_cell=gru" / "summary.json"
    summary.unlink()  # as if the sweep died after the last checkpoint of point 2
    second = seqlab(*args)
    assert "[1/2] model.cell=rnn: done, skipped" in second.stdout
    assert "already finished" not in second.stdout and summary.exists()
    changed = seqlab(*args[:2], "model.cell=rnn,lstm", *args[3:], check=False)
    assert changed.returncode == 2 and "holds a different sweep" in changed.stderr
    assert main(["resume", str(out)]) == 0  # what the Ctrl-C hint says: continues the sweep


def test_kfold_sweep_writes_cross_validation_table(tmp_path):
    out = tmp_path / "cv"
    seqlab("sweep", "digits", "--kfold", "2", "train.steps=10", "train.log_every=10",
           "checkpoint.every=10", "model.hidden_size=8", "--out", out)  # fmt: skip
    with open(out / "cv.csv") as file:
        (row,) = list(csv.DictReader(file))
    assert row["folds"] == "2" and row["metric"] == "eval/accuracy" and 0 <= float(row["mean"]) <= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "adding", "model.hiden_size=3"], "valid keys: task, seed"),
        (["run", "adding", "train.steps=-1"], "train.steps must be positive"),
        (["run", "nosuch"], "unknown experiment 'nosuch'"),
        (["run", "missing/file.py"], "no experiment file"),
        (["sweep", "adding", "model.cell"], "key=v1,v2"),
        (["resume", "/nonexistent/run"], "not a run directory"),
        (["report", "/nonexistent/run"], "is not a run (config.yaml), a sweep"),
        (["run", "/etc/passwd"], "an experiment file is a Python module (.py)"),
        (["run", "adding", "seed=-1"], "seed must be in [0, 4294967295]"),
        (["run", "adding", "train.lr=inf"], "train.lr must be finite"),
        (["sweep", "adding", "--kfold", "2"], "--kfold needs a fixed dataset to split"),
        (["sweep", "digits", "data.seq_len=8,1"], "sweep point data.seq_len=1:"),
    ],
)
def test_bad_input_is_one_line_with_status_2(argv, message, capsys):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_files_in_the_way_are_one_line_with_status_2(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for argv in (["run", "adding", "--out", str(afile)], ["demo", "--out", str(afile)]):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "Not a directory" in error, error
    assert afile.read_text() == "keep me"


def test_resume_refuses_what_would_contradict_the_records(finished_run, tmp_path):
    """An edited config.yaml, or deleted checkpoints: resume refuses in one line, touches
    nothing, and leaves no noise from orbax's async machinery at exit."""
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    (out / "summary.json").unlink()  # make it resumable
    config = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(config.replace("lr: 0.01", "lr: 0.3"))
    before = tree_digest(out)
    edited = seqlab("resume", out, check=False)
    assert edited.returncode == 2 and edited.stderr.count("\n") == 1, edited.stderr
    assert "was changed since the run started (train.lr 0.01 -> 0.3)" in edited.stderr
    assert tree_digest(out) == before
    (out / "config.yaml").write_text(config)
    shutil.rmtree(out / "checkpoints")
    before = tree_digest(out)
    deleted = seqlab("resume", out, check=False)
    assert deleted.returncode == 2 and deleted.stderr.count("\n") == 1, deleted.stderr
    assert "metric records up to step 60 but no checkpoint" in deleted.stderr
    assert tree_digest(out) == before and not (out / "checkpoints").exists()


def test_interrupt_hint_names_the_command_that_continues(tmp_path, monkeypatch, capsys):
    from seqlab import experiments

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "sweep", interrupted)
    monkeypatch.setattr(experiments, "run", interrupted)
    out = tmp_path / "sweep"
    assert main(["sweep", "adding", "model.cell=rnn,gru", "--out", str(out)]) == 130
    assert f"interrupted; `seqlab resume {out}` continues" in capsys.readouterr().err
    assert main(["run", "adding", "--out", str(tmp_path / "run")]) == 130
    assert f"`seqlab resume {tmp_path / 'run'}` continues" in capsys.readouterr().err


def test_summary_names_a_checkpointed_best_step(finished_run):
    summary = json.loads((finished_run[0] / "summary.json").read_text())
    assert summary["best_step"] in (20, 40, 60)  # checkpoints every 20, records every 10


def test_a_run_directory_is_never_overwritten(finished_run, capsys):
    out, _ = finished_run
    before = tree_digest(out)
    assert main(["run", "adding", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert tree_digest(out) == before


def test_corrupted_checkpoint_is_reported_and_left_alone(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    (out / "summary.json").unlink()  # make it resumable
    for path in (out / "checkpoints").glob("*/state/**/*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\x00garbage" + path.read_bytes()[8:])
    before = tree_digest(out)
    result = seqlab("resume", out, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "checkpoint 60" in result.stderr
    assert tree_digest(out) == before
    loaded = seqlab("analyze", out, check=False)
    assert loaded.returncode == 2 and "cannot be restored" in loaded.stderr


def test_data_parallel_over_four_devices_matches_one_device(finished_run, tmp_path):
    """The finished run (one device, batch 16) again on four CPU devices, 4 rows each."""
    four = {"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4")}
    seqlab(*FINISHED, "--out", tmp_path / "four", env=four)
    one = json.loads((finished_run[0] / "summary.json").read_text())
    many = json.loads((tmp_path / "four" / "summary.json").read_text())
    assert one["devices"] == 1 and many["devices"] == 4
    for name in ("train/loss", "eval/loss"):
        np.testing.assert_allclose(many["final"][name], one["final"][name], rtol=1e-5)


def test_demo_writes_plots_and_table(tmp_path, standard_promotion):
    from seqlab.demo import DemoConfig, run_demo

    config = DemoConfig(steps=20, seq_len=10, hidden_size=8, log_every=10)
    payload = run_demo(tmp_path / "demo", config, echo=lambda *_: None)
    assert [r["cell"] for r in payload["results"]] == ["rnn", "lstm", "gru"]
    for index, row in enumerate(payload["results"]):
        assert 0 < row["decay_factor_init"] < 1.5 and np.isfinite(row["eval_mse_mean"])
        # the table's numbers are the sweep point's own: its summary's per-seed eval MSE
        point = tmp_path / "demo" / "sweep" / "points" / f"p{index:03d}_cell={row['cell']}"
        summary = json.loads((point / "summary.json").read_text())
        per_seed = summary["final_per_seed"]["eval/mse"]
        assert row["eval_mse_per_seed"] == per_seed and len(per_seed) == 2
        assert row["eval_mse_mean"] == pytest.approx(float(np.mean(per_seed)), rel=1e-12)
        assert row["decay_factor_trained"] != row["decay_factor_init"]  # training moved it
        assert f"| {row['cell']} |" in (tmp_path / "demo" / "summary.md").read_text()
    factors = [row["decay_factor_init"] for row in payload["results"]]
    assert len(set(factors)) == 3  # three cells, three different gradient flows
    assert (tmp_path / "demo" / "plots" / "gradnorm_decay.png").stat().st_size > 1000
    assert "| lstm |" in (tmp_path / "demo" / "summary.md").read_text()
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2


@pytest.mark.parametrize("argv", [["bogus"], ["demo", "--bad"], []])
def test_usage_errors_are_one_line_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("seqlab")
