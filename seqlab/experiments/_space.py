"""The search space of ``seqlab tune``: a small YAML file of dotted config keys.

    fixed:                        # optional: overrides every trial shares
      data.seq_len: 200
    space:
      model.cell: {kind: categorical, choices: [rnn, lstm, gru, diag_gru]}
      train.lr: {kind: float, low: 3.0e-4, high: 3.0e-2, log: true}
      model.hidden_size: {kind: int, low: 16, high: 64, step: 16}
      model.cell_options.max_timescale:
        {kind: float, low: 10, high: 1000, log: true, when: {model.cell: diag_gru}}

A file without ``fixed:`` may list the keys at its top level instead of under ``space:``.
``balance: KEY`` (beside ``space:``; KEY an unconditional categorical key) gives every
choice of KEY an equal share of the study's trials, in turn (trial n takes choice
n mod k; the sampler samples the rest): a comparison of cells under one budget where each
cell gets its trials, instead of the sampler spending them on the most promising one.
Kinds: ``float`` (``low``, ``high``, optional ``log: true``), ``int`` (``low``, ``high``,
optional ``step`` or ``log``) and ``categorical`` (``choices``). ``when`` makes a key
conditional: it is sampled only in trials where every named categorical key of the space
(sampled before it) took one of the given values.

``Space.check(config)`` tries the space against an experiment's typed config before
anything runs: every key exists, every range and choice is one the config accepts (each
boundary value is applied as an override, with the conditions that make it active), and
the experiment builds and traces with every choice of every categorical key. Each problem
is a ValueError naming the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
from typing import Any

import yaml

from seqlab.experiments._config import apply_overrides, valid_keys

KINDS = ("float", "int", "categorical")
_FIELDS = {
    "float": {"kind", "low", "high", "log", "when"},
    "int": {"kind", "low", "high", "step", "log", "when"},
    "categorical": {"kind", "choices", "when"},
}
# Keys inside these config mappings are free-form (checked by applying them), not leaves
# of the typed config.
_OPEN_MAPPINGS = ("model.cell_options.",)


@dataclasses.dataclass(frozen=True)
class Param:
    """One key of the space."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | None = None
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()  # ((categorical key, allowed values), ...)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when}
        return out

    def describe(self) -> str:
        """One line: ``{rnn, lstm}``, ``float 0.001 .. 0.03 (log)``, ``int 32 .. 96 step 32``,
        with its condition."""
        if self.kind == "categorical":
            text = "{" + ", ".join(str(c) for c in self.choices) + "}"
        else:
            text = f"{self.kind} {self.low:g} .. {self.high:g}"
            text += " (log)" if self.log else ""
            text += f" step {self.step}" if self.step else ""
        for key, values in self.when:
            text += f", when {key} in {{{', '.join(str(v) for v in values)}}}"
        return text

    def boundary(self) -> list:
        """The values a check applies: every choice, or both ends of the range."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def first(self):
        return self.choices[0] if self.kind == "categorical" else self.low

    def active(self, assignment: dict) -> bool:
        return all(assignment.get(k, _UNSET) in values for k, values in self.when)

    def suggest(self, trial):
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)

    def grid_values(self) -> list:
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        raise ValueError(
            f"space: --sampler grid needs categorical or int keys; {self.key} is a float "
            "range (give it as a categorical list of values)"
        )


_UNSET = object()


def override(key: str, value) -> str:
    """``key=value`` as an override string that reads back as ``value``."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return f"{key}={text}"


