"""The experiments layer: typed configs, tasks, training, sweeps, checkpoints, reports.

    config = seqlab.experiments.find("adding")            # or an ExperimentConfig
    config = seqlab.experiments.apply_overrides(config, ["model.cell=gru"])
    summary = seqlab.experiments.run(config, "runs/gru")   # resume("runs/gru") after a crash
    seqlab.experiments.tune(config, "space.yaml", "runs/study", trials=40)  # Optuna search
    run = seqlab.load_run("runs/gru")                      # .config .metrics .steps .params

The ``seqlab`` command line is a thin face over these functions.
"""

from seqlab.experiments import tasks as tasks
from seqlab.experiments._analyze import analyze_params as analyze_params
from seqlab.experiments._analyze import analyze_run as analyze_run
from seqlab.experiments._analyze import gradient_norms as gradient_norms
from seqlab.experiments._checkpoint import Checkpoints as Checkpoints
from seqlab.experiments._config import REQUIRED_KEYS as REQUIRED_KEYS
from seqlab.experiments._config import CheckpointConfig as CheckpointConfig
from seqlab.experiments._config import ConvConfig as ConvConfig
from seqlab.experiments._config import DataConfig as DataConfig
from seqlab.experiments._config import ExperimentConfig as ExperimentConfig
from seqlab.experiments._config import ModelConfig as ModelConfig
from seqlab.experiments._config import TrainConfig as TrainConfig
from seqlab.experiments._config import apply_overrides as apply_overrides
from seqlab.experiments._config import valid_keys as valid_keys
from seqlab.experiments._load import Run as Run
from seqlab.experiments._load import load_run as load_run
from seqlab.experiments._lookup import available as available
from seqlab.experiments._lookup import default_config as default_config
from seqlab.experiments._lookup import find as find
from seqlab.experiments._model import TaskModel as TaskModel
from seqlab.experiments._model import build_model as build_model
from seqlab.experiments._optim import OPTIMIZERS as OPTIMIZERS
from seqlab.experiments._optim import SCHEDULES as SCHEDULES
from seqlab.experiments._optim import make_optimizer as make_optimizer
from seqlab.experiments._plots import figure as figure
from seqlab.experiments._plots import save_figure as save_figure
from seqlab.experiments._report import write_results as write_results
from seqlab.experiments._run import resume as resume
from seqlab.experiments._run import run as run
from seqlab.experiments._rundir import read_config as read_config
from seqlab.experiments._rundir import write_json as write_json
from seqlab.experiments._rundir import write_text as write_text
from seqlab.experiments._seeds import SEED_BATCHING as SEED_BATCHING
from seqlab.experiments._seeds import resolve_seed_batching as resolve_seed_batching
from seqlab.experiments._space import Space as Space
from seqlab.experiments._space import load_space as load_space
from seqlab.experiments._space import parse_space as parse_space
from seqlab.experiments._study import PRUNERS as PRUNERS
from seqlab.experiments._study import SAMPLERS as SAMPLERS
from seqlab.experiments._study import TUNE as STUDY_FILE
from seqlab.experiments._study import study_summary as study_summary
from seqlab.experiments._sweep import parse_grid as parse_grid
from seqlab.experiments._sweep import prepare_sweep as prepare_sweep
from seqlab.experiments._sweep import resume_sweep as resume_sweep
from seqlab.experiments._sweep import sweep as sweep
from seqlab.experiments._train import Experiment as Experiment
from seqlab.experiments._tune import confirm as confirm
from seqlab.experiments._tune import continue_study as continue_study
from seqlab.experiments._tune import prepare_study as prepare_study
from seqlab.experiments._tune import tune as tune
from seqlab.experiments._tune_report import report as report
from seqlab.experiments._workers import CLUSTERS as CLUSTERS
from seqlab.experiments._workers import STALE_AFTER as STALE_AFTER
from seqlab.experiments._workers import initialize_distributed as initialize_distributed
from seqlab.experiments._workers import is_writer as is_writer
from seqlab.experiments._workers import merge_results as merge_results
from seqlab.experiments._workers import resume_any as resume_any
from seqlab.experiments._workers import run_local_workers as run_local_workers
from seqlab.experiments._workers import submit_study_workers as submit_study_workers
from seqlab.experiments._workers import submit_workers as submit_workers
from seqlab.experiments._workers import submitit_options as submitit_options
from seqlab.experiments._workers import worker_argv as worker_argv
from seqlab.experiments._workers import worker_numbers as worker_numbers

__all__ = [
    "CLUSTERS",
    "OPTIMIZERS",
    "PRUNERS",
    "SAMPLERS",
    "REQUIRED_KEYS",
    "SCHEDULES",
    "SEED_BATCHING",
    "STALE_AFTER",
    "STUDY_FILE",
    "CheckpointConfig",
    "Checkpoints",
    "DataConfig",
    "Experiment",
    "ExperimentConfig",
    "ModelConfig",
    "ConvConfig",
    "Run",
    "Space",
    "TaskModel",
    "TrainConfig",
    "analyze_params",
    "analyze_run",
    "apply_overrides",
    "available",
    "build_model",
    "confirm",
    "continue_study",
    "default_config",
    "figure",
    "find",
    "gradient_norms",
    "initialize_distributed",
    "is_writer",
    "load_space",
    "load_run",
    "make_optimizer",
    "merge_results",
    "parse_grid",
    "parse_space",
    "prepare_study",
    "prepare_sweep",
    "read_config",
    "report",
    "resolve_seed_batching",
    "resume",
    "resume_any",
    "resume_sweep",
    "run",
    "run_local_workers",
    "save_figure",
    "study_summary",
    "submit_study_workers",
    "submit_workers",
    "submitit_options",
    "sweep",
    "tasks",
    "tune",
    "valid_keys",
    "worker_argv",
    "worker_numbers",
    "write_json",
    "write_results",
    "write_text",
]
