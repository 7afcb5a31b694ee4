"""The README's measured numbers come from the committed result files.

(a) Every table between ``<!-- table: NAME (from ...) -->`` markers is exactly what
``benchmarks/readme_tables.py`` renders from its files.

(b) Every figure in the prose of the README's "## Measured" section, and of the parallel
section's measured paragraphs, appears in a result file that its subsection cites
(``benchmarks/results/...``; a cited folder brings every file in it, a cited file its
JSON/Markdown twin and its folder's ``summary.md`` / ``README.md``), at the precision the
text prints it: 1.45x matches a value that rounds to 1.45, 0.0013 one that rounds to
0.0013, 30% a value that rounds to 30 or to 0.30, 5.2e-3 one within 0.05e-3 of it;
magnitudes are compared, not signs. Dates must appear in a cited file or its name. What
is not checked, and why:

- the rendered tables: (a) checks them digit for digit, derived columns (ratios, exp of
  an interval) included;
- a block between ``<!-- unrecorded: REASON -->`` and ``<!-- /unrecorded -->``, which
  must itself say "not recorded": a run seen once that no file holds (the demo);
- the innermost parenthesis that says "not recorded";
- code spans, link targets and comments (names, flags, paths), and package versions
  (``jax 0.10.2``, any a.b.c): provenance, which the result files' own provenance records;
- ALLOWLIST: figures that are settings, limits or arithmetic, not measurements, each
  with its reason; every entry must still occur in the section.

(c) Every committed result (a JSON file or a folder) loads into the schema of
``benchmarks/results_schema.py``.
"""

from __future__ import annotations

import bisect
import difflib
import math
import pathlib
import re
import sys
from typing import NamedTuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import readme_tables  # noqa: E402
import results_schema  # noqa: E402

README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results"

# (text in the Measured section, why its figures are not looked up in a result file)
ALLOWLIST = (
    ("at delay 50", "the copy-memory task's configured delay (experiments/copy_memory.py)"),
    ("within 1e-5 and gradients within 1e-4", "the tolerances tests/test_kernels.py asserts"),
    ("of 255 per thread", "the hardware's register limit per thread"),
    (
        "1.65 TFLOP, about 4 ms",
        "the floor: FLOPs / the TF32 rate, arithmetic in benchmarks/gpu_scan_notes.md",
    ),
    (
        "5x at (16, 2048, 512)",
        "a target and its shape, from the plan in benchmarks/gpu_scan_notes.md",
    ),
    ("128 MiB", "the size of the inputs, B·T·D·4 bytes = 32·4096·256·4: arithmetic"),
    (
        "below 2^21 projected values",
        "the hoisting threshold, a setting in seqlab/unroll/_policy.py",
    ),
    ("Linux allows 65,530 per process", "the kernel's default vm.max_map_count"),
    (
        "trains DiagGRU (H = 64, update-gate timescales up to 1,000 through ) on the adding "
        "problem at T = 1,000",
        "the settings of experiments/adding_parallel.py",
    ),
    (
        "compares its first 25 training losses with the same run's through the sequential "
        "scan, to 1e-4",
        "what tests/test_parallel.py asserts",
    ),
)

