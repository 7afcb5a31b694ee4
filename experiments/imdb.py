"""IMDB review sentiment (Maas et al. 2011): many-to-one over word tokens.

    seqlab run imdb data.path=/data/aclImdb                      # embedding inputs
    seqlab run imdb data.path=/data/aclImdb data.input_encoding=one_hot data.vocab_size=2000

Reads the unpacked aclImdb folder (train/ and test/, pos/ and neg/) from a local path:
https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz. Reviews are cut to
200 tokens; the evaluation set is 5000 test reviews.
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import SentimentData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="sentiment",
        model=ModelConfig(cell="lstm", hidden_size=128, embed_size=64),
        data=SentimentData(seq_len=200, vocab_size=10000),
        train=TrainConfig(steps=3000, batch_size=64, lr=1e-3, log_every=100),
    )
