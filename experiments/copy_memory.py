"""The copy-memory task (Arjovsky et al. 2016): recall 10 symbols after a delay.

    seqlab run copy_memory                          # many-to-many, delay 50: 1 minute
    seqlab run copy_memory data.variant=many_to_one # recall only the first symbol

Baseline cross-entropy 10·log 8 / (T + 20) (blanks, then uniform guesses), 0.297 at T=50.
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import CopyMemoryData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="copy_memory",
        model=ModelConfig(cell="lstm", hidden_size=64),
        data=CopyMemoryData(seq_len=50),
        train=TrainConfig(steps=3000, batch_size=64, lr=3e-3, log_every=100),
    )
