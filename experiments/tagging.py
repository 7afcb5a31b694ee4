"""Sequence tagging, many-to-many synced: each character of Python source gets its token
class (name, keyword, operator, number, string, comment, space), read off ``tokenize``.

    seqlab run tagging                                    # 35 s on a 2-core CPU
    seqlab run tagging data.source=conll data.path=train.conll

The default data is the Python standard library's own source (shipped with Python).
A bidirectional layer sees the closing quote of a string before tagging its start.
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import TaggingData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="tagging",
        model=ModelConfig(cell="gru", hidden_size=64, bidirectional=True, embed_size=16),
        data=TaggingData(seq_len=80),
        train=TrainConfig(steps=1000, batch_size=32, lr=3e-3, log_every=100),
    )
