"""``report.md`` of a study directory (``seqlab tune``): trials, best per cell, parameter
importances, plots, and what pruning saved.

Written into the study directory: ``report.md``, ``trials.csv`` (one row per trial) and
``plots/optimization_history.png``, ``plots/parallel_coordinate.png`` and
``plots/param_importances.png`` (Optuna's matplotlib plots).
"""

from __future__ import annotations

import math
import pathlib
import warnings

from seqlab.experiments import _rundir
from seqlab.experiments._plots import save_figure
from seqlab.experiments._report import _csv_text, _markdown_table
from seqlab.experiments._report import report as report_run_or_sweep
from seqlab.experiments._study import (
    CONFIRM,
    TUNE,
    load_existing,
    load_optuna,
    space_of,
    study_summary,
)


def _trial_rows(out_dir: pathlib.Path, study, keys: list[str]) -> list[dict]:
    retried_as = {}
    for t in study.get_trials(deepcopy=False):
        for number in t.system_attrs.get("retry_history") or []:
            retried_as[number] = t.number
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        notes = []
        if "retry_of" in t.user_attrs:
            notes.append(f"retry of {t.user_attrs['retry_of']}, resumed from its checkpoint")
        if t.number in retried_as:
            notes.append(f"worker died; retried as {retried_as[t.number]}")
        if "error" in t.user_attrs:
            notes.append(t.user_attrs["error"][:160])
        status = t.user_attrs.get("status")
        if status and status not in ("finished", "pruned"):
            notes.append(status)
        state = t.state.name.lower()
        if t.number in retried_as:
            state = "fail, retried"  # its work went on as its retry
        row = {"trial": t.number, "state": state, "value": t.value}
        last = max(t.intermediate_values) if t.intermediate_values else None
        row["steps"] = t.user_attrs.get("steps", last)
        row["seconds"] = t.user_attrs.get("seconds")
        for key in keys:
            row[key] = t.params.get(key)
        run_dir = t.user_attrs.get("run_dir")
        row["run"] = run_dir if run_dir and (out_dir / run_dir).is_dir() else ""
        row["notes"] = "; ".join(notes)
        rows.append(row)
    return rows


def pruning_savings(out_dir: pathlib.Path, study) -> dict:
    """Steps and (estimated) seconds the pruned trials did not train, against running
    every ended trial to its train.steps. A pruned trial's time per step is measured from
    its own records after the first evaluation (which includes compilation)."""
    optuna = load_optuna()
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trained = full = 0
    seconds = saved = 0.0
    pruned = 0
    for t in study.get_trials(deepcopy=False, states=ended):
        run_dir = out_dir / t.user_attrs.get("run_dir", "")
        if not (run_dir / _rundir.CONFIG).exists() or "steps" not in t.user_attrs:
            continue
        steps = int(t.user_attrs["steps"])
        total = int(_rundir.read_config(run_dir).train.steps)
        trained += steps
        seconds += float(t.user_attrs.get("elapsed") or 0.0)
        if t.state != optuna.trial.TrialState.PRUNED:
            full += steps  # early stopping is not pruning: its steps are its full length
            continue
        pruned += 1
        full += total
        records = _rundir.read_metrics(run_dir / _rundir.METRICS)
        if len(records) >= 2:
            first, last = records[0], records[-1]
            rate = (last["elapsed"] - first["elapsed"]) / max(1, last["step"] - first["step"])
        else:
            rate = float(t.user_attrs.get("elapsed") or 0.0) / max(1, steps)
        saved += rate * (total - steps)
    return {
        "pruned": pruned,
        "steps_trained": trained,
        "steps_unpruned": full,
        "seconds_trained": seconds,
        "seconds_saved_estimate": saved,
    }


def _plots(out_dir: pathlib.Path, study, complete: int) -> list[tuple[str, pathlib.Path]]:
    optuna = load_optuna()
    # Optuna draws with pyplot (in whatever backend the session has; Agg without a
    # display); each figure is saved through seqlab's helper and closed at once.
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    made = []
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    wanted = [("optimization history", "optimization_history", vis.plot_optimization_history)]
    if complete >= 2:
        wanted += [
            ("parallel coordinates", "parallel_coordinate", vis.plot_parallel_coordinate),
            ("parameter importances", "param_importances", vis.plot_param_importances),
        ]
    for title, name, plot in wanted:
        try:
            with warnings.catch_warnings():  # experimental, and the importances' notes
                warnings.simplefilter("ignore")  # (the report quotes those)
                verbosity = optuna.logging.get_verbosity()
                optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials"
                try:
                    axes = plot(study)
                finally:
                    optuna.logging.set_verbosity(verbosity)
        except (ValueError, RuntimeError):
            continue  # e.g. importances of a space with one key
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        figure.set_size_inches(max(figure.get_size_inches()[0], 8), 5)
        try:
            path = save_figure(figure, plots / f"{name}.png")
        finally:
            plt.close(figure)
        made.append((title, path))
    return made


