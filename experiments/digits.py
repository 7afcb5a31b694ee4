"""scikit-learn's 8x8 digits read row by row: many-to-one classification on real data.

    seqlab run digits                          # 20 s on a 2-core CPU
    seqlab run digits data.seq_len=64          # pixel by pixel (T = 64, D = 1)
    seqlab sweep digits --kfold 5              # 5-fold cross-validation

Needs scikit-learn (pip install 'seqlab[tasks]'). Majority-class accuracy ≈ 0.10.
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import DigitsData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="digits",
        model=ModelConfig(cell="gru", hidden_size=64),
        data=DigitsData(seq_len=8),
        train=TrainConfig(steps=1500, batch_size=64, lr=3e-3, log_every=100),
    )
