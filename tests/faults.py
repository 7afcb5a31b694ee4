"""The ``seqlab`` command line with one fault injected at a chosen moment, for the tests
that kill or freeze a real process (tests/test_cli.py, tests/test_sweep_workers.py).

    python tests/faults.py FAULT SEQLAB-ARGS...

FAULT is one of
  kill-after-file:NAME        SIGKILL once the run directory's file NAME is written
  kill-after-record:STEP      SIGKILL once the metrics record of STEP is written
  kill-in-save:STEP:RECORD    SIGKILL inside the save of STEP, with its files written but
                              not committed, once the metrics have reached RECORD (as far
                              as they can run ahead of an asynchronous save)
  freeze-in-save:STEP         SIGSTOP the whole process just after the save of STEP
                              started; that save commits only once the process has been
                              continued (SIGCONT)

Only this script injects faults: nothing in seqlab reads a switch for them.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import threading
import time

import orbax.checkpoint as ocp

from seqlab.cli import main
from seqlab.experiments import _checkpoint, _rundir


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _last_record(run_dir: pathlib.Path) -> int:
    path = run_dir / _rundir.METRICS
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=0)


def _before_commit(step: int, action) -> None:
    """Run ``action(run_dir)`` in orbax's background thread when the save of ``step`` has
    written its files and is about to commit them (before any commit logic of seqlab's)."""
    finalize = ocp.CompositeCheckpointHandler.finalize

    def hooked(self, directory):
        directory = pathlib.Path(directory)
        if directory.name.split(".")[0] == str(step):
            action(directory.parent.parent)
        return finalize(self, directory)

    ocp.CompositeCheckpointHandler.finalize = hooked


def inject(fault: str) -> None:
    kind, _, argument = fault.partition(":")
    if kind == "kill-after-file":
        write_text = _rundir.write_text

        def written(path, text):
            write_text(path, text)
            if pathlib.Path(path).name == argument:
                _die()

        _rundir.write_text = written
    elif kind == "kill-after-record":
        write = _rundir.MetricLog.write

        def recorded(self, record):
            result = write(self, record)
            if record["step"] == int(argument):
                _die()
            return result

        _rundir.MetricLog.write = recorded
    elif kind == "kill-in-save":
        step, record = map(int, argument.split(":"))

        def kill_when_ahead(run_dir):
            while _last_record(run_dir) < record:
                time.sleep(0.005)
            _die()

        _before_commit(step, kill_when_ahead)
    elif kind == "freeze-in-save":
        step = int(argument)
        reached, continued = threading.Event(), threading.Event()

        def hold(run_dir):
            reached.set()
            continued.wait()

        _before_commit(step, hold)
        save = _checkpoint.Checkpoints.save

        def freezing_save(self, at, *args, **kwargs):
            save(self, at, *args, **kwargs)
            if at == step:
                reached.wait()
                os.kill(os.getpid(), signal.SIGSTOP)
                continued.set()

        _checkpoint.Checkpoints.save = freezing_save
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    inject(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
