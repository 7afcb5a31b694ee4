"""The README's measured tables, rendered from the committed result files.

Each table in README.md that quotes a result sits between two marker comments::

    <!-- table: NAME (from benchmarks/results/FILE, ...) -->
    ...
    <!-- /table: NAME -->

and what lies between them is whatever ``TABLES[NAME]`` renders from its files, read
through ``results_schema`` (the row and column labels live here; every number comes from a
file). A new run that replaces a file changes the table; a number typed into the README
fails ``tests/test_readme_tables.py``.

    python benchmarks/readme_tables.py           # rewrite README.md in place
    python benchmarks/readme_tables.py --check   # exit 1 with a diff if README.md differs
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import pathlib
import re
import sys
from collections.abc import Callable, Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_schema import REPO, RESULTS, Result, case_name, load  # noqa: E402

README = REPO / "README.md"


@dataclasses.dataclass(frozen=True)
class Table:
    """A README table: its ``sources`` (paths under benchmarks/results/), loaded in order
    and handed to ``render``, which returns the Markdown table's lines."""

    sources: tuple[str, ...]
    render: Callable[[list[Result]], list[str]]

    def load(self) -> list[Result]:
        return [result for source in self.sources for result in load(RESULTS / source)]


# ------------------------------------------------------------------------------ formatting


def significant(value: float, digits: int, max_decimals: int) -> str:
    """``value`` to ``digits`` significant digits, but at most ``max_decimals`` decimals
    (0.0780 with 3 decimals at most prints 0.078); 0 prints as 0."""
    if value == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return f"{value:.{min(max(decimals, 0), max_decimals)}f}"


def thousands(value: float) -> str:
    return f"{round(value):,}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells):
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


# --------------------------------------------------------------------------------- tables

PARALLEL_CELLS = {
    "mingru": "MinGRU",
    "minlstm": "MinLSTM",
    "diag_gru": "DiagGRU",
    "diag_lstm": "DiagLSTM",
}
# The targets on an H100 (benchmarks/parallel_scan.py's docstring): fwd+bwd speed-up
# of the parallel scan over the sequential one.
PARALLEL_TARGETS = {"mingru": 20, "minlstm": 20, "diag_gru": 5, "diag_lstm": 5}
# (cell, T, H, which source): MinGRU and MinLSTM from run 1, DiagGRU from run 2 (its rows do
# not use the 2x2-block form that run 3 changed), DiagLSTM from run 3 (the current block
# form); parallel_scan_gpu_notes_2026-11-26.md says why.
PARALLEL_H200_ROWS = (
    ("mingru", 65536, 256, 0),
    ("minlstm", 65536, 256, 0),
    ("diag_gru", 16384, 256, 1),
    ("diag_lstm", 16384, 256, 2),
)


def parallel_scan_h200(results: list[Result]) -> list[str]:
    rows = []
    for cell, steps, hidden, source in PARALLEL_H200_ROWS:
        result = results[source]
        case = case_name(cell, T=steps, H=hidden, B=8)
        speedup = result.value(case, "fwd+bwd speed-up")
        iterations = result.value(case, "newton iterations")
        detail = (
            f"{iterations:.0f} iterations"
            if iterations > 1
            else f"fwd {result.value(case, 'fwd speed-up'):.0f}x"
        )
        target = PARALLEL_TARGETS[cell]
        # "just short": within 10% of the target
        verdict = (
            "met" if speedup >= target else "just short" if speedup >= 0.9 * target else "not met"
        )
        rows.append(
            [
                PARALLEL_CELLS[cell],
                f"{thousands(steps)}, {hidden}",
                f"{speedup:.1f}x ({detail})",
                f"{target}x: {verdict}",
            ]
        )
    return markdown_table(["cell", "(T, H)", "fwd+bwd speed-up", "target (on an H100)"], rows)


# experiment: (row label, main metric label, what the baseline is)
EXPERIMENTS = {
    "adding": ("adding (LSTM, T = 100)", "eval MSE", "predict the mean"),
    "copy_memory": ("copy_memory (LSTM, delay 50)", "eval cross-entropy", "blanks, then guesses"),
    "digits": ("digits (GRU, rows)", "eval accuracy", "majority class"),
    "sunspots": ("sunspots (LSTM, window 24)", "eval MSE (std units)", "naive forecast"),
    "co2": ("co2 (GRU, 36 months to 12)", "eval MSE (std units)", "naive forecast"),
    "tagging": ("tagging (bidirectional GRU)", "eval accuracy per character", "majority tag"),
    "dates": ("dates (GRU encoder-decoder)", "greedy exact match", None),
    "chars": ("chars (LSTM, 64 characters)", "eval cross-entropy (nats/char)", "unigram"),
}


