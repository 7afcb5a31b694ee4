"""Training under jax.distributed on one machine: two CPU processes of two devices each
(gloo collectives) against one process of four, a SIGKILL of both and a resume, and the
errors of bad set-ups (different configs, a batch that does not divide, no coordinator,
a process that dies)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import xla_flags

TINY = [
    "adding",
    "model.hidden_size=8",
    "data.seq_len=12",
    "data.eval_size=64",
    "train.batch_size=16",
    "train.log_every=10",
    "checkpoint.every=10",
    "train.lr=0.01",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args, *, processes=2, devices=2, port=None, ids=None, env=None):
    """``python -m seqlab ARGS`` as processes of one jax.distributed job (Popen each)."""
    port = port or free_port()
    started = []
    for pid in range(processes) if ids is None else ids:
        process_env = {
            **os.environ,
            "SEQLAB_DISTRIBUTED": "1",
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": str(processes),
            "JAX_PROCESS_ID": str(pid),
            "XLA_FLAGS": xla_flags(f"--xla_force_host_platform_device_count={devices}"),
            "SEQLAB_HEARTBEAT_TIMEOUT": "5",
            **(env or {}),
        }
        given = args(pid) if callable(args) else args
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "seqlab", *map(str, given)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=process_env,
            )
        )
    return started


def finish(processes, timeout=180):
    """[(returncode, stdout, stderr)] of every process."""
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append((process.returncode, out, err))
    return results


def single(args, devices=4):
    env = {
        **os.environ,
        "XLA_FLAGS": xla_flags(f"--xla_force_host_platform_device_count={devices}"),
    }
    env.pop("SEQLAB_DISTRIBUTED", None)
    result = subprocess.run(
        [sys.executable, "-m", "seqlab", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def steps_of(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def params_of(run_dir):
    import jax

    from seqlab import load_run

    return [np.asarray(leaf) for leaf in jax.tree.leaves(load_run(run_dir).params)]


def test_two_processes_train_like_one_and_resume_after_sigkill(tmp_path):
    """2 processes x 2 devices, both SIGKILLed mid-run and resumed, against 1 process
    with 4 devices and the same global batch (every record written once)."""
    run = ["run", *TINY, "train.steps=50", "train.num_seeds=2"]
    single([*run, "--out", tmp_path / "one"])
    killed = tmp_path / "two"
    processes = launch([*run, "--out", killed])
    marker = killed / "checkpoints" / "20" / "commit_success.txt"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        assert all(p.poll() is None for p in processes), finish(processes)[0][2][-2000:]
        time.sleep(0.02)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    finish(processes)
    assert not (killed / "summary.json").exists(), "the run ended before the kill"
    before = (killed / "metrics.jsonl").read_text()
    assert steps_of(killed)[:2] == [10, 20]
    results = finish(launch(["resume", killed]))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-2000:]
    assert "resuming" in results[0][1] and "resuming" not in results[1][1]  # process 0 prints
    start = int(re.search(r"resuming .* from step (\d+)", results[0][1]).group(1))
    kept = [line for line in before.splitlines(keepends=True) if line.endswith("\n")]
    kept = [line for line in kept if json.loads(line)["step"] <= start]  # the rest: again
    assert (killed / "metrics.jsonl").read_text().startswith("".join(kept))
    assert steps_of(killed) == [10, 20, 30, 40, 50]  # each record once, nothing lost
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((killed / "summary.json").read_text())
    assert (one["devices"], one["processes"]) == (4, 1)
    assert (two["devices"], two["processes"]) == (4, 2)
    for name in ("train/loss", "eval/loss", "eval_ensemble/loss"):
        np.testing.assert_allclose(two["final"][name], one["final"][name], rtol=1e-5)
    # a checkpoint of either loads in this one-device process; the parameters agree
    for a, b in zip(params_of(tmp_path / "one"), params_of(killed), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_bad_setups_fail_with_a_message(tmp_path):
    # Different configs in the two processes: refused before anything is written.
    def differing(pid):
        return ["run", *TINY, "train.steps=10", f"model.hidden_size={8 + pid}", "--out", tmp_path]

    results = finish(launch(differing))
    for code, _, err in results:
        assert code == 2 and "different configs" in err, err[-2000:]
    assert not any(tmp_path.iterdir())

    # A global batch that four devices cannot share.
    results = finish(launch(["run", *TINY, "train.batch_size=6", "--out", tmp_path / "b"]))
    for code, _, err in results:
        assert code == 2 and "multiple of the 4 devices (2 processes)" in err, err[-2000:]

    # No coordinator: process 1 alone gives up after the time-out, with exit status 2.
    ((code, _, err),) = finish(
        launch(
            ["run", *TINY, "--out", tmp_path / "c"],
            ids=[1],
            env={"SEQLAB_DISTRIBUTED_TIMEOUT": "2"},
        )
    )
    assert code == 2 and "could not be reached within 2 s" in err, err[-2000:]
    assert err.strip().count("\n") == 0

    # A process that dies: the other stops (JAX's heartbeat, 5 s here) instead of hanging.
    out = tmp_path / "d"
    processes = launch(["run", *TINY, "train.steps=100000", "--out", out])
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)
    start = time.time()
    code, _, err = finish(processes[:1], timeout=90)[0]
    finish(processes[1:])
    assert code != 0 and time.time() - start < 60
    assert "another task died" in err or "unhealthy" in err, err[-2000:]


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"SEQLAB_DISTRIBUTED": "1", "JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID not set"),
        ({"SEQLAB_DISTRIBUTED": "yes"}, "must be 1"),
        (
            {
                "SEQLAB_DISTRIBUTED": "1",
                "JAX_COORDINATOR_ADDRESS": "h:1",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": "2",
            },
            "below JAX_NUM_PROCESSES",
        ),
        ({"SEQLAB_DISTRIBUTED": "1", "JAX_NUM_PROCESSES": "two"}, "must be an integer"),
    ],
)
def test_environment_errors_name_the_variable(environ, message):
    from seqlab.experiments import _distributed

    with pytest.raises(ValueError, match=message):
        _distributed.initialize(environ)
    assert _distributed.initialize({}) is False  # unset: nothing to start


@pytest.fixture
def started(monkeypatch):
    """``_distributed.initialize`` up to jax.distributed, which is recorded, not started
    (nor gloo set for this test process, nor a coordinator waited for)."""
    from seqlab.experiments import _distributed

    calls = []
    monkeypatch.setattr(_distributed.jax.config, "update", lambda *args: None)
    monkeypatch.setattr(
        _distributed, "_wait_for_coordinator", lambda address, timeout: calls.append(address)
    )
    monkeypatch.setattr(
        _distributed.jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs)
    )
    return calls


def _environ(process_id, address, **extra):
    return {
        "SEQLAB_DISTRIBUTED": "1",
        "JAX_COORDINATOR_ADDRESS": address,
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": str(process_id),
        "SEQLAB_DISTRIBUTED_TIMEOUT": "1",
        **extra,
    }


@pytest.mark.parametrize("process_id", [0, 1])
@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.0.0.1:", ":1234", "host:http", "host:0", "host:65536", "::1:1234",
     "[::1]", "[localhost]:1234", "two words:1234"],
)  # fmt: skip
def test_a_malformed_coordinator_address_is_refused_by_every_process(process_id, address, started):
    """JAX would fail with an IndexError on process 0 (or abort), and leave the others
    waiting: every process refuses before it starts anything."""
    from seqlab.experiments import _distributed

    with pytest.raises(ValueError, match="JAX_COORDINATOR_ADDRESS must be host:port"):
        _distributed.initialize(_environ(process_id, address))
    assert started == []


def test_coordinator_addresses_of_every_form_start(started):
    from seqlab.experiments import _distributed

    for address in ("127.0.0.1:1234", "node-7.cluster:65535", "[::1]:1234", "[fe80::1]:80"):
        assert _distributed.initialize(_environ(0, address)) is True
        assert _distributed.initialize(_environ(1, address)) is True
        first, waited_for, second = started  # process 1 waits for the coordinator first
        assert first["coordinator_address"] == second["coordinator_address"] == address
        assert waited_for == address
        started.clear()
    bad_bind = _environ(0, "[::1]:1234", JAX_COORDINATOR_BIND_ADDRESS="0.0.0.0")
    with pytest.raises(ValueError, match="JAX_COORDINATOR_BIND_ADDRESS must be host:port"):
        _distributed.initialize(bad_bind)
    assert started == []


def test_a_sweep_under_jax_distributed_trains_each_point_over_both_processes(tmp_path):
    out = tmp_path / "sweep"
    sweep = ["sweep", *TINY, "train.steps=10", "model.cell=rnn,gru", "--out", out]
    results = finish(launch(sweep))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-2000:]
    assert "[2/2] model.cell=gru" in results[0][1] and "[2/2]" not in results[1][1]
    for point in ("p000_cell=rnn", "p001_cell=gru"):
        summary = json.loads((out / "points" / point / "summary.json").read_text())
        assert (summary["status"], summary["devices"], summary["processes"]) == ("finished", 4, 2)
        assert steps_of(out / "points" / point) == [10]
    assert (out / "results.csv").read_text().count("finished") == 2
    # several workers inside one distributed job are refused
    results = finish(launch([*sweep, "--worker", "0", "--num-workers", "2"]))
    for code, _, err in results:
        assert code == 2 and "--num-workers > 1 under SEQLAB_DISTRIBUTED=1" in err, err[-2000:]


PARTITIONING = """
import dataclasses, re, jax, jax.numpy as jnp
from seqlab.experiments import Experiment, _step, apply_overrides, build_model, default_config
config = apply_overrides(default_config("adding"), ["model.cell=CELL", "model.hidden_size=64",
                         "data.seq_len=50", "train.batch_size=16"])
experiment = Experiment.from_config(config)
experiment.check()
state = experiment.init_state()
experiment.train_chunk(state, 0, 2)
# the same experiment with a model that does not know its batch is sharded
plain = dataclasses.replace(experiment, model=build_model(config, experiment.data.info),
                            trace_key=None)
def collectives(experiment):
    lowered = _step.train_chunk.lower(experiment.program, state, jnp.int32(0), 2,
                                      experiment.source.train_arrays)
    text = lowered.compile().as_text()
    return len(re.findall(r" all-gather\\(", text)), len(re.findall(r" all-reduce\\(", text))
print([collectives(experiment), collectives(plain)])
"""


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_data_parallel_backward_all_reduces_instead_of_gathering_activations(cell):
    """On 4 devices the hand-derived backward's weight gradients are summed per device and
    all-reduced; without ``batch_sharded`` the partitioner all-gathers the activations."""
    env = {**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4")}
    result = subprocess.run(
        [sys.executable, "-c", PARTITIONING.replace("CELL", cell)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (gathers, reduces), (plain_gathers, _) = eval(result.stdout.strip().splitlines()[-1])
    assert gathers == 0 and reduces >= 1
    assert plain_gathers > 0  # the reshaped matmul: what the setting avoids
