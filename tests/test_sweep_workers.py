"""Sweeps shared by several workers: claims (atomic, heartbeat, takeover of a dead
worker's), two worker processes against one, a worker killed mid-point and started again,
submitit's local executor, and points side by side on a host's devices."""

import csv
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from seqlab.experiments import _claims, _cluster
from tests.helpers import xla_flags

SWEEP = [
    "sweep",
    "adding",
    "model.hidden_size=8",
    "data.seq_len=12",
    "data.eval_size=64",
    "train.batch_size=16",
    "train.log_every=10",
    "checkpoint.every=10",
    "train.steps=20",
    "model.cell=rnn,gru",
    "train.lr=0.01,0.02",
]


FAULTS = pathlib.Path(__file__).with_name("faults.py")


def start(*args, env=None, fault=None):
    """``seqlab ARGS`` in a subprocess (with ``fault`` injected: tests/faults.py)."""
    program = ["-m", "seqlab"] if fault is None else [str(FAULTS), fault]
    return subprocess.Popen(
        [sys.executable, *program, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def done(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def results(sweep_dir) -> dict:
    """{point: row} of results.csv, without the wall-clock column."""
    with open(sweep_dir / "results.csv") as file:
        rows = list(csv.DictReader(file))
    return {row.pop("point"): {k: v for k, v in row.items() if k != "seconds"} for row in rows}


def steps_of(point_dir):
    lines = (point_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.fixture(scope="module")
def compile_cache() -> dict:
    """The environment of subprocesses that share JAX's persistent compilation cache: the
    run-wide one of tests/conftest.py (which every subprocess inherits anyway), spelled
    out for the tests that start several processes of one config."""
    return {"JAX_COMPILATION_CACHE_DIR": os.environ["SEQLAB_TEST_JAX_CACHE"]}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, compile_cache):
    out = tmp_path_factory.mktemp("sweep") / "one"
    done(start(*SWEEP, "--out", out, env=compile_cache))
    return out


def test_two_workers_give_the_results_of_one(one_worker, tmp_path):
    out = tmp_path / "two"
    workers = [start(*SWEEP, "--out", out, "--worker", i, "--num-workers", 2) for i in (0, 1)]
    logs = [done(worker) for worker in workers]
    assert results(out) == results(one_worker)  # the same numbers, point by point
    assert all(row["status"] == "finished" for row in results(out).values())
    # each point trained by exactly one of them, each worker its own share first
    lines = [line for log in logs for line in log.splitlines()]
    trained = [line for line in lines if "] model.cell" in line and "skipped" not in line]
    assert len(trained) == 4 and "worker 0/2: [1/4]" in logs[0] and "worker 1/2: [2/4]" in logs[1]
    assert list((out / "claims").iterdir()) == []  # released


def test_a_killed_worker_restarts_and_every_point_finishes_once(tmp_path):
    out = tmp_path / "killed"
    longer = [*SWEEP[:-3], "train.steps=300", "model.cell=rnn,gru", "train.lr=0.01"]
    victim = start(*longer, "--out", out, "--worker", 0, "--num-workers", 2)
    first = out / "points" / "p000_cell=rnn"
    deadline = time.time() + 120
    while not (first / "checkpoints" / "20" / "commit_success.txt").exists():
        assert victim.poll() is None and time.time() < deadline, victim.communicate()[1][-2000:]
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert not (first / "summary.json").exists()
    before = steps_of(first)
    from seqlab.experiments._report import sweep_rows

    rows, _ = sweep_rows(out)  # what `seqlab report` shows meanwhile
    assert rows[0]["status"] == "claimed by worker 0/2"
    # its claim names a dead process of this host: the restarted worker takes it at once
    restarted = start(*longer, "--out", out, "--worker", 0, "--num-workers", 2)
    other = start(*longer, "--out", out, "--worker", 1, "--num-workers", 2)
    logs = done(restarted) + done(other)
    assert "resuming" in logs
    for point in (out / "points").iterdir():
        assert steps_of(point) == list(range(10, 301, 10)), point.name  # once, no gap
    assert steps_of(first)[: len(before)] == before
    assert all(row["status"] == "finished" for row in results(out).values())


def test_a_sweep_killed_inside_its_first_save_resumes(one_worker, tmp_path, compile_cache):
    """Killed while the first checkpoint of its first point is being written (its records
    ran ahead to step 20): the restarted sweep trains that point again from step 0 and
    every point ends as in the uninterrupted sweep, each step recorded once."""
    out = tmp_path / "killed-in-save"
    victim = start(*SWEEP, "--out", out, env=compile_cache, fault="kill-in-save:10:20")
    victim.communicate(timeout=300)
    assert victim.returncode == -signal.SIGKILL
    (first,) = (out / "points").glob("p000_*")
    (unfinished,) = (first / "checkpoints").iterdir()  # the save's folder, never committed
    assert unfinished.name.startswith("10.orbax-checkpoint-tmp")
    assert steps_of(first) == [10, 20]
    restarted = done(start("resume", out, env=compile_cache))
    assert "no checkpoint yet: starting from step 0" in restarted
    assert results(out) == results(one_worker)
    for point in (out / "points").iterdir():
        assert steps_of(point) == [10, 20], point.name


def files_of(folder) -> dict:
    """{path: (mtime, bytes)} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("taker", ["worker", "claim"])
def test_a_frozen_worker_leaves_its_point_untouched_once_taken_over(taker, tmp_path, compile_cache):
    """Worker A frozen (SIGSTOP) with a save in flight, past --stale-after. The point is
    taken over by a worker B that resumes it from the newest committed checkpoint and
    finishes it, or by a claim alone (a B that has not touched the point yet). A, woken
    (SIGCONT), says in one line that it left the point and exits 0 without writing into
    it: no metrics, no summary, and its save in flight is not committed (only the
    temporary folder of that save, its own, is gone)."""
    out = tmp_path / "frozen"
    args = [*SWEEP[:-4], "checkpoint.every=20", "train.steps=60", "model.cell=rnn"]
    args += ["--out", out, "--stale-after", "1"]
    frozen = start(*args, env=compile_cache, fault="freeze-in-save:40")
    try:
        _, status = os.waitpid(frozen.pid, os.WUNTRACED)  # once A has stopped itself
        assert os.WIFSTOPPED(status), frozen.communicate()[1][-3000:]
        (point,) = (out / "points").iterdir()
        assert steps_of(point) == [10, 20, 30, 40]
        time.sleep(1.5)  # A's claim goes stale
        held = None
        if taker == "worker":
            taken = done(start(*args, env=compile_cache))
            assert "resuming" in taken and "finished at step 60" in taken
        else:
            held = _claims.Claims(out, "taker", stale_after=1).try_claim(point.name)
            assert held is not None and held.generation == 1
        before = files_of(point)
        in_flight = {name for name in before if "orbax-checkpoint-tmp" in name}
        assert bool(in_flight) == (taker == "claim")  # B's start cleans up A's folder
        frozen.send_signal(signal.SIGCONT)
        log, errors = frozen.communicate(timeout=300)
    finally:
        if frozen.poll() is None:
            frozen.kill()
            frozen.communicate()
    assert frozen.returncode == 0, errors[-3000:]
    assert "Traceback" not in errors and "Error" not in errors, errors[-3000:]
    assert [line for line in log.splitlines() if "left to it" in line] == [
        "[1/1] base: another worker took this point over (no heartbeat from this one for "
        "1 s); left to it"
    ]
    assert files_of(point) == {k: v for k, v in before.items() if k not in in_flight}
    assert not [p for p in (point / "checkpoints").iterdir() if "tmp" in p.name]
    if held is not None:
        assert sorted(p.name for p in (point / "checkpoints").iterdir()) == ["20"]
        held.release()
    else:
        assert steps_of(point) == [10, 20, 30, 40, 50, 60]


def test_submitit_local_executor_runs_the_workers(one_worker, tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "submitted"
    log = done(start(*SWEEP, "--out", out, "--submit", "local", "--num-workers", 2))
    assert "submitted 2 worker(s)" in log and f"results: {out}" in log
    assert results(out) == results(one_worker)
    assert len(list((out / "submitit").glob("*/*_log.out"))) == 2  # one log per job


def test_points_side_by_side_on_the_devices_of_a_host(one_worker, tmp_path):
    out = tmp_path / "devices"
    four = {"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4")}
    log = done(start(*SWEEP, "--out", out, "--devices-per-point", 2, env=four))
    assert "2 local worker(s), 2 of 4 cpu device(s) each" in log
    for point in (out / "points").iterdir():
        assert json.loads((point / "summary.json").read_text())["devices"] == 2
    for (name, got), want in zip(results(out).items(), results(one_worker).values(), strict=True):
        for key in ("eval/loss", "eval/mse"):  # two devices against one: summation order
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5), name


def test_claims_are_exclusive_and_a_stale_one_is_taken_over(tmp_path):
    first = _claims.Claims(tmp_path, "0/2", stale_after=2.0)
    second = _claims.Claims(tmp_path, "1/2", stale_after=2.0)
    held = first.try_claim("p000")
    assert held is not None and second.try_claim("p000") is None  # live: refused
    assert second.holder("p000")["worker"] == "0/2"
    held._stop.set()  # the holder hangs: no more heartbeats
    held._thread.join()
    # its file names this host and a live pid, so only its age can free it
    old = time.time() - 10
    os.utime(held.path, (old, old))
    taken = second.try_claim("p000")
    assert taken is not None and taken.generation == 1
    assert first.try_claim("p000") is None  # the new generation is live
    # the old holder's check before its next write reads the claims folder: it refuses at
    # once, before any heartbeat of the old holder has looked
    with pytest.raises(_claims.ClaimLost, match="taken over"):
        held.check()
    assert held.lost
    held.release()  # a lost claim leaves the new holder's file alone
    assert [g for g, _ in second.files("p000")] == [0, 1]
    taken.release()
    assert second.files("p000") == []


def test_a_claim_of_a_dead_process_on_this_host_is_free_at_once(tmp_path):
    claims = _claims.Claims(tmp_path, "0/1")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = claims.directory / "p001@0"
    info = {"worker": "0/1", "host": socket.gethostname(), "pid": int(dead.stdout)}
    path.write_text(json.dumps(info))
    taken = claims.try_claim("p001")
    assert taken is not None and taken.generation == 1
    taken.release()
    assert claims.files("p001") == []


def test_worker_numbers_and_device_environments():
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5"}
    assert _cluster.worker_from_environment(env) == (2, 4)
    assert _cluster.worker_from_environment({}) is None
    with pytest.raises(ValueError, match="must be integers"):
        _cluster.worker_from_environment(
            {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}
        )
    gpus = _cluster.device_environments("gpu", 4, 2, {"CUDA_VISIBLE_DEVICES": "3,5,6,7"})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpus] == ["3,5", "6,7"]
    cpus = _cluster.device_environments(
        "cpu", 4, 1, {"XLA_FLAGS": "--a --xla_force_host_platform_device_count=4"}
    )
    assert len(cpus) == 4 and cpus[0]["XLA_FLAGS"] == "--a --xla_force_host_platform_device_count=1"
    with pytest.raises(ValueError, match="more than the 2 gpu"):
        _cluster.device_environments("gpu", 2, 3, {})
    with pytest.raises(ValueError, match="not tpu"):
        _cluster.device_environments("tpu", 4, 2, {})


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--worker", "2", "--num-workers", "2"], "--worker must be in 0 .. 1"),
        (["--worker", "0"], "--worker and --num-workers go together"),
        (["--submit", "local", "--worker", "0", "--num-workers", "2"], "drop --worker"),
        (["--stale-after", "0"], "--stale-after must be a positive"),
    ],
)
def test_bad_worker_flags_are_one_line_errors(extra, message, tmp_path, capsys):
    from seqlab.cli import main

    assert main([*SWEEP, "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_slurm_array_task_is_a_worker_without_flags(monkeypatch):
    from seqlab.experiments import worker_numbers

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.delenv("SLURM_ARRAY_TASK_MIN", raising=False)
    assert worker_numbers(None, None) == (3, 4)
    assert worker_numbers(1, 2) == (1, 2)  # the flags win


@pytest.mark.skipif(shutil.which("srun") is not None, reason="SLURM is installed here")
def test_submit_slurm_without_slurm_is_a_one_line_error(tmp_path):
    pytest.importorskip("submitit")
    process = start(*SWEEP, "--out", tmp_path / "s", "--submit", "slurm")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2, err[-3000:]
    assert 'Could not detect "srun"' in err and err.count("\n") == 1, err[-3000:]
    assert not (tmp_path / "s").exists()  # refused before the plan was written


def test_a_plan_another_worker_is_writing_is_not_foreign_content(tmp_path):
    """Workers started together on a fresh --out: one may find the folder holding only
    another's temporary plan (written, not yet linked to sweep.json, or left by a kill);
    that folder is a sweep being planned, not someone else's. A stray file still counts."""
    from seqlab.experiments import _rundir, apply_overrides, default_config, prepare_sweep

    config = apply_overrides(default_config("adding"), ["data.eval_size=64", "data.seq_len=12"])
    grid = {"model.cell": ["rnn", "gru"]}
    out = tmp_path / "fresh"
    out.mkdir()
    theirs = out / f".{_rundir.SWEEP}.4242.0a1b2c3d.tmp"  # a writer's name for sweep.json
    theirs.write_text('{"base": ')  # half written
    plan = prepare_sweep(config, grid, out)
    assert _rundir.read_sweep(out) == plan and theirs.exists()  # theirs left to its writer
    assert _rundir.is_temporary(_rundir.temporary(out / _rundir.SWEEP), of=_rundir.SWEEP)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / f".{_rundir.SWEEP}.tmp").write_text("mine")
    with pytest.raises(ValueError, match="is not a sweep"):
        prepare_sweep(config, grid, stray)
    assert not (stray / _rundir.SWEEP).exists()


class _RefusingExecutor:
    """submitit's AutoExecutor where SLURM is missing and no option is accepted."""

    def __init__(self, folder, cluster):
        if cluster == "slurm":
            raise RuntimeError('Could not detect "srun", are you indeed on a slurm cluster?')

    def update_parameters(self, **parameters):
        raise NameError("Unknown argument 'bogus' for executor 'local' in parameter 'bogus'")


@pytest.mark.parametrize(
    "cluster, submitit, message",
    [
        ("local", None, "--submit needs submitit, which is not installed"),
        ("slurm", _RefusingExecutor, 'Could not detect "srun"'),
        ("local", _RefusingExecutor, "submitit refused the job options: Unknown argument"),
    ],
)
def test_submit_refuses_before_writing_the_plan(
    cluster, submitit, message, tmp_path, monkeypatch, capsys
):
    import types

    from seqlab.cli import main

    module = None if submitit is None else types.SimpleNamespace(AutoExecutor=submitit)
    monkeypatch.setitem(sys.modules, "submitit", module)  # None: as if not installed
    out = tmp_path / "s"
    assert main([*SWEEP, "--out", str(out), "--submit", cluster, "--num-workers", "2"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()