PACKAGES = r"(?:jax|jaxlib|flax|optax|torch|Triton|triton|Python)"
VERSION = re.compile(rf"\b{PACKAGES} \d+(?:\.\d+)*|(?<![\w.])\d+\.\d+\.\d+(?:\.\d+)*")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
CITATION = re.compile(r"benchmarks/results/[\w.*/-]+")
UNRECORDED = re.compile(r"<!-- unrecorded: [^>]*-->(.*?)<!-- /unrecorded -->", re.S)
FIGURE = re.compile(
    r"(?P<sign>[−+-])?"
    r"(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?:e(?P<exponent>[−-]?\d+))?"
    r"(?:\^(?P<power>\d+)|/(?P<denominator>\d+))?"
    r"(?P<percent>%)?"
)
FILE_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
FILE_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def measured_section(text: str) -> str:
    """The README's "## Measured" section, then the measured part of "## Parallel-in-time
    scans" (from its "**Measured.**" paragraph to the section's end), each bold-headed
    paragraph of which is a subsection of its own (its citations cover it alone)."""
    match = re.search(r"^## Measured\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Measured' section"
    parallel = re.search(
        r"^## Parallel-in-time scans\n.*?^(\*\*Measured\.\*\*.*?)(?=^## )", text, re.S | re.M
    )
    assert parallel, "README.md's parallel section has no '**Measured.**' paragraph"
    return match.group(1) + re.sub(r"^(?=\*\*)", "### ", parallel.group(1), flags=re.M)


def subsections(section: str) -> list[tuple[str, str]]:
    parts = re.split(r"^(?=### )", section, flags=re.M)
    return [(part.splitlines()[0] if part.startswith("###") else "(intro)", part) for part in parts]


def cited_files(text: str) -> tuple[set[pathlib.Path], list[str]]:
    """The result files a subsection cites, and the citations that name nothing."""
    files, dangling = set(), []
    for citation in CITATION.findall(text):
        matches = list(REPO.glob(citation.rstrip(".,/")))
        if not matches:
            dangling.append(citation)
        for path in matches:
            if path.is_dir():
                files |= {file for file in path.rglob("*") if file.is_file()}
            else:
                files |= set(path.parent.glob(path.stem + ".*"))
                if path.parent != RESULTS:
                    files |= {path.parent / "summary.md", path.parent / "README.md"}
    return {file for file in files if file.exists() and file.suffix != ".png"}, dangling


def file_numbers(files: set[pathlib.Path]) -> tuple[list[float], str]:
    """Every number in the files' text (sorted), and their text with their names."""
    values, texts = set(), []
    for file in sorted(files):
        text = file.read_text(errors="replace")
        texts += [file.name, text]
        values.update(float(number) for number in FILE_NUMBER.findall(text))
        values.update(float(number.replace(",", "")) for number in FILE_THOUSANDS.findall(text))
    return sorted(abs(value) for value in values), "\n".join(texts)


def without_not_recorded_parentheses(text: str) -> str:
    """``text`` less each innermost parenthesis that says "not recorded"."""
    while True:
        stack, spans = [], []
        for index, char in enumerate(text):
            if char == "(":
                stack.append(index)
            elif char == ")" and stack:
                start = stack.pop()
                if "not recorded" in text[start:index].lower():
                    spans.append((start, index + 1))
        innermost = [
            span
            for span in spans
            if not any(s != span and span[0] <= s[0] and s[1] <= span[1] for s in spans)
        ]
        if not innermost:
            return text
        for start, end in sorted(innermost, reverse=True):
            text = text[:start] + " " + text[end:]


class Figure(NamedTuple):
    written: str
    value: float
    tolerance: float  # half a unit of the last digit written
    percent: bool
    position: int


def figures(text: str) -> list[Figure]:
    """The figures of ``text``. A number inside a word or a name (H100, sm_90, AVX-512,
    T-1) is not a figure; a hyphen between two numbers (219-244) is a range, not a sign."""
    found = []
    for match in FIGURE.finditer(text):
        sign, start = match.group("sign"), match.start()
        before = text[start - 1] if start else " "
        if sign and before not in " \n([":
            if before.isalpha():
                continue
            sign, start = None, match.start("number")
            before = text[start - 1]
        after = text[match.end() : match.end() + 2]
        if before.isalnum() or before in "_.^/\\" or re.match(r"[^\Wx]|x\w|\.\d", after):
            continue
        number = match.group("number").replace(",", "")
        exponent = int(match.group("exponent").replace("−", "-")) if match.group("exponent") else 0
        value = float(number) * 10.0**exponent
        tolerance = 0.5 * 10.0 ** (exponent - len(number.partition(".")[2]))
        if match.group("power"):
            value, tolerance = value ** int(match.group("power")), 0.5
        elif match.group("denominator"):
            value, tolerance = value / int(match.group("denominator")), 1e-9
        written = text[start : match.end()]
        found.append(
            Figure(written, value, tolerance * (1 + 1e-9), bool(match.group("percent")), start)
        )
    return found


def in_files(figure: Figure, numbers: list[float]) -> bool:
    """Whether a file number rounds to ``figure`` (as a fraction too, for a percentage).
    Magnitudes are compared: prose says "decays by 0.11" of a rate the file holds as -0.11."""
    candidates = [(abs(figure.value), figure.tolerance)]
    if figure.percent:
        candidates.append((abs(figure.value) / 100, figure.tolerance / 100))
    for value, tolerance in candidates:
        index = bisect.bisect_left(numbers, value - tolerance)
        if index < len(numbers) and numbers[index] <= value + tolerance:
            return True
    return False


def prose(text: str) -> str:
    """``text`` less comments, code spans and link targets, its whitespace collapsed."""
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return " ".join(text.split())


def unsupported_figures(section: str) -> list[str]:
    """Each figure of the Measured ``section`` that no cited result file supports, with its
    subsection and context; also dangling citations and unrecorded blocks that do not say
    so."""
    problems = []
    section = readme_tables.MARKER.sub(" ", section)
    for block in UNRECORDED.findall(section):
        if "not recorded" not in block.lower():
            problems.append("an <!-- unrecorded --> block that does not say 'not recorded'")
    section = UNRECORDED.sub(" ", section)
    for title, text in subsections(section):
        files, dangling = cited_files(text)
        problems += [f"{title}: cites {citation}, which does not exist" for citation in dangling]
        numbers, file_text = file_numbers(files)
        text = without_not_recorded_parentheses(prose(text))
        for context, _reason in ALLOWLIST:
            text = text.replace(context, " ")
        text = VERSION.sub(" ", text)
        for date in DATE.findall(text):
            if date not in file_text:
                problems.append(f"{title}: the date {date} is in no cited file")
        text = DATE.sub(" ", text)
        for figure in figures(text):
            if not in_files(figure, numbers):
                context = " ".join(
                    text[max(figure.position - 50, 0) : figure.position + 30].split()
                )
                cited = f"{len(files)} files cited" if files else "no file cited"
                problems.append(
                    f"{title}: {figure.written!r} is in no cited result file ({cited}): "
                    f"...{context}..."
                )
    return problems


def test_readme_tables_match_their_result_files():
    text = README.read_text()
    rendered = readme_tables.render(text)
    if rendered != text:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(True), rendered.splitlines(True), "README.md", "rendered"
            )
        )
        pytest.fail(
            "README.md's tables differ from their result files; "
            f"run python benchmarks/readme_tables.py\n{diff}"
        )


