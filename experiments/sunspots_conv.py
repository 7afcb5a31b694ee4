"""Sunspots through a convolutional front-end: a stride-s Conv1D before the LSTM reads
the 96-year window in 96 / s recurrent steps.

    seqlab run sunspots_conv                                  # stride 2
    seqlab sweep sunspots_conv model.conv.stride=1,2,4 --out runs/sunspots_conv

The sweep's report (``seqlab report runs/sunspots_conv``) puts each stride's eval MSE
beside its training seconds, so the trade between fewer recurrent steps and accuracy is
one table; ``model.frontend=none`` gives the LSTM alone on the same windows. Needs
statsmodels (pip install 'seqlab[tasks]'). MSE in units of the series' variance, beside
the naive forecast (repeat the last value).
"""

from seqlab.experiments import (
    CheckpointConfig,
    ConvConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
)
from seqlab.experiments.tasks import ForecastData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="forecast",
        model=ModelConfig(
            cell="lstm",
            hidden_size=32,
            frontend="conv",
            conv=ConvConfig(channels=[16], kernel_size=5, stride=2),
        ),
        data=ForecastData(series="sunspots", seq_len=96, horizon=1),
        train=TrainConfig(steps=1000, batch_size=32, lr=3e-3, log_every=50),
        checkpoint=CheckpointConfig(every=500),
    )
