"""Tasks on real data shipped with scikit-learn and statsmodels (``pip install 'seqlab[tasks]'``).

- ``digits``: the 1797 scikit-learn 8x8 digit images read row by row (T = 8, D = 8) or
  pixel by pixel (T = 64, D = 1); many-to-one classification.
- ``forecast``: yearly sunspots (1700-2008) or monthly Mauna Loa CO2 (1958-2001) from
  statsmodels, cut into windows of ``seq_len`` values that predict the next ``horizon``;
  many-to-one regression in units of the training set's standard deviation, beside the
  naive forecast (repeat the last value). With ``data.relative`` (default) every window
  is taken relative to its last value, so the model predicts the change.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from seqlab.experiments._config import DataConfig
from seqlab.experiments.tasks._base import Task, TaskData, register, split_indices, take


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"this task reads data shipped with {module.split('.')[0]}, which is not installed: "
            "pip install 'seqlab[tasks]'"
        ) from None


@dataclasses.dataclass
class DigitsData(DataConfig):
    seq_len: int = 8  # 8: rows (D = 8); 64: pixels (D = 1)
    eval_fraction: float = 0.2


def load_digits(config) -> TaskData:
    data = config.data
    if data.seq_len not in (8, 64):
        raise ValueError(
            f"data.seq_len must be 8 (row by row) or 64 (pixel by pixel), got {data.seq_len}"
        )
    digits = _require("sklearn.datasets").load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (N, 8, 8) in [0, 1]
    inputs = images.reshape(len(images), data.seq_len, 64 // data.seq_len)
    arrays = {
        "inputs": inputs,
        "lengths": np.full(len(images), data.seq_len, np.int32),
        "targets": digits.target.astype(np.int32),
    }
    train_idx, eval_idx = split_indices(len(images), data, eval_fraction=data.eval_fraction)
    train, evaluation = take(arrays, train_idx), take(arrays, eval_idx)
    majority = np.bincount(train["targets"], minlength=10).argmax()
    return TaskData(
        info={
            "kind": "many_to_one",
            "objective": "xent",
            "input_size": inputs.shape[-1],
            "output_size": 10,
            "labels": [str(i) for i in range(10)],
            "baselines": {"eval/accuracy": float(np.mean(evaluation["targets"] == majority))},
            "num_train": len(train_idx),
        },
        eval=evaluation,
        train=train,
    )


register(
    Task(
        "digits",
        "scikit-learn digits read row by row or pixel by pixel (many-to-one classification)",
        DigitsData,
        load_digits,
        main_metric="eval/accuracy",
        mode="max",
    )
)


@dataclasses.dataclass
class ForecastData(DataConfig):
    series: str = "sunspots"  # sunspots (yearly) | co2 (monthly means)
    seq_len: int = 24  # window length
    horizon: int = 1  # values predicted after each window
    eval_fraction: float = 0.2  # the last windows in time
    # Inputs and targets relative to the window's last value: the model predicts the change
    # (the naive forecast predicts 0), so a trend beyond the training range stays in range.
    relative: bool = True


def load_series(name: str) -> np.ndarray:
    """The raw series as float64: yearly sunspot numbers, or monthly mean CO2 (ppm;
    statsmodels' weekly record averaged by month, gaps interpolated)."""
    datasets = _require("statsmodels.datasets")
    if name == "sunspots":
        return datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)
    if name == "co2":
        weekly = datasets.co2.load_pandas().data["co2"]
        monthly = weekly.resample("MS").mean().interpolate()
        return monthly.to_numpy(np.float64)
    raise ValueError(f"data.series must be sunspots or co2, got {name!r}")


def _augment(jitter: float, scale: float):
    """Series augmentation (Um et al. 2017): additive Gaussian noise on the inputs
    ("jittering") and one random amplitude factor per window, applied to the inputs and
    the targets alike (the series is standardized, so scaling keeps the level at 0)."""

    def augment(key, batch):
        k_noise, k_scale = jax.random.split(key)
        inputs, targets = batch["inputs"], batch["targets"]
        factor = 1.0 + scale * jax.random.normal(k_scale, (inputs.shape[0], 1), inputs.dtype)
        inputs = inputs * factor[:, :, None]
        noise = jitter * jax.random.normal(k_noise, inputs.shape, inputs.dtype)
        return {**batch, "inputs": inputs + noise, "targets": targets * factor}

    return augment


def load_forecast(config) -> TaskData:
    data = config.data
    series = load_series(data.series)
    window, horizon = data.seq_len, data.horizon
    if horizon < 1:
        raise ValueError(f"data.horizon must be >= 1, got {horizon}")
    count = len(series) - window - horizon + 1
    if count < 10:
        raise ValueError(
            f"the {data.series} series has {len(series)} values: too few for windows of "
            f"{window} + {horizon}"
        )
    starts = np.arange(count)
    # Chronological split (contiguous folds for k-fold): no future values leak into training.
    train_idx, eval_idx = split_indices(
        count, data, eval_fraction=data.eval_fraction, shuffle=False
    )
    last_train_value = starts[train_idx].max() + window + horizon
    mean, std = series[:last_train_value].mean(), series[:last_train_value].std()
    normalized = ((series - mean) / std).astype(np.float32)
    offsets = np.arange(window + horizon)
    windows = normalized[starts[:, None] + offsets[None, :]]
    if data.relative:
        windows = windows - windows[:, window - 1 : window]
    arrays = {
        "inputs": windows[:, :window, None],
        "lengths": np.full(count, window, np.int32),
        "targets": windows[:, window:],
    }
    train, evaluation = take(arrays, train_idx), take(arrays, eval_idx)
    naive = np.repeat(evaluation["inputs"][:, -1, :], horizon, axis=1)
    naive_mse = float(np.mean((naive - evaluation["targets"]) ** 2))
    augment = None
    if data.augment_jitter or data.augment_scale:
        augment = _augment(data.augment_jitter, data.augment_scale)
    return TaskData(
        info={
            "kind": "many_to_one",
            "objective": "mse",
            "input_size": 1,
            "output_size": horizon,
            "baselines": {"eval/mse": naive_mse},
            "baseline_name": "naive forecast (repeat the last value)",
            "relative": bool(data.relative),
            "series_mean": float(mean),
            "series_std": float(std),
            "num_train": len(train_idx),
        },
        eval=evaluation,
        train=train,
        augment=augment,
    )


register(
    Task(
        "forecast",
        "forecast statsmodels' sunspots or CO2 series from a window (many-to-one regression)",
        ForecastData,
        load_forecast,
        main_metric="eval/mse",
    )
)
