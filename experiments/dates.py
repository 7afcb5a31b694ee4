"""Encoder-decoder: human-written dates ("tuesday 24 november 2026", "24.11.2026") to ISO
("2026-11-24"); source and target lengths differ.

    seqlab run dates                        # 50 s on a 2-core CPU

Reports teacher-forced token accuracy and greedy exact-match accuracy.
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import DatesData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="dates",
        model=ModelConfig(cell="gru", hidden_size=64, embed_size=16),
        data=DatesData(),
        train=TrainConfig(steps=1500, batch_size=64, lr=3e-3, log_every=100),
    )
