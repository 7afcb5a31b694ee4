"""One schema for every committed benchmark result, and a loader for each format on disk.

A result is what one run of one benchmark measured::

    Result(name, preset, provenance, rows, source)
    Row(case, metric, value, unit, n, spread)

- ``name``: the benchmark (``"parallel_scan"``, ``"seqlab run adding"``, ...).
- ``preset``: the preset it ran (``"cpu"``, ``"full"``, ``"defaults"``, ...).
- ``provenance``: what the file records about where and how it ran (date, versions, device,
  settings), flat, string keys to strings or numbers. Only what the file holds: a loader
  never fills in what the run did not write. Files written since the benchmarks record
  ``benchmarks/_common.py``'s ``provenance()`` (a top-level ``"provenance"`` key: commit,
  versions, device, CPU, command line, date) give its fields, the versions as one key per
  package; they take precedence over what the loader reads elsewhere in the file. Results
  written before that carry ``committed_in`` instead: the commit that added them to the
  repository (``benchmarks/results/COMMITTED.json``, from git's history).
- ``rows``: one measured number each. ``case`` names what was measured, its parts joined by
  " / " (``"lstm / B=32 T=256 H=256 / seqlab xla"``); ``metric`` what of it
  (``"fwd+bwd time"``); ``value`` the number, in ``unit`` (``"ms"``, ``"s"``, ``"MiB"``,
  ``"x"`` for a ratio, ``""`` for a pure number); ``n`` how many repeats or seeds the value
  summarizes (None: the file does not say); ``spread`` its interval or range in the same
  unit, ``(low, high)`` (None: not recorded).
- ``source``: the file or folder it was read from, relative to the repository.

The benchmarks still write their own formats (JSON, CSV and Markdown, listed in
``LOADERS``); the loaders here map each one into the schema, so that the README's tables
(``benchmarks/readme_tables.py``) and anyone else read every result the same way:

    python benchmarks/results_schema.py benchmarks/results/remat_memory_full_cpu_2026-11-24.json

prints it as schema JSON. Markdown files that only repeat a JSON file (same name) or hold
notes written by hand are not loaded. Standard library only: no JAX needed to read results.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
import re
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

Scalar = str | int | float | bool


@dataclasses.dataclass(frozen=True)
class Row:
    """One measured number: ``value`` (in ``unit``) of ``metric`` for ``case``, summarizing
    ``n`` repeats or seeds, with ``spread`` = (low, high) its interval or range."""

    case: str
    metric: str
    value: float
    unit: str = ""
    n: int | None = None
    spread: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    """What one run of one benchmark measured (see the module docstring)."""

    name: str
    preset: str
    provenance: Mapping[str, Scalar]
    rows: tuple[Row, ...]
    source: str = ""

    def row(self, case: str, metric: str) -> Row:
        """The row of ``case`` and ``metric``; KeyError naming what exists if none."""
        for row in self.rows:
            if row.case == case and row.metric == metric:
                return row
        cases = sorted({row.case for row in self.rows})
        metrics = sorted({row.metric for row in self.rows if row.case == case})
        raise KeyError(
            f"{self.source}: no row ({case!r}, {metric!r}); "
            + (f"metrics of that case: {metrics}" if metrics else f"cases: {cases}")
        )

    def value(self, case: str, metric: str) -> float:
        return self.row(case, metric).value

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"provenance": dict(self.provenance)}


def case_name(*parts: object, **dims: object) -> str:
    """The case naming convention: parts, then the dimensions as one part
    (``case_name("lstm", "seqlab xla", B=32, T=256)`` is ``"lstm / B=32 T=256 / seqlab
    xla"``: the dimensions go second)."""
    names = [str(part) for part in parts]
    if dims:
        names.insert(min(1, len(names)), " ".join(f"{k}={v}" for k, v in dims.items()))
    return " / ".join(names)


def _relative(path: pathlib.Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _date_from_name(path: pathlib.Path) -> str | None:
    found = re.search(r"\d{4}-\d{2}-\d{2}", path.name)
    return found.group(0) if found else None


def _markdown_provenance(path: pathlib.Path) -> dict[str, Scalar]:
    """The header of a benchmark's own Markdown file (same stem as its JSON): its title and
    the ``- key: value`` / ``- text`` lines before the first table, and the repeats it
    states (``medians of 9``)."""
    if not path.exists():
        return {}
    header = path.read_text().split("\n|", 1)[0]
    found: dict[str, Scalar] = {}
    details = []
    for line in header.splitlines():
        if line.startswith("# "):
            found["title"] = line[2:].strip()
        elif line.startswith("- "):
            key, sep, value = line[2:].partition(": ")
            if sep and re.fullmatch(r"[a-z ]+", key):
                found[key] = value.strip()
            else:
                details.append(line[2:].strip())
        elif line.strip():
            details.append(line.strip())
    if details:
        found["details"] = "; ".join(details)
    repeats = re.search(r"medians? of (\d+)", header)
    if repeats:
        found["repeats"] = int(repeats.group(1))
    if "date" not in found and (date := _date_from_name(path)):
        found["date"] = date
    return found


def _scalars(mapping: Mapping, skip: Sequence[str] = ()) -> dict[str, Scalar]:
    return {
        key: value
        for key, value in mapping.items()
        if key not in skip and isinstance(value, Scalar) and value is not None
    }


def _recorded(data) -> dict[str, Scalar]:
    """The ``"provenance"`` record of a benchmark's JSON (``_common.provenance()``), flat:
    its ``versions`` as one key per installed package; {} for a file written before the
    benchmarks recorded it."""
    record = data.get("provenance") if isinstance(data, Mapping) else None
    if not isinstance(record, Mapping):
        return {}
    flat = _scalars(record, skip=("versions",)) | _scalars(record.get("versions") or {})
    if isinstance(flat.get("date"), str):  # the schema's date is the day; the time is kept
        flat["recorded_at"], flat["date"] = flat["date"], flat["date"][:10]
    return flat


def _median_spread(values: Sequence[float]) -> tuple[float, int, tuple[float, float]]:
    return statistics.median(values), len(values), (min(values), max(values))


# ---------------------------------------------------------------------------- the loaders
# Each takes the path of one committed result (a file, or a folder for the benchmarks that
# write one) and returns its Results.


def load_parallel_scan(path: pathlib.Path) -> list[Result]:
    """``parallel_scan_<preset>_<backend>_<date>*.json``: medians of ``rounds`` interleaved
    rounds per (cell, T, H), sequential against parallel; the trade table at equal H."""
    data = json.loads(path.read_text())
    rounds = data["rounds"]
    rows = []
    for r in data["rows"]:
        case = case_name(r["cell"], T=r["T"], H=r["H"], B=r["B"])
        for metric, key, unit, n in (
            ("sequential fwd time", "sequential_fwd_ms", "ms", rounds),
            ("parallel fwd time", "parallel_fwd_ms", "ms", rounds),
            ("sequential fwd+bwd time", "sequential_fwdbwd_ms", "ms", rounds),
            ("parallel fwd+bwd time", "parallel_fwdbwd_ms", "ms", rounds),
            ("fwd speed-up", "speedup_fwd", "x", rounds),
            ("fwd+bwd speed-up", "speedup_fwdbwd", "x", rounds),
            ("newton iterations", "iterations", "iterations", 1),
            ("converged", "converged", "bool", 1),
            ("relative error", "error", "", 1),
        ):
            rows.append(Row(case, metric, float(r[key]), unit, n))
    for r in data.get("trade", []):
        case = case_name("trade", T=r["T"], H=r["H"], B=r["B"])
        for key, value in r.items():
            if key.endswith(" ms"):
                rows.append(Row(case, key[: -len(" ms")] + " time", float(value), "ms", rounds))
    provenance = _scalars(data) | _recorded(data)
    return [Result("parallel_scan", data["preset"], provenance, tuple(rows), _relative(path))]


def load_scan_throughput(path: pathlib.Path) -> list[Result]:
    """``scan_throughput_<preset>_<backend>_<date>.json``: a list of timings (2026-11-24) or
    ``{"rows", "matmul_rates"}`` (from 2026-11-26; ``"provenance"`` later); provenance and
    repeats from the Markdown file of the same name, the JSON's provenance over it."""
    data = json.loads(path.read_text())
    provenance = _markdown_provenance(path.with_suffix(".md")) | _recorded(data)
    repeats = provenance.get("repeats")
    timings = data if isinstance(data, list) else data["rows"]
    rows = []
    for r in timings:
        batch, steps, hidden = r["shape"]
        case = case_name(r["cell"], r["name"], B=batch, T=steps, H=hidden)
        rows.append(Row(case, "fwd time", r["forward_ms"], "ms", repeats))
        rows.append(Row(case, "fwd+bwd time", r["backward_ms"], "ms", repeats))
        if "gflops" in r:
            rows.append(Row(case, "fwd+bwd rate", r["gflops"], "GFLOP/s", repeats))
        if r.get("temp_mb") is not None:
            rows.append(Row(case, "temporary memory", r["temp_mb"], "MB", 1))
    for r in [] if isinstance(data, list) else data.get("matmul_rates", []):
        m, k, n = r["shape"]
        case = case_name("matmul", r["where"], r["library"], M=m, K=k, N=n)
        rows.append(Row(case, "rate", r["gflops"], "GFLOP/s", repeats))
    preset = re.match(r"scan_throughput_([a-z]+)_", path.name).group(1)
    return [Result("scan_throughput", preset, provenance, tuple(rows), _relative(path))]


def load_remat_memory(path: pathlib.Path) -> list[Result]:
    """``remat_memory_<preset>_<backend>_<date>.json``: XLA's memory analysis and the time of
    the jitted gradient, with and without remat: a list of measurements, or (later files)
    ``{"rows": [...], "provenance": {...}}``. The 2026-11-24 file has no
    ``implementation`` field: it is then ``"default"`` (autodiff at the time)."""
    data = json.loads(path.read_text())
    provenance = _markdown_provenance(path.with_suffix(".md")) | _recorded(data)
    repeats = provenance.get("repeats")
    rows = []
    for r in data if isinstance(data, list) else data["rows"]:
        case = case_name(r.get("implementation", "default"), "remat" if r["remat"] else "plain")
        rows.append(Row(case, "temporary memory", r["temp_mib"], "MiB", 1))
        rows.append(Row(case, "total memory", r["total_mib"], "MiB", 1))
        rows.append(Row(case, "fwd+bwd time", r["seconds"], "s", repeats))
    preset = re.match(r"remat_memory_([a-z]+)_", path.name).group(1)
    return [Result("remat_memory", preset, provenance, tuple(rows), _relative(path))]


def load_sweep_seeds(path: pathlib.Path) -> list[Result]:
    """``sweep_seeds_<preset>_<backend>_<date>.json``: seconds for one seed, the seeds as one
    program and one after another."""
    data = json.loads(path.read_text())
    repeats = _markdown_provenance(path.with_suffix(".md")).get("repeats")
    rows = tuple(
        Row(case, "time", seconds, "s", repeats) for case, seconds in data["seconds"].items()
    )
    provenance = _scalars(data) | _recorded(data)
    return [Result("sweep_seeds", data["preset"], provenance, rows, _relative(path))]


def load_gpu_scan(path: pathlib.Path) -> list[Result]:
    """``gpu_scan_<preset>_<backend>_<date>.json``: the measured ceilings, each check's
    largest relative errors (forward, gradients) and the timings."""
    data = json.loads(path.read_text())
    rows = [Row("ceiling", key, value, "", 1) for key, value in data["ceilings"].items()]
    for check in data["checks"]:
        for metric in ("forward", "gradients"):
            if check.get(metric) is not None:
                rows.append(Row(check["name"], f"{metric} relative error", check[metric], "", 1))
        rows.append(Row(check["name"], "ok", float(check["ok"]), "bool", 1))
    for r in data["rows"]:
        batch, steps, hidden = r["shape"]
        case = case_name(r["cell"], r["name"], B=batch, T=steps, H=hidden)
        rows.append(Row(case, "fwd time", r["forward_ms"], "ms"))
        rows.append(Row(case, "fwd+bwd time", r["backward_ms"], "ms"))
    preset = re.match(r"gpu_scan_([a-z]+)_", path.name).group(1)
    provenance = _scalars(data) | {"incomplete": bool(data.get("incomplete"))} | _recorded(data)
    return [Result("gpu_scan", preset, provenance, tuple(rows), _relative(path))]


def load_kernel_resources(path: pathlib.Path) -> list[Result]:
    """``kernel_resources_<preset>_<date>.json``: what each fused kernel compiled to for
    sm_90 (registers, spills, shared memory, barrier instructions)."""
    data = json.loads(path.read_text())
    rows = []
    for r in data["rows"]:
        case = case_name(
            r["kind"],
            r["dtype"],
            r["direction"],
            " ".join(f"{k}={r[k]}" for k in ("block_batch", "block_hidden", "block_k")),
            f"num_warps={r['num_warps']}",
            B=r["batch"],
            H=r["hidden"],
        )
        for metric, unit in (
            ("registers", "per thread"),
            ("stack", "bytes"),
            ("local", "bytes"),
            ("shared", "bytes"),
            ("acq_rel_atomics", "instructions"),
            ("volatile_loads", "instructions"),
            ("cta_barriers", "instructions"),
        ):
            if r.get(metric) is not None:
                rows.append(Row(case, metric, float(r[metric]), unit, 1))
        rows.append(Row(case, "ok", float(r["ok"]), "bool", 1))
    preset = re.match(r"kernel_resources_([a-z]+)_", path.name).group(1)
    provenance = _scalars(data) | _recorded(data)
    return [Result("kernel_resources", preset, provenance, tuple(rows), _relative(path))]


def load_distributed_training(path: pathlib.Path) -> list[Result]:
    """``distributed_training_<backend>_<date>.json``: seconds per training chunk (median
    of the repeats, range) and each chunk's loss, for each set-up."""
    data = json.loads(path.read_text())
    setups = {
        "one": f"1 process x {data['one']['devices']} devices",
        "many": f"{data['processes']} processes x {data['devices'] // data['processes']} devices",
        "one_device": "1 process x 1 device",
    }
    rows = []
    for key, setup in setups.items():
        median, n, spread = _median_spread(data[key]["seconds"])
        rows.append(Row(setup, "seconds per chunk", median, "s", n, spread))
        for chunk, loss in enumerate(data[key]["losses"]):
            rows.append(Row(setup, f"loss, chunk {chunk}", loss, "", 1))
    provenance = _scalars(data) | {"date": _date_from_name(path)} | _recorded(data)
    return [
        Result("distributed_training", data["preset"], provenance, tuple(rows), _relative(path))
    ]


def load_parallel_convergence(path: pathlib.Path) -> list[Result]:
    """``parallel_convergence_<preset>_<date>/results.json``: the largest Lyapunov exponent
    of each case (mean, 95% interval over seeds) and the Newton iterations of each seed at
    each T (with whether it converged)."""
    data = json.loads((path / "results.json").read_text())
    rows = []
    for r in data["rows"]:
        seeds = len(r["exponents"])
        spread = (r["exponent_low"], r["exponent_high"])
        rows.append(Row(r["case"], "lyapunov exponent", r["exponent"], "1/step", seeds, spread))
        for steps, per_seed in r["iterations"].items():
            for seed, iterations in enumerate(per_seed):
                case = case_name(r["case"], f"seed {seed}", T=steps)
                rows.append(Row(case, "newton iterations", float(iterations), "iterations", 1))
                converged = r["converged"][steps][seed]
                rows.append(Row(case, "converged", float(converged), "bool", 1))
    provenance = _scalars(data) | _scalars(data["preset_values"]) | _recorded(data)
    return [
        Result("parallel_convergence", data["preset"], provenance, tuple(rows), _relative(path))
    ]


def load_gradnorm_decay(path: pathlib.Path) -> list[Result]:
    """``gradnorm_decay_<preset>_<date>/``: ``decay_rates.csv`` (the rate of each cell,
    phase and T with its 95% interval over seeds; the factor exp(rate) with exp of that
    interval) and ``diagnostics.csv`` (per seed; here the mean over seeds, with the range).
    Seeds and the preset from ``summary.md``; provenance from its header, and (later runs)
    the record in ``curves.json`` over it."""
    summary = (path / "summary.md").read_text()
    seeds = int(re.search(r"seeds=(\d+)", summary).group(1))
    rows = []
    with open(path / "decay_rates.csv", newline="") as file:
        for r in csv.DictReader(file):
            case = case_name(r["cell"], r["phase"], T=r["T"])
            low, high = float(r["low"]), float(r["high"])
            rows.append(Row(case, "decay rate", float(r["rate"]), "1/step", seeds, (low, high)))
            factor_spread = (math.exp(low), math.exp(high))
            rows.append(Row(case, "decay factor", float(r["factor"]), "", seeds, factor_spread))
    per_case: dict[tuple[str, str], list[float]] = {}
    with open(path / "diagnostics.csv", newline="") as file:
        for r in csv.DictReader(file):
            for metric, value in r.items():
                if metric not in ("cell", "phase", "seed") and value:
                    per_case.setdefault((f"{r['cell']} / {r['phase']}", metric), []).append(
                        float(value)
                    )
    for (case, metric), values in per_case.items():
        rows.append(
            Row(case, metric, statistics.fmean(values), "", len(values), (min(values), max(values)))
        )
    provenance: dict[str, Scalar] = {}
    for line in summary.split("\n## Provenance\n", 1)[0].splitlines():
        if line.startswith("- "):
            key, sep, value = line[2:].partition(": ")
            provenance[key if sep else "versions" if key.startswith("jax") else "preset"] = (
                value if sep else key
            )
    if (path / "curves.json").exists():
        provenance |= _recorded(json.loads((path / "curves.json").read_text()))
    preset = re.search(r"preset (\w+)", summary).group(1)
    return [Result("gradnorm_decay", preset, provenance, tuple(rows), _relative(path))]


def load_experiments_defaults(path: pathlib.Path) -> list[Result]:
    """``experiments_defaults_<backend>_<date>/``: one ``<name>.summary.json`` per
    experiment (a run directory's summary.json) and ``wall_times.txt``; one Result per
    experiment, its status and main metric in the provenance."""
    wall_times = {}
    for line in (path / "wall_times.txt").read_text().splitlines():
        name, seconds, _unit, _rc = line.split()
        wall_times[name] = float(seconds)
    results = []
    for file in sorted(path.glob("*.summary.json")):
        data = json.loads(file.read_text())
        experiment = file.name.removesuffix(".summary.json")
        seeds = len(data["seeds"])
        rows = [
            Row(experiment, metric, value, "", seeds) for metric, value in data["final"].items()
        ]
        rows += [
            Row(experiment, f"baseline {metric}", value, "", 1)
            for metric, value in data["baselines"].items()
        ]
        rows.append(Row(experiment, "steps", float(data["step"]), "steps", 1))
        rows.append(Row(experiment, f"best {data['main_metric']}", data["best"], "", seeds))
        if experiment in wall_times:
            rows.append(Row(experiment, "wall time", wall_times[experiment], "s", 1))
        provenance = _scalars(data) | {"date": _date_from_name(path)}
        results.append(
            Result(f"seqlab run {experiment}", "defaults", provenance, tuple(rows), _relative(file))
        )
    return results


def load_vmap_seeds(path: pathlib.Path) -> list[Result]:
    """``vmap_seeds_cpu_<date>/``: each ``run*.json`` (hang trials: per batching and cell the
    trials, hangs, median compile and chunk seconds) and each ``vmap_vs_loop*.json``
    (seconds per chunk by seed count and batching)."""
    results = []
    for file in sorted(path.glob("run*.json")):
        data = json.loads(file.read_text())
        rows = []
        for case, summary in data["summary"].items():
            trials = summary["trials"]
            for metric, unit in (("trials", "trials"), ("hangs", "trials"), ("errors", "trials")):
                rows.append(Row(case, metric, float(summary[metric]), unit, 1))
            for metric in ("compile", "chunk"):
                if summary[metric] is not None:
                    rows.append(Row(case, f"{metric} time", summary[metric], "s", trials))
        provenance = _scalars(data) | _scalars(data["settings"]) | _recorded(data)
        results.append(Result("vmap_seeds_cpu", "trials", provenance, tuple(rows), _relative(file)))
    for file in sorted(path.glob("vmap_vs_loop*.json")):
        data = json.loads(file.read_text())
        rows = tuple(
            Row(
                case_name(f"{key.split('/')[0]} seeds", key.split("/")[1]),
                "seconds per chunk",
                value,
                "s",
            )
            for key, value in data.items()
        )
        jax_version = re.search(r"jax([\d.]+)\.json$", file.name).group(1)
        provenance = {"jax": jax_version, "date": _date_from_name(path)}
        results.append(Result("vmap_vs_loop", "cpu", provenance, rows, _relative(file)))
    return results


def load_demo(path: pathlib.Path) -> list[Result]:
    """``demo_<preset>_<backend>_<date>/results.json`` (``benchmarks/record_demo.py``): per
    cell the eval MSE (mean and per seed), the gradient-norm decay factor at initialization
    and after training, and its training seconds; the demo's wall time in all."""
    data = json.loads((path / "results.json").read_text())
    rows = [Row("demo", "wall time", float(data["wall_seconds"]), "s", 1)]
    for result in data["results"]:
        cell, seeds = result["cell"], len(result["eval_mse_per_seed"])
        spread = (min(result["eval_mse_per_seed"]), max(result["eval_mse_per_seed"]))
        rows += [
            Row(cell, "eval MSE", float(result["eval_mse_mean"]), "", seeds, spread),
            Row(cell, "solved", float(result["solved"]), "bool", seeds),
            Row(cell, "decay factor init", float(result["decay_factor_init"]), "per step", 1),
            Row(cell, "decay factor trained", float(result["decay_factor_trained"]), "per step", 1),
            Row(cell, "train time", float(result["seconds"]), "s", 1),
        ]
    provenance = _scalars(data["config"]) | {"date": _date_from_name(path)} | _recorded(data)
    return [Result("demo", data["preset"], provenance, tuple(rows), _relative(path))]


def load_test_suite_times(path: pathlib.Path) -> list[Result]:
    """``test_suite_times_<date>/results.json``: wall and CPU time of the README's test
    command, one run per Python (recorded by hand from pytest's summary and ``time``)."""
    data = json.loads((path / "results.json").read_text())
    rows = []
    for run in data["runs"]:
        case = case_name(f"python {run['python']}", jax=run["jax"], commit=run["commit"])
        rows.append(Row(case, "wall time", float(run["wall_s"]), "s", 1))
        rows.append(Row(case, "CPU user time", float(run["user_s"]), "s", 1))
        rows.append(Row(case, "tests passed", float(run["passed"]), "tests", 1))
    provenance = _scalars(data, skip=("runs",))
    return [Result(data["name"], data["preset"], provenance, tuple(rows), _relative(path))]


def _rows(data: dict) -> tuple[Row, ...]:
    """The ``"rows"`` of a result in load_rows' format."""
    return tuple(
        Row(
            r["case"],
            r["metric"],
            r["value"],
            r.get("unit", ""),
            r.get("n"),
            None if not r.get("spread") else tuple(r["spread"]),
        )
        for r in data["rows"]
    )


def load_rows(path: pathlib.Path) -> list[Result]:
    """``<name>_<preset>_<date>[_run<k>].json`` (``_run<k>``: further runs of the same
    day) written as ``{"preset", "rows": [{case, metric, value, unit, n, spread}],
    "provenance"}`` (tree_depth_decay, tree_throughput, listops_compare, conv_frontend,
    conv_experiments)."""
    data = json.loads(path.read_text())
    name = re.match(r"([a-z_]+?)_(ci|cpu|full|gpu)_", path.name).group(1)
    rows = _rows(data)
    provenance = _scalars(data) | _recorded(data)
    return [Result(name, data["preset"], provenance, rows, _relative(path))]


def load_tune_cells(path: pathlib.Path) -> list[Result]:
    """``tune_cells_<preset>_<backend>_<date>/results.json`` (``benchmarks/tune_cells.py``):
    the study's wall time, trials by state, what pruning saved, and the best value per
    cell, in load_rows' row format (the study's report.md and plots beside it)."""
    data = json.loads((path / "results.json").read_text())
    rows = _rows(data)
    provenance = _scalars(data) | _recorded(data)
    return [Result("tune_cells", data["preset"], provenance, rows, _relative(path))]


# the results written in load_rows' format
ROWS = (
    r"(tree_depth_decay|tree_throughput|listops_compare|conv_frontend|conv_experiments)_(ci|cpu|full|gpu)_[\d-]+"
    r"(_run\d+)?"
)
# name pattern of a committed result (a file or a folder under benchmarks/results/) -> loader
LOADERS: dict[str, Callable[[pathlib.Path], list[Result]]] = {
    r"parallel_scan_\w+_\w+_[\d-]+.*\.json": load_parallel_scan,
    r"scan_throughput_\w+_\w+_[\d-]+\.json": load_scan_throughput,
    r"remat_memory_\w+_\w+_[\d-]+\.json": load_remat_memory,
    r"sweep_seeds_\w+_\w+_[\d-]+\.json": load_sweep_seeds,
    r"gpu_scan_\w+_\w+_[\d-]+\.json": load_gpu_scan,
    r"kernel_resources_\w+_[\d-]+\.json": load_kernel_resources,
    r"distributed_training_\w+_[\d-]+\.json": load_distributed_training,
    r"parallel_convergence_\w+_[\d-]+": load_parallel_convergence,
    r"gradnorm_decay_\w+_[\d-]+": load_gradnorm_decay,
    r"experiments_defaults_\w+_[\d-]+": load_experiments_defaults,
    r"vmap_seeds_\w+_[\d-]+": load_vmap_seeds,
    r"test_suite_times_[\d-]+": load_test_suite_times,
    r"demo_\w+_\w+_[\d-]+": load_demo,
    r"tune_cells_\w+_\w+_[\d-]+(_run\d+)?": load_tune_cells,
    ROWS + r"\.json": load_rows,
}


def loader_for(path: pathlib.Path) -> Callable[[pathlib.Path], list[Result]] | None:
    matches = [load for pattern, load in LOADERS.items() if re.fullmatch(pattern, path.name)]
    if len(matches) > 1:
        raise ValueError(f"{path}: more than one loader matches")
    return matches[0] if matches else None


def load(path: str | pathlib.Path) -> list[Result]:
    """Every Result of one committed result (a file, or a folder), by its name's format;
    ValueError if no loader knows it."""
    path = pathlib.Path(path)
    if not path.is_absolute() and not path.exists():
        path = REPO / path
    load_one = loader_for(path)
    if load_one is None:
        raise ValueError(f"{path}: no loader for this name (benchmarks/results_schema.py LOADERS)")
    results = load_one(path)
    committed_in = _committed_in().get(path.name) if path.parent.resolve() == RESULTS else None
    if committed_in:
        results = [
            result
            if result.provenance.get("commit")
            else dataclasses.replace(
                result, provenance={**result.provenance, "committed_in": committed_in}
            )
            for result in results
        ]
    return results


def _committed_in() -> dict[str, str]:
    """``COMMITTED.json``: for each result written before the benchmarks recorded their
    commit, the commit that added it (git's record, not the run's: reported as
    ``committed_in``, never as ``commit``)."""
    file = RESULTS / "COMMITTED.json"
    return json.loads(file.read_text())["committed_in"] if file.exists() else {}


def load_all(results: pathlib.Path = RESULTS) -> dict[str, list[Result]]:
    """Every committed result under ``results`` that a loader knows, by path."""
    return {_relative(path): load(path) for path in sorted(results.iterdir()) if loader_for(path)}


if __name__ == "__main__":
    for argument in sys.argv[1:] or [str(RESULTS)]:
        path = pathlib.Path(argument)
        loaded = load_all(path) if path.resolve() == RESULTS else {argument: load(path)}
        for results in loaded.values():
            for result in results:
                print(json.dumps(result.to_dict(), indent=1))
