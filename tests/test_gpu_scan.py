"""benchmarks/gpu_scan.py keeps what it measured when a run ends early.

A kernel whose step barrier never opens cannot be interrupted from Python, so the watchdog
ends the process; a lent GPU's time limit can kill it from outside. These tests check the
report of everything before is on disk either way. (The rest of gpu_scan runs in CI as a
benchmark: ``--preset ci``.)
"""

import json
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {benchmarks!r})
    import gpu_scan

    report = gpu_scan.Report({out!r}, "ci", on_gpu=False)
    report.checks.append(dict(name="kernel lstm float32", ok=True, forward=1e-7, gradients=2e-7))
    watchdog = gpu_scan.Watchdog({seconds}, on_expire={on_expire}, on_stage=report.progress)
    watchdog.stage("kernel gru float32")
    {then}
    """
)


def run(tmp_path, seconds=0.5, on_expire="report.hung", then="time.sleep(60)"):
    script = SCRIPT.format(
        benchmarks=str(ROOT / "benchmarks"),
        out=str(tmp_path),
        seconds=seconds,
        on_expire=on_expire,
        then=then,
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    reports = list(tmp_path.glob("gpu_scan_ci_*.json"))
    saved = json.loads(reports[0].read_text()) if reports else None
    return result, saved


def test_a_hang_writes_what_came_before_and_exits_3(tmp_path):
    result, saved = run(tmp_path)  # the stage sleeps past the watchdog's 0.5 s
    assert result.returncode == 3, result.stdout + result.stderr
    assert "WATCHDOG: 'kernel gru float32'" in result.stdout
    assert saved["incomplete"] == "the watchdog stopped the run in 'kernel gru float32' (a hang)"
    assert [check["name"] for check in saved["checks"]] == ["kernel lstm float32"]
    (text,) = tmp_path.glob("gpu_scan_ci_*.md")
    assert "**Incomplete: the watchdog stopped the run in 'kernel gru float32'" in text.read_text()
    assert "Checks: 1 of 1 passed" in text.read_text()


def test_a_run_killed_from_outside_leaves_its_progress(tmp_path):
    """No watchdog fires (a time limit kills the process): the report written as the last
    stage started is there, and says the run did not finish."""
    result, saved = run(tmp_path, seconds=600, then="os._exit(137)")
    assert result.returncode == 137
    assert (
        saved["incomplete"] == "the run had not finished 'kernel gru float32' when this was written"
    )
    assert [check["name"] for check in saved["checks"]] == ["kernel lstm float32"]


def test_a_failing_partial_report_still_exits_3(tmp_path):
    """A broken ``on_expire`` must not keep the process alive."""
    broken = "lambda stage: (_ for _ in ()).throw(OSError('disk full'))"
    result, _ = run(tmp_path, on_expire=broken)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "OSError: disk full" in result.stderr
