"""The adding problem at T = 1,000 with DiagGRU, trained through the parallel-in-time scan.

    seqlab run adding_parallel                            # ~19 min on a 2-core CPU
    seqlab run adding_parallel model.implementation=xla   # the same run sequentially, ~4 min

(Both times are from one run each on a shared machine, seen once and not recorded in a
result file. Parallel-in-time is an accelerator method: on a CPU the sequential scan is
faster.)

DiagGRU (diagonal recurrent weights, seqlab.cells.DiagGRU) is solved over all 1,000 steps
at once by Newton's method (seqlab.parallel); its training losses follow the sequential
scan's (tests/test_parallel.py checks the first 25 to 1e-4). Baseline MSE 1/6 ≈ 0.167
(predict the mean, where a tanh RNN stays); below 0.01 is solved. The update-gate biases
start at memory timescales from 2 to 1,000 steps (DiagGRU's ``max_timescale``): with the
default zero bias, memory halves every step and nothing reaches the loss from 1,000
steps back (seen once, not recorded in a result file: eval MSE 0.179 after 1,500 steps,
the baseline).
"""

from seqlab.experiments import ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import AddingData


def config() -> ExperimentConfig:
    return ExperimentConfig(
        task="adding",
        model=ModelConfig(
            cell="diag_gru",
            hidden_size=64,
            implementation="parallel",
            cell_options={"max_timescale": 1000.0},  # update-gate memory up to T
        ),
        data=AddingData(seq_len=1000),
        train=TrainConfig(steps=2000, batch_size=64, lr=3e-3, log_every=100),
    )
