"""benchmarks/gpu_scan.py's watchdog: a hang still leaves what was measured before it.

A kernel whose step barrier never opens cannot be interrupted from Python, so the
watchdog ends the process; these tests check it writes the partial report first. (The
rest of gpu_scan runs in CI as a benchmark: ``--preset ci``.)
"""

import json
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

HANG = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {benchmarks!r})
    import gpu_scan

    checks = [dict(name="kernel lstm float32", ok=True, forward=1e-7, gradients=2e-7)]
    rows = []

    def save(stage):
        gpu_scan.write_report({out!r}, "ci", {{"copy_gbs": 1.0}}, checks, rows, False,
                              hung=stage)

    watchdog = gpu_scan.Watchdog(0.5, on_expire=save)
    watchdog.stage("kernel gru float32")
    time.sleep(60)  # stands in for a kernel that never returns
    """
)


def test_a_hang_writes_what_came_before_and_exits_3(tmp_path):
    script = HANG.format(benchmarks=str(ROOT / "benchmarks"), out=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "WATCHDOG: 'kernel gru float32'" in result.stdout
    (report,) = tmp_path.glob("gpu_scan_ci_*.json")
    saved = json.loads(report.read_text())
    assert saved["hung"] == "kernel gru float32"
    assert [check["name"] for check in saved["checks"]] == ["kernel lstm float32"]
    (text,) = tmp_path.glob("gpu_scan_ci_*.md")
    assert "Incomplete: the watchdog stopped the run in 'kernel gru float32'" in text.read_text()


def test_a_failing_partial_report_still_exits_3(tmp_path):
    """A broken ``on_expire`` must not keep the process alive."""
    script = HANG.format(benchmarks=str(ROOT / "benchmarks"), out=str(tmp_path)).replace(
        "def save(stage):", "def save(stage):\n    raise OSError('disk full')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "OSError: disk full" in result.stderr