def test_a_table_number_typed_by_hand_is_overwritten():
    rendered = readme_tables.render(README.read_text())
    typed = re.sub(r"(\| LSTM \| 32, 256, 256 \| \d+ \| )\d\.\d\dx", r"\g<1>9.99x", rendered)
    assert typed != rendered
    assert readme_tables.render(typed) == rendered


def test_every_figure_of_the_measured_section_is_in_a_cited_result_file():
    problems = unsupported_figures(measured_section(README.read_text()))
    assert not problems, "\n".join(problems)


def test_a_figure_in_no_result_file_fails():
    cited = "`benchmarks/results/remat_memory_full_cpu_2026-11-24.md`"
    assert not unsupported_figures(f"### x\n\n{cited}: temp 0.101, 1666 MiB, 1.14x.\n")
    assert unsupported_figures(f"### x\n\n{cited}: temp 0.105.\n")
    assert unsupported_figures(f"### x\n\n{cited}: 1.15x the time.\n")
    assert unsupported_figures("### x\n\nno citation: 1666 MiB.\n")
    assert not unsupported_figures(
        f"### x\n\n{cited}: 1666 MiB (and 3.3, seen once, not recorded).\n"
    )
    unrecorded = "<!-- unrecorded: x -->\n\n3.3 s\n\n<!-- /unrecorded -->"
    assert unsupported_figures(f"### x\n\n{cited}\n\n{unrecorded}\n")


def test_every_allowlist_entry_is_still_in_the_measured_section():
    section = prose(measured_section(README.read_text()))
    stale = [context for context, _reason in ALLOWLIST if context not in section]
    assert not stale, f"remove these ALLOWLIST entries: {stale}"


def test_every_committed_result_loads_into_the_schema():
    unknown = [
        path.name
        for path in RESULTS.iterdir()
        if (path.is_dir() or path.suffix == ".json")
        and path.name != "COMMITTED.json"  # the commits that added the older results
        and results_schema.loader_for(path) is None
    ]
    assert not unknown, f"no loader in benchmarks/results_schema.py for {unknown}"
    loaded = results_schema.load_all()
    assert loaded
    for source, results in loaded.items():
        assert results, source
        for result in results:
            assert result.name and result.preset and result.rows, source
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(result.provenance.get("date"))), source
            # the commit it ran at, or (written before results recorded it) the one that
            # added it, from benchmarks/results/COMMITTED.json
            commit = result.provenance.get("commit") or result.provenance.get("committed_in")
            assert re.fullmatch(r"[0-9a-f]{40}", str(commit)), (source, commit)
            for row in result.rows:
                assert row.case and row.metric and math.isfinite(row.value), (source, row)
                assert row.n is None or row.n >= 1, (source, row)
                assert row.spread is None or row.spread[0] <= row.spread[1], (source, row)


def test_the_parallel_sections_measured_prose_is_checked_too():
    text = README.read_text()
    assert "MinGRU: 1.17x / 0.73x / 0.53x" in text
    assert not unsupported_figures(measured_section(text))
    wrong = text.replace("MinGRU: 1.17x / 0.73x / 0.53x", "MinGRU: 1.17x / 713.9x / 0.53x")
    problems = unsupported_figures(measured_section(wrong))
    assert len(problems) == 1 and "'713.9'" in problems[0], problems