def experiments_defaults(results: list[Result]) -> list[str]:
    by_name = {result.name.removeprefix("seqlab run "): result for result in results}
    rows = []
    for experiment, (label, metric_label, baseline_label) in EXPERIMENTS.items():
        result = by_name[experiment]
        metric = result.provenance["main_metric"]
        final = significant(result.value(experiment, metric), 3, max_decimals=4)
        if result.provenance["status"] == "stopped_early":
            final += f" (stopped early at step {result.value(experiment, 'steps'):.0f})"
        baseline = significant(result.value(experiment, f"baseline {metric}"), 3, max_decimals=3)
        if baseline_label:
            baseline += f" ({baseline_label})"
        wall = f"{result.value(experiment, 'wall time'):.0f} s"
        rows.append([label, metric_label, final, baseline, wall])
    return markdown_table(["experiment", "main metric", "final", "baseline", "time"], rows)


GRADNORM_FULL_CELLS = {
    "linear": "linear, W_hh = 0.9·Q (calibration)",
    "rnn": "rnn (tanh)",
    "lstm": "lstm",
    "gru": "gru",
    "mgu": "mgu",
}
GRADNORM_FULL_COLUMNS = (("init", 128), ("init", 1024), ("trained", 128), ("trained", 1024))


def gradnorm_decay_full(results: list[Result]) -> list[str]:
    (result,) = results
    present = {(row.case, row.metric) for row in result.rows}
    rows = []
    for cell, label in GRADNORM_FULL_CELLS.items():
        cells = [label]
        for phase, steps in GRADNORM_FULL_COLUMNS:
            case = case_name(cell, phase, T=steps)
            if (case, "decay factor") not in present:
                cells.append("")
            elif cell == "linear":
                # the calibration: exp(ln 0.9) must print as 0.9000
                factor = result.value(case, "decay factor")
                cells.append(f"{factor:.4f}" + (" (exact)" if abs(factor - 0.9) < 5e-5 else ""))
            else:
                row = result.row(case, "decay factor")
                low, high = row.spread
                cells.append(f"{row.value:.3f} [{low:.3f}, {high:.3f}]")
        rows.append(cells)
    header = ["cell"] + [f"{phase}, T = {steps}" for phase, steps in GRADNORM_FULL_COLUMNS]
    return markdown_table(header, rows)


def gradnorm_decay_ci_parallel_cells(results: list[Result]) -> list[str]:
    (result,) = results
    rows = [
        [label]
        + [
            f"{result.value(case_name(cell, phase, T=256), 'decay factor'):.2f}"
            for phase in ("init", "trained")
        ]
        for cell, label in PARALLEL_CELLS.items()
    ]
    return markdown_table(["cell", "init", "trained"], rows)


SCAN_THROUGHPUT_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "tanh RNN"}
SCAN_THROUGHPUT_SHAPES = ((32, 256, 256), (16, 1024, 128))


def scan_throughput_cpu(results: list[Result]) -> list[str]:
    (result,) = results
    rows = []
    for batch, steps, hidden in SCAN_THROUGHPUT_SHAPES:
        for cell, label in SCAN_THROUGHPUT_CELLS.items():

            def case(name, cell=cell, batch=batch, steps=steps, hidden=hidden):
                return case_name(cell, name, B=batch, T=steps, H=hidden)

            default = result.value(case("seqlab xla"), "fwd+bwd time")
            ratios = [
                f"{result.value(case(name), 'fwd+bwd time') / default:.2f}x"
                for name in ("seqlab xla-autodiff", "flax.linen.RNN", "torch.nn (cuDNN/oneDNN)")
            ]
            memory = result.value(case("seqlab xla"), "temporary memory")
            autodiff_memory = result.value(case("seqlab xla-autodiff"), "temporary memory")
            rows.append(
                [
                    label,
                    f"{batch}, {steps}, {hidden}",
                    f"{default:.0f}",
                    *ratios,
                    f"{memory:.1f} ({autodiff_memory:.1f})",
                ]
            )
    header = [
        "cell",
        "(B, T, H)",
        "fwd+bwd ms",
        "vs autodiff",
        "vs flax",
        "vs torch",
        "temp MB (autodiff)",
    ]
    return markdown_table(header, rows)


