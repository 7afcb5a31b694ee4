"""One-to-many: a character model that generates 64 characters from a first one, and
samples text at the end of training (summary.json, report.md).

    seqlab run chars                              # stdlib docstrings: 80 s on 2 cores
    seqlab run chars data.path=my_corpus.txt

Baseline: the unigram character distribution's cross-entropy (printed beside the model).
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import CharsData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="chars",
        model=ModelConfig(cell="lstm", hidden_size=128, embed_size=32),
        data=CharsData(seq_len=64),
        train=TrainConfig(steps=1500, batch_size=64, lr=3e-3, log_every=100),
    )
