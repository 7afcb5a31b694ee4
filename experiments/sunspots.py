"""Forecast next year's sunspot number (statsmodels, 1700-2008) from the last 24 years.

    seqlab run sunspots                                   # 16 s on a 2-core CPU (stops early)
    seqlab run sunspots data.augment_jitter=0.05 data.augment_scale=0.1

Needs statsmodels (pip install 'seqlab[tasks]'). The report prints the naive forecast
(repeat the last value) beside the model; MSE in units of the series' variance.
"""

from seqlab.experiments import CheckpointConfig, ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import ForecastData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="forecast",
        model=ModelConfig(cell="lstm", hidden_size=32, dropout=0.0),
        data=ForecastData(series="sunspots", seq_len=24, horizon=1),
        train=TrainConfig(
            steps=1500, batch_size=32, lr=3e-3, log_every=50, early_stopping_patience=10
        ),
        checkpoint=CheckpointConfig(every=50),
    )
