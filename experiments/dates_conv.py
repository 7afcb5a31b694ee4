"""Dates through a convolutional front-end: the encoder-decoder of ``dates.py`` with a
Conv1D over the embedded characters, so the GRU encoder reads each source in about
1 / stride of its steps (the decoder's context is read at the shortened lengths).

    seqlab run dates_conv                                     # stride 2
    seqlab sweep dates_conv model.conv.stride=1,2,4 --out runs/dates_conv

The sweep's report gives token accuracy and exact match beside training seconds for
each stride; ``model.frontend=none`` gives the encoder-decoder alone.
"""

from seqlab.experiments import ConvConfig, ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import DatesData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="dates",
        model=ModelConfig(
            cell="gru",
            hidden_size=64,
            embed_size=16,
            frontend="conv",
            conv=ConvConfig(channels=[64], kernel_size=5, stride=2),
        ),
        data=DatesData(),
        train=TrainConfig(steps=1500, batch_size=64, lr=3e-3, log_every=100),
    )
