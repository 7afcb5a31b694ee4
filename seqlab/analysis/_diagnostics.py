"""Recurrent-matrix spectra, gate saturation, and decay rates fitted over seeds."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import check_rank, require
from seqlab.cells import GRU, LSTM, MGU, RNN, DiagGRU, DiagLSTM, TrainableInitialState
from seqlab.typing import Array, Params

# Largest |φ'| of each activation: Pascanu, Mikolov & Bengio (2013) show that
# ‖∂h_t/∂h_k‖ ≤ (γ σ_max(W_hh))^(t-k) with γ the bound on |φ'|, so σ_max(W_hh) < 1/γ
# guarantees vanishing gradients, and σ_max(W_hh) > 1/γ is necessary for exploding ones.
ACTIVATION_DERIVATIVE_BOUND = {"tanh": 1.0, "relu": 1.0, "identity": 1.0, "sigmoid": 0.25}

GATE_NAMES = {
    LSTM: ("input", "forget", "cell", "output"),
    GRU: ("reset", "update", "candidate"),
    MGU: ("forget", "candidate"),
    DiagGRU: ("reset", "update", "candidate"),
    DiagLSTM: ("input", "forget", "cell", "output"),
    RNN: ("hidden",),
}


def _unwrap(cell, params):
    while isinstance(cell, TrainableInitialState):
        cell, params = cell.cell, params["cell"]
    return cell, params


@dataclasses.dataclass(frozen=True)
class RecurrentSpectrum:
    """Singular values of each gate block of W_hh, largest first.

    ``largest`` is σ_max of the whole recurrent map for an Elman RNN; for the gated cells
    it is σ_max per block (the recurrent matrix of each gate). ``vanishing_guaranteed`` and
    ``exploding_possible`` apply the Pascanu–Mikolov–Bengio criterion to an Elman RNN
    (γ = 1 for tanh and relu); they are None for gated cells, whose state Jacobian is not
    W_hh times a diagonal.
    """

    singular_values: dict[str, np.ndarray]
    largest: dict[str, float]
    vanishing_guaranteed: bool | None
    exploding_possible: bool | None


def recurrent_spectrum(cell, params: Params) -> RecurrentSpectrum:
    """Singular values of W_hh for a built-in cell (blocks in the cell's gate order).

    For ``DiagGRU`` and ``DiagLSTM``, whose recurrent weights are diagonal, the singular
    values of each block are the sorted |tanh(a_hh)|. MinGRU and MinLSTM have no recurrent
    weights: ValueError, as for any cell not listed in ``GATE_NAMES``."""
    cell, params = _unwrap(cell, params)
    kinds = tuple(GATE_NAMES)
    require(
        isinstance(cell, kinds),
        "recurrent_spectrum knows RNN, LSTM, GRU, MGU, DiagGRU and DiagLSTM cells, got "
        f"{type(cell).__name__}",
    )
    names = GATE_NAMES[type(cell)]
    if isinstance(cell, DiagGRU | DiagLSTM):
        diagonals = np.abs(np.asarray(cell.recurrent_diagonals(params), np.float64))
        values = {
            name: np.sort(block)[::-1]
            for name, block in zip(names, np.split(diagonals, len(names)), strict=True)
        }
    else:
        blocks = np.split(np.asarray(params["w_hh"], np.float64), len(names), axis=-1)
        values = {
            name: np.linalg.svd(block, compute_uv=False)
            for name, block in zip(names, blocks, strict=True)
        }
    largest = {name: float(v[0]) for name, v in values.items()}
    vanishing = exploding = None
    if isinstance(cell, RNN):
        bound = ACTIVATION_DERIVATIVE_BOUND[cell.activation]
        vanishing = largest["hidden"] < 1.0 / bound
        exploding = largest["hidden"] > 1.0 / bound
    return RecurrentSpectrum(values, largest, vanishing, exploding)


def gate_saturation(cell, params: Params, xs: Array, *, threshold: float = 0.05) -> dict:
    """Fraction of sigmoid-gate activations within ``threshold`` of 0 or of 1.

    Runs ``cell`` over xs (B, T, D) and, at every step, recomputes its gates with
    ``cell.gate_values``. Saturated gates pass almost no gradient (σ' ≤ threshold).

    Returns ``{gate: {"low": fraction < threshold, "high": fraction > 1 - threshold,
    "mean": mean activation}}`` for the cell's sigmoid gates (LSTM: input, forget, output;
    GRU: reset, update; MGU: forget).
    """
    cell, params = _unwrap(cell, params)
    require(
        callable(getattr(cell, "gate_values", None)),
        f"gate_saturation needs a gated cell (LSTM, GRU, MGU), got {type(cell).__name__}",
    )
    require(0.0 < threshold < 0.5, f"threshold must lie in (0, 0.5), got {threshold}")
    check_rank("xs", xs, 3, "(B, T, D)")
    xs_time_major = jnp.swapaxes(xs, 0, 1)

    def step(carry, x):
        gates, _ = cell.gate_values(params, carry, cell.project_inputs(params, x))
        new_carry, _ = cell.step(params, carry, x)
        return new_carry, gates

    _, gates = jax.lax.scan(step, cell.initial_carry(params, (xs.shape[0],)), xs_time_major)
    return {
        name: {
            "low": float(jnp.mean(values < threshold)),
            "high": float(jnp.mean(values > 1.0 - threshold)),
            "mean": float(jnp.mean(values)),
        }
        for name, values in gates.items()
    }


# Two-sided 95% quantiles of Student's t distribution for 1..30 degrees of freedom.
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DecayFit:
    """Slope of ln‖·‖ against distance, per seed, with a 95% interval over seeds.

    ``rate`` is the mean slope (negative: decay); ``factor = exp(rate)`` is the average
    per-step multiplier of the gradient norm. ``interval`` is rate ± t·s/√n (Student's t,
    n seeds); None with one seed.
    """

    rate: float
    interval: tuple[float, float] | None
    per_seed: np.ndarray

    @property
    def factor(self) -> float:
        return float(np.exp(self.rate))


def fit_decay_rate(norms: np.ndarray, distances: np.ndarray) -> DecayFit:
    """Least-squares slope of ln(norms) against distances, for each seed.

    Args:
      norms: (seeds, N) positive norms (a single curve may be given as (N,)).
      distances: (N,) distances from the loss, e.g. T - 1 - t.
    """
    norms = np.atleast_2d(np.asarray(norms, np.float64))
    distances = np.asarray(distances, np.float64)
    require(
        norms.shape[-1] == distances.shape[0] and distances.ndim == 1,
        f"norms (seeds, N) and distances (N,) must agree, got {norms.shape} and {distances.shape}",
    )
    require(distances.shape[0] >= 2, "fitting a slope needs at least 2 distances")
    require(
        bool(np.all(np.isfinite(norms)) and np.all(norms > 0)),
        "norms must be finite and positive to take logarithms (see first_non_finite)",
    )
    centered = distances - distances.mean()
    slopes = (
        (np.log(norms) - np.log(norms).mean(axis=1, keepdims=True))
        @ centered
        / (centered @ centered)
    )
    rate = float(slopes.mean())
    interval = None
    if len(slopes) > 1:
        quantile = _T_975[min(len(slopes) - 1, len(_T_975)) - 1]
        half = quantile * float(slopes.std(ddof=1)) / np.sqrt(len(slopes))
        interval = (float(rate - half), float(rate + half))
    return DecayFit(rate, interval, slopes)
