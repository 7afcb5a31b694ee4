"""Every result a benchmark writes records where and how it ran (issue 25).

(a) Every script in ``benchmarks/`` that writes a result file (``json.dump``,
``write_text``, a ``.md`` name) calls ``provenance(`` from ``benchmarks/_common.py``; the
helpers that only read or render results (``_common.py`` itself, ``readme_tables.py``,
``results_schema.py``) and the hand-written reproductions (``repro_*.py``) are exempt.
A static check: running every benchmark takes CI's benchmark stage, which runs them all.

(b) ``provenance()`` returns every field, each of the documented type, and
``provenance_markdown`` shows the commit and the command line.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import _common  # noqa: E402

EXEMPT = {"_common.py", "readme_tables.py", "results_schema.py"}
WRITES = re.compile(r"json\.dump|write_text|\.md\b")
FIELDS = {
    "commit",
    "dirty",
    "versions",
    "python",
    "backend",
    "device_kind",
    "device_count",
    "cpu_model",
    "cpu_count",
    "command",
    "date",
}


def _writers() -> list[pathlib.Path]:
    return [
        path
        for path in sorted(BENCHMARKS.glob("*.py"))
        if path.name not in EXEMPT
        and not path.name.startswith("repro_")
        and WRITES.search(path.read_text())
    ]


def _calls_provenance(source: str) -> bool:
    """Whether ``source`` calls ``provenance()`` (as a bare name or ``_common.provenance``)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")
            if name == "provenance":
                return True
    return False


def test_the_scan_finds_the_benchmarks():
    names = {path.name for path in _writers()}
    assert {"scan_throughput.py", "remat_memory.py", "distributed_training.py"} <= names


@pytest.mark.parametrize("path", _writers(), ids=lambda path: path.name)
def test_every_benchmark_that_writes_results_records_provenance(path):
    assert _calls_provenance(path.read_text()), (
        f"{path.relative_to(REPO)} writes result files but never calls provenance() from "
        "benchmarks/_common.py: add its record to each JSON ('provenance' key) and "
        "provenance_markdown(...) to each Markdown file"
    )


def test_the_static_check_notices_a_missing_call():
    assert not _calls_provenance("import json\njson.dump({}, open('x.json', 'w'))\n")
    assert _calls_provenance("import _common\nrecord = _common.provenance()\n")


def test_provenance_fields():
    record = _common.provenance()
    assert set(record) == FIELDS
    assert record["commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    assert record["dirty"] in (True, False, None)
    versions = record["versions"]
    assert set(versions) == set(_common.PROVENANCE_PACKAGES)
    for package in ("jax", "jaxlib", "flax", "optax"):
        assert isinstance(versions[package], str) and versions[package][0].isdigit(), package
    assert all(version is None or isinstance(version, str) for version in versions.values())
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", record["python"])
    assert record["backend"] in ("cpu", "gpu", "tpu")
    assert isinstance(record["device_kind"], str) and record["device_count"] >= 1
    assert isinstance(record["cpu_model"], str) and record["cpu_model"]
    assert record["cpu_count"] > 0
    assert isinstance(record["command"], str)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00", record["date"])


def test_provenance_in_a_git_checkout_names_its_commit():
    """Where git works, the record has the commit, not the "unknown" fallback."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git does not work in this checkout (no git, or not a repository)")
    record = _common.provenance()
    assert record["commit"] == head
    assert isinstance(record["dirty"], bool)


def test_provenance_without_git(monkeypatch):
    """No git on the machine: the commit is "unknown", dirty None, and nothing raises."""

    def no_git(*arguments):
        raise FileNotFoundError("git")

    monkeypatch.setattr(_common, "_git", no_git)
    record = _common.provenance()
    assert record["commit"] == "unknown" and record["dirty"] is None
    assert "- commit: unknown" in _common.provenance_markdown(record)


def test_provenance_markdown_names_commit_and_command():
    record = _common.provenance()
    text = _common.provenance_markdown(record)
    assert text.startswith("\n## Provenance\n")
    assert record["commit"] in text
    assert f"`{record['command']}`" in text
    assert f"jax {record['versions']['jax']}" in text