@dataclasses.dataclass(frozen=True)
class Space:
    """A parsed search space: ``params`` in sampling order, ``fixed`` overrides."""

    params: tuple[Param, ...]
    fixed: tuple[str, ...] = ()
    balance: str | None = None

    def to_dict(self) -> dict:
        out = {
            "fixed": list(self.fixed),
            "space": {p.key: p.to_dict() for p in self.params},
        }
        if self.balance:
            out["balance"] = self.balance
        return out

    def balanced_choice(self, index: int) -> dict:
        """The fixed part of the study's ``index``-th original trial (``{}`` unbalanced)."""
        if not self.balance:
            return {}
        choices = next(p.choices for p in self.params if p.key == self.balance)
        return {self.balance: choices[index % len(choices)]}

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def suggest(self, trial) -> dict:
        """Sample (or, for an enqueued trial, read back) every active key of a trial:
        {key: value} in sampling order."""
        values: dict = {}
        for param in self.params:
            if param.active(values):
                values[param.key] = param.suggest(trial)
        return values

    def overrides(self, values: dict) -> list[str]:
        return [*self.fixed, *(override(k, v) for k, v in values.items())]

    def grid(self) -> dict:
        if any(p.when for p in self.params):
            raise ValueError(
                "space: --sampler grid cannot sample conditional keys (when:); use "
                "`seqlab sweep` for grids, or another sampler"
            )
        return {p.key: p.grid_values() for p in self.params}

    def complete(self, assignment: dict) -> dict:
        """``assignment`` with every inactive key dropped and every active key that is
        missing set to its first value (the first choice, or the low end)."""
        out: dict = {}
        for param in self.params:
            if not param.active(out):
                continue
            out[param.key] = assignment.get(param.key, param.first())
        return out

    def corners(self) -> list[dict]:
        """Assignments the checks apply: every boundary value of every key, each with the
        conditions that make it active (``Space.check`` applies them as overrides,
        ``_study.check_study`` builds and traces the experiment at each)."""
        by_key = {p.key: p for p in self.params}
        base = self.complete({})
        out = [base]

        def satisfy(param: Param, assignment: dict) -> dict:
            for key, values in param.when:
                assignment = satisfy(by_key[key], assignment)
                assignment[key] = values[0]
            return assignment

        for param in self.params:
            for value in param.boundary():
                assignment = satisfy(param, dict(base))
                assignment[param.key] = value
                assignment = self.complete(assignment)
                out.append(assignment)
        return out

    def check(self, config) -> None:
        """Refuse (ValueError naming the key) a space this experiment's config does not
        accept: unknown keys, values the typed config refuses. Building and tracing the
        experiment at each corner is ``seqlab.experiments._study.check_study``'s part."""
        keys = set(valid_keys(config))
        fixed_keys = [item.split("=", 1)[0] for item in self.fixed]
        for key in [*fixed_keys, *self.keys]:
            if key == "task":
                raise ValueError("space: task is fixed by the experiment and cannot be searched")
            if key not in keys and not key.startswith(_OPEN_MAPPINGS):
                raise ValueError(
                    f"space: {key} is not a key of this experiment's config (task "
                    f"{config.task}); valid keys: {', '.join(sorted(keys))}"
                )
        if "seed" in self.keys:
            raise ValueError(
                "space: seed is not a hyperparameter (choosing the best seed is selection on "
                "noise): train several with --seeds K instead"
            )
        overlap = sorted(set(fixed_keys) & set(self.keys))
        if overlap:
            raise ValueError(f"space: {', '.join(overlap)} is both fixed and searched")
        for assignment in self.corners():
            try:
                apply_overrides(config, self.overrides(assignment))
            except ValueError as error:
                shown = " ".join(override(k, v) for k, v in assignment.items())
                raise ValueError(f"space: {shown}: {error}") from None


def _number(key: str, field: str, value, kind: str):
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        with contextlib.suppress(ValueError):  # not a number: refused just below
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"space: {key}.{field} must be a number, got {value!r}")
    if isinstance(value, int) and abs(value) > 2**53:
        raise ValueError(f"space: {key}.{field} is too large for a config value, got {value}")
    if not math.isfinite(value):
        raise ValueError(f"space: {key}.{field} must be finite, got {value!r}")
    if kind == "int":
        if value != int(value):
            raise ValueError(f"space: {key}.{field} of an int key must be an integer, got {value}")
        return int(value)
    return float(value)


