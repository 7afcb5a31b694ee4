"""Forecast the next 12 monthly Mauna Loa CO2 means (statsmodels, 1958-2001) from 36.

    seqlab run co2                          # 15 s on a 2-core CPU

Needs statsmodels (pip install 'seqlab[tasks]'). The naive forecast (repeat the last
month) misses the seasonal cycle; the model should beat it.
"""

from seqlab.experiments import CheckpointConfig, ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import ForecastData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="forecast",
        model=ModelConfig(cell="gru", hidden_size=32),
        data=ForecastData(series="co2", seq_len=36, horizon=12),
        train=TrainConfig(steps=1500, batch_size=32, lr=3e-3, log_every=50),
        checkpoint=CheckpointConfig(every=50),
    )
