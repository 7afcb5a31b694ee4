"""The adding problem (Hochreiter & Schmidhuber 1997): many-to-one regression.

    seqlab run adding                       # LSTM, T=100: 50 s on a 2-core CPU
    seqlab sweep adding model.cell=rnn,lstm,gru train.num_seeds=4

Baseline MSE 1/6 ≈ 0.167 (predict the mean); below 0.01 is solved. A tanh RNN stays
at the baseline at T=100 while LSTM and GRU solve it.
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import AddingData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="adding",
        model=ModelConfig(cell="lstm", hidden_size=64),
        data=AddingData(seq_len=100),
        train=TrainConfig(steps=2000, batch_size=64, lr=3e-3, log_every=100),
    )
