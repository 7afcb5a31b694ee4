"""ListOps (Nangia & Bowman 2018): the value of nested MAX/MIN/MED/SM expressions over
digits. A tree cell reads the true parse, a sequence cell the flat tokens; the same
expressions either way (``data.form=auto`` picks by ``model.cell``), so one sweep compares
them:

    seqlab run listops                                         # Child-Sum Tree-LSTM
    seqlab sweep listops model.cell=child_sum_tree_lstm,lstm,tree_gru,gru
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import ListOpsData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="listops",
        model=ModelConfig(cell="child_sum_tree_lstm", hidden_size=64, embed_size=32),
        data=ListOpsData(),
        train=TrainConfig(steps=1500, batch_size=64, lr=3e-3, log_every=100),
    )