DEMO_CELLS = {"rnn": "rnn (tanh)", "lstm": "lstm", "gru": "gru"}
ADDING_BASELINE_MSE = 1 / 6


def demo(results: list[Result]) -> list[str]:
    (result,) = results
    rows = []
    for cell, label in DEMO_CELLS.items():
        mse = result.value(cell, "eval MSE")
        rows.append(
            [
                label,
                f"{mse:.4f}",
                significant(mse / ADDING_BASELINE_MSE, 3, 3),
                "yes" if result.value(cell, "solved") else "no",
                f"{result.value(cell, 'decay factor init'):.3f}",
                f"{result.value(cell, 'decay factor trained'):.3f}",
                f"{result.value(cell, 'train time'):.0f}",
            ]
        )
    header = [
        "cell",
        "eval MSE",
        "/ baseline (1/6)",
        "solved (< 0.01)",
        "decay per step, init",
        "after training",
        "train s",
    ]
    return markdown_table(header, rows)


TABLES: dict[str, Table] = {
    "demo": Table(("demo_full_cpu_2026-12-03",), demo),
    "parallel-scan-h200": Table(
        (
            "parallel_scan_gpu_gpu_2026-11-26.json",
            "parallel_scan_gpu_gpu_2026-11-26_run2_einsum_blocks.json",
            "parallel_scan_gpu_gpu_2026-11-26_run3.json",
        ),
        parallel_scan_h200,
    ),
    "experiments-defaults": Table(("experiments_defaults_cpu_2026-11-24",), experiments_defaults),
    "gradnorm-decay-full": Table(("gradnorm_decay_full_2026-11-24",), gradnorm_decay_full),
    "gradnorm-decay-ci-parallel-cells": Table(
        ("gradnorm_decay_ci_2026-11-26",), gradnorm_decay_ci_parallel_cells
    ),
    "scan-throughput-cpu": Table(("scan_throughput_cpu_cpu_2026-11-26.json",), scan_throughput_cpu),
}

MARKER = re.compile(
    r"<!-- table: (?P<name>[\w-]+) \(from [^)]*\) -->\n.*?<!-- /table: (?P=name) -->", re.S
)


def block(name: str) -> str:
    """The README text of table ``name``, its markers included."""
    table = TABLES[name]
    sources = ", ".join(
        f"benchmarks/results/{source}" + ("/" if (RESULTS / source).is_dir() else "")
        for source in table.sources
    )
    lines = table.render(table.load())
    return "\n".join(
        [f"<!-- table: {name} (from {sources}) -->", "", *lines, "", f"<!-- /table: {name} -->"]
    )


def render(text: str) -> str:
    """``text`` (the README) with every marked table rendered from its files. ValueError if
    a table of TABLES has no markers, or its markers appear twice, or a marker names no
    table."""
    found = [match.group("name") for match in MARKER.finditer(text)]
    openings = re.findall(r"<!-- table: ([\w-]+)", text)
    if sorted(found) != sorted(openings):
        raise ValueError(
            f"unclosed or malformed table markers: {sorted(set(openings) - set(found))}"
        )
    unknown = sorted(set(found) - set(TABLES))
    missing = sorted(set(TABLES) - set(found))
    repeated = sorted({name for name in found if found.count(name) > 1})
    if unknown or missing or repeated:
        raise ValueError(
            f"README table markers: unknown {unknown}, missing {missing}, repeated {repeated}"
        )
    return MARKER.sub(lambda match: block(match.group("name")), text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 with a diff if README.md differs"
    )
    parser.add_argument("--readme", default=str(README))
    args = parser.parse_args(argv)
    path = pathlib.Path(args.readme)
    text = path.read_text()
    rendered = render(text)
    if rendered == text:
        print(f"{path.name}: every table matches its result files")
        return 0
    diff = difflib.unified_diff(
        text.splitlines(keepends=True),
        rendered.splitlines(keepends=True),
        f"{path.name} (as committed)",
        f"{path.name} (rendered from benchmarks/results)",
    )
    sys.stdout.writelines(diff)
    if args.check:
        print(
            f"\n{path.name} differs from its result files: run python benchmarks/readme_tables.py"
        )
        return 1
    path.write_text(rendered)
    print(f"\n{path.name} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