def report_study(out_dir) -> pathlib.Path:
    """Write report.md, trials.csv and plots/ of the study in ``out_dir``."""
    optuna = load_optuna()
    out_dir = pathlib.Path(out_dir)
    study, record, settings = load_existing(out_dir)
    space = space_of(record)
    keys = space.keys
    summary = study_summary(out_dir, study)
    rows = _trial_rows(out_dir, study, keys)
    _rundir.write_text(
        out_dir / "trials.csv", _csv_text(rows, list(rows[0]) if rows else ["trial"])
    )
    complete = summary["trials"].get("complete", 0)
    metric, direction = record["metric"], record["direction"]
    lines = [
        f"# Study report: {settings.study}",
        "",
        f"Task `{record['base']['task']}`; {direction} `{metric}` (the mean over "
        f"{record['seeds']} seed(s) per trial); sampler `{settings.sampler}` (seed "
        f"{settings.sampler_seed}), pruner `{settings.pruner}`; budget {settings.trials} "
        f"trials; storage `{settings.storage or 'study.db'}`.",
        "",
        "Trials: "
        + (
            ", ".join(f"{count} {state}" for state, count in sorted(summary["trials"].items()))
            or "none yet"
        )
        + ".",
    ]
    if space.fixed:
        lines += ["", "Fixed: " + " ".join(f"`{o}`" for o in space.fixed)]
    lines += ["", "Searched:", ""]
    for param in space.params:
        lines.append(f"- `{param.key}`: {param.describe()}")
    savings = pruning_savings(out_dir, study)
    if savings["steps_unpruned"]:
        share = savings["steps_trained"] / savings["steps_unpruned"]
        lines += [
            "",
            f"Pruning stopped {savings['pruned']} trial(s): the ended trials trained "
            f"{savings['steps_trained']} of the {savings['steps_unpruned']} steps of running "
            f"every one to the end ({share:.0%}); {savings['seconds_trained']:.0f} s of "
            f"training, about {savings['seconds_saved_estimate']:.0f} s saved (estimated from "
            "each pruned trial's own time per step).",
        ]
    best = summary.get("best")

    def searched(overrides, *, drop=()):
        return " ".join(
            f"`{o}`" for o in overrides if o not in space.fixed and o.split("=")[0] not in drop
        )

    if best:
        lines += [
            "",
            f"**Best trial: {best['number']}**, {metric} {best['value']:.4g}: "
            + searched(best["overrides"]),
        ]
    cell_param = next((p for p in space.params if p.key == "model.cell"), None)
    if cell_param is not None:
        per_cell = summary.get("best_per_cell", {})
        sign = 1.0 if direction == "minimize" else -1.0
        counts: dict = {}
        for row in rows:
            tally = counts.setdefault(row.get("model.cell"), {})
            tally[row["state"]] = tally.get(row["state"], 0) + 1

        def tried(cell) -> str:
            return ", ".join(f"{n} {state}" for state, n in sorted(counts.get(cell, {}).items()))

        cells = [
            {
                "model.cell": cell,
                "best trial": b["number"],
                metric: b["value"],
                "trials": tried(cell),
                "settings": searched(b["overrides"], drop=("model.cell",)),
            }
            for cell, b in sorted(per_cell.items(), key=lambda kv: sign * kv[1]["value"])
        ]

        def unfinished(cell) -> str:
            reached = [
                (sign * value, t.number, step)
                for t in study.get_trials(deepcopy=False)
                if t.params.get("model.cell") == cell
                for step, value in t.intermediate_values.items()
            ]
            if not reached:
                return "no completed trial"
            value, number, step = min(reached)
            return (
                f"no completed trial; best before pruning {sign * value:.4g} "
                f"(trial {number}, step {step})"
            )

        cells += [
            {
                "model.cell": c,
                "best trial": "",
                metric: None,
                "trials": tried(c) or "none",
                "settings": unfinished(c),
            }
            for c in cell_param.choices
            if c not in per_cell
        ]
        lines += ["", "Best per cell:", "", *_markdown_table(cells, list(cells[0]))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError) as error:
            importances = None
            reason = " ".join(str(error).split())
            lines += ["", f"Parameter importances: not available ({reason})."]
    if importances:
        notes = sorted(
            {
                "Optuna warns: " + " ".join(str(w.message).split())
                for w in caught
                if not issubclass(w.category, optuna.exceptions.ExperimentalWarning)
            }
        )
        conditional = [f"`{p.key}`" for p in space.params if p.when]
        if conditional:
            notes.insert(
                0,
                f"{', '.join(conditional)} rated over the trials that sampled them only, so "
                "not comparable with the others.",
            )
        lines += [
            "",
            "Parameter importances (Optuna's default evaluator, over the completed trials"
            + (f"; {' '.join(notes)}" if notes else "")
            + "):",
            "",
            *_markdown_table(
                [{"key": k, "importance": float(v)} for k, v in importances.items()],
                ["key", "importance"],
            ),
        ]
    confirmations = sorted((out_dir / CONFIRM).glob("*.json"))
    for path in confirmations:
        result = _rundir.read_json(path, numbers=True)  # NaN of a seed that diverged
        low, high = result["ci95"]
        lines += [
            "",
            f"Confirmation of trial {result['trial']} over {len(result['values'])} fresh seeds: "
            f"{metric} {result['mean']:.4g} (95% interval {low:.4g} .. {high:.4g}; the search "
            f"said {result['search_value']:.4g} over {result['search_seeds']} seed(s)).",
        ]
    for title, path in _plots(out_dir, study, complete):
        lines += ["", f"![{title}](plots/{path.name})"]
    if rows:
        shown = [{k: _short(v) for k, v in row.items()} for row in rows]
        lines += ["", "All trials:", "", *_markdown_table(shown, list(rows[0]))]
    lines += [
        "",
        "Each trial is a run directory (`trials/<number>/`): `seqlab report`, `seqlab analyze` "
        "and `seqlab.load_run` open it.",
        "",
    ]
    path = out_dir / "report.md"
    _rundir.write_text(path, "\n".join(lines))
    return path


def _short(value):
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.4g}")
    return value


def report(directory) -> pathlib.Path:
    """Write ``report.md`` for a run, a sweep or a study directory; returns its path."""
    if (pathlib.Path(directory) / TUNE).exists():
        return report_study(directory)
    return report_run_or_sweep(directory)