def _param(key: str, entry, params: dict) -> Param:
    if not isinstance(entry, dict):
        raise ValueError(
            f"space: {key} must be a mapping with kind: float | int | categorical, got {entry!r}"
        )
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"space: {key}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(entry) - _FIELDS[kind])
    if unknown:
        raise ValueError(
            f"space: {key} ({kind}) has unknown field(s) {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(_FIELDS[kind]))}"
        )
    when = _conditions(key, entry.get("when"), params)
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"space: {key}.choices must be a non-empty list, got {choices!r}")
        for choice in choices:
            if not (choice is None or isinstance(choice, str | int | float | bool)):
                raise ValueError(
                    f"space: {key}.choices may hold strings, numbers, booleans and null, got "
                    f"{choice!r}"
                )
        if len({override(key, c) for c in choices}) != len(choices):
            raise ValueError(f"space: {key}.choices repeats a value (as an override): {choices}")
        return Param(key, kind, choices=tuple(choices), when=when)
    for field in ("low", "high"):
        if field not in entry:
            raise ValueError(f"space: {key} ({kind}) needs {field}")
    low, high = (_number(key, f, entry[f], kind) for f in ("low", "high"))
    if low > high:
        raise ValueError(f"space: {key} has low {low} > high {high}")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"space: {key}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ValueError(f"space: {key} is a log range, so low must be > 0, got {low}")
    step = None
    if "step" in entry:
        step = _number(key, "step", entry["step"], "int")
        if step <= 0:
            raise ValueError(f"space: {key}.step must be a positive integer, got {step}")
        if log and step != 1:
            raise ValueError(f"space: {key} cannot be both a log range and have step {step}")
        if (high - low) % step:
            raise ValueError(
                f"space: {key}: high - low ({high} - {low}) is not a multiple of step {step}"
            )
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def _conditions(key: str, when, params: dict) -> tuple:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise ValueError(
            f"space: {key}.when must map categorical keys to a value or a list, got {when!r}"
        )
    out = []
    for other, values in when.items():
        condition = params.get(other)
        if condition is None or condition.kind != "categorical":
            raise ValueError(
                f"space: {key}.when names {other}, which must be a categorical key of the "
                "space listed before it"
            )
        values = values if isinstance(values, list) else [values]
        missing = [v for v in values if v not in condition.choices]
        if missing or not values:
            raise ValueError(
                f"space: {key}.when: {missing or values} not among the choices of {other} "
                f"{list(condition.choices)}"
            )
        out.append((other, tuple(values)))
    return tuple(out)


def parse_space(raw) -> Space:
    """A Space from the YAML's contents (a mapping); ValueErrors name what is wrong."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError("space: the file must hold a mapping of dotted config keys")
    balance = raw.get("balance") if "space" in raw else None
    if set(raw) <= {"space", "fixed", "balance"} and "space" in raw:
        entries, fixed = raw.get("space"), raw.get("fixed")
        fixed = {} if fixed is None else fixed
        if not isinstance(entries, dict) or not entries:
            raise ValueError("space: `space:` must map dotted config keys to their ranges")
        if not isinstance(fixed, dict):
            raise ValueError("space: `fixed:` must map dotted config keys to values")
    else:
        entries, fixed = raw, {}
        if {"space", "fixed", "balance"} & set(raw):
            extra = sorted(set(raw) - {"space", "fixed", "balance"})
            raise ValueError(
                "space: besides space:, fixed: and balance:, the file has "
                f"{', '.join(extra) or 'no space:'} at its top level; put the keys under space:"
            )
    params: dict[str, Param] = {}
    for key, entry in entries.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"space: keys must be dotted config keys, got {key!r}")
        params[key] = _param(key, entry, params)
    if balance is not None:
        param = params.get(balance) if isinstance(balance, str) else None
        if param is None or param.kind != "categorical" or param.when:
            raise ValueError(
                f"space: balance must name an unconditional categorical key of the space, got "
                f"{balance!r}"
            )
    fixed_overrides = tuple(override(k, v) for k, v in fixed.items())
    return Space(tuple(params.values()), fixed_overrides, balance)


def load_space(path) -> Space:
    """Read and parse a space file (a ValueError names the file when it cannot be read)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"--space: no file at {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"--space: {path} is not valid YAML: {reason}") from None
    try:
        return parse_space(raw)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
