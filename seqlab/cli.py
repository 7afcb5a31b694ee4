"""The ``seqlab`` command line: a thin face over ``seqlab.experiments``.

    seqlab run EXPERIMENT [key=value ...] [--out DIR]     train one config
    seqlab sweep EXPERIMENT [key=v1,v2 ...] [--kfold K] [--out DIR]
                 [--worker I --num-workers N] [--devices-per-point K] [--submit slurm]
    seqlab tune EXPERIMENT --space SPACE.yaml --trials N [--out DIR] [...]
                                                           Optuna search with pruning
    seqlab tune DIR [--trials N]                           continue a study (another worker)
    seqlab tune DIR --confirm best --seeds 10              the best trial on fresh seeds
    seqlab resume DIR                                      continue a run, sweep or study
    seqlab report DIR                                      report.md of a run, sweep or study
    seqlab analyze DIR [--step N]                          gradient norms of a checkpoint
    seqlab demo [--out DIR]                                the main job (about 2 minutes)

Bad input prints one line and exits with status 2; nothing already saved is touched.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys

from seqlab import experiments
from seqlab.demo import run_demo


def _stamp() -> str:
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _quiet_libraries() -> None:
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's info and read-only notices


def _run(args) -> int:
    config = experiments.apply_overrides(experiments.find(args.experiment), args.overrides)
    out = args.out = args.out or f"runs/{config.task}-{_stamp()}"
    experiments.run(config, out)
    if experiments.is_writer():
        print(f"run directory: {out}")
    return 0


def _sweep(args) -> int:
    config = experiments.find(args.experiment)
    grid = experiments.parse_grid(args.axes)
    shared = {k: v[0] for k, v in grid.items() if len(v) == 1}
    config = experiments.apply_overrides(config, [f"{k}={v}" for k, v in shared.items()])
    axes = {k: v for k, v in grid.items() if len(v) > 1}
    out = args.out = args.out or f"runs/sweep-{config.task}-{_stamp()}"
    worker, num_workers = experiments.worker_numbers(
        args.worker, args.num_workers, submit=bool(args.submit)
    )
    argv = experiments.worker_argv(
        args.experiment, args.axes, out, kfold=args.kfold, stale_after=args.stale_after
    )
    if args.submit:
        if args.worker is not None:
            raise ValueError("--submit starts every worker itself: drop --worker")
        if args.devices_per_point is not None:
            argv += ["--devices-per-point", str(args.devices_per_point)]
        options = _submitit_options(args)
        return experiments.submit_workers(
            _worker_job,
            config,
            axes,
            out,
            argv=argv,
            num_workers=num_workers,
            cluster=args.submit,
            options=options,
            kfold=args.kfold,
            wait=args.wait,
        )
    if args.devices_per_point is not None:
        return experiments.run_local_workers(
            argv,
            out,
            devices_per_point=args.devices_per_point,
            worker=worker,
            num_workers=num_workers,
        )
    echo = print
    if num_workers > 1:
        echo = lambda *a, **k: print(f"worker {worker}/{num_workers}:", *a, **k)  # noqa: E731
    experiments.sweep(
        config,
        axes,
        out,
        kfold=args.kfold,
        worker=worker,
        num_workers=num_workers,
        stale_after=args.stale_after,
        echo=echo,
    )
    return 0


_TUNE_CHANGES = (
    "trials",
    "sampler",
    "pruner",
    "sampler_seed",
    "prune_warmup",
    "heartbeat_interval",
    "grace_period",
)


def _tune(args) -> int:
    target = args.experiment
    is_study = os.path.isfile(os.path.join(target, experiments.STUDY_FILE))
    worker, num_workers = experiments.worker_numbers(
        args.worker, args.num_workers, submit=bool(args.submit)
    )
    echo = print
    if num_workers > 1:
        echo = lambda *a, **k: print(f"worker {worker}/{num_workers}:", *a, **k)  # noqa: E731
    if args.confirm is not None:
        if not is_study:
            raise ValueError(f"--confirm needs a study directory (with tune.json), got {target}")
        _refuse(
            args,
            "--confirm",
            (
                "space",
                "overrides",
                "submit",
                *_TUNE_CHANGES,
                "metric",
                "direction",
                "study",
                "storage",
                "retry_running",
            ),
        )
        args.out = target
        seeds = 10 if args.seeds is None else args.seeds
        experiments.confirm(target, trial=args.confirm, seeds=seeds, echo=echo)
        return 0
    changes = {k: getattr(args, k) for k in _TUNE_CHANGES}
    if is_study:
        _refuse(
            args,
            "continuing a study",
            ("space", "overrides", "metric", "direction", "seeds", "study", "storage"),
        )
        if args.out and os.path.abspath(args.out) != os.path.abspath(target):
            raise ValueError(f"--out {args.out}: a study directory continues in place ({target})")
        args.out = target
        if args.submit:
            return _submit_tune(args, target, num_workers)
        experiments.continue_study(target, retry_running=args.retry_running, echo=echo, **changes)
        return 0
    if args.space is None or args.trials is None:
        raise ValueError(
            f"{target} is not a study directory, so this starts a new study: it needs "
            "--space SPACE.yaml and --trials N"
        )
    config = experiments.apply_overrides(experiments.find(target), args.overrides)
    args.out = args.out or f"runs/tune-{config.task}-{_stamp()}"
    options = {k: v for k, v in changes.items() if v is not None}
    options.update(
        study=args.study,
        storage=args.storage,
        metric=args.metric or "eval/loss",
        direction=args.direction,
        seeds=1 if args.seeds is None else args.seeds,
    )
    if args.submit:
        experiments.prepare_study(config, args.space, args.out, **options)
        return _submit_tune(args, args.out, num_workers)
    trials = options.pop("trials")
    experiments.tune(
        config,
        args.space,
        args.out,
        trials=trials,
        retry_running=args.retry_running,
        echo=echo,
        **options,
    )
    return 0


def _refuse(args, what: str, names) -> None:
    given = [n for n in names if getattr(args, n, None) not in (None, [], False)]
    if given:
        flags = ", ".join(
            "key=value overrides" if n == "overrides" else "--" + n.replace("_", "-") for n in given
        )
        raise ValueError(f"{what} takes no {flags}")


def _submit_tune(args, out: str, num_workers: int) -> int:
    """Submit ``num_workers`` workers of the study in ``out`` (each continues it)."""
    options = _submitit_options(args)
    argv = ["tune", os.path.abspath(out)]
    return experiments.submit_study_workers(
        _worker_job,
        out,
        argv=argv,
        num_workers=num_workers,
        cluster=args.submit,
        options=options,
        wait=args.wait,
    )


def _submitit_options(args) -> dict:
    return experiments.submitit_options(
        time=args.time,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        partition=args.partition,
        slurm=args.slurm or [],
    )


def _worker_job(argv: list[str]) -> int:
    """What a submitted job runs: this command line with ``argv`` (a worker of a sweep)."""
    code = main(argv)
    if code != 0:
        raise RuntimeError(f"seqlab {' '.join(argv)} exited with status {code}")
    return code


def _resume(args) -> int:
    args.out = args.directory
    experiments.resume_any(args.directory)
    return 0


def _report(args) -> int:
    print(f"wrote {experiments.report(args.directory)}")
    return 0


def _analyze(args) -> int:
    experiments.analyze_run(args.directory, args.step)
    return 0


def _demo(args) -> int:
    run_demo(args.out or f"runs/demo-{_stamp()}")
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_submission(parser, *, wait: str) -> None:
    """The submitit flags of ``sweep`` and ``tune``."""
    cluster = parser.add_argument_group("submission (submitit: pip install 'seqlab[cluster]')")
    cluster.add_argument(
        "--submit", choices=experiments.CLUSTERS, help="submit --num-workers workers as a job array"
    )
    cluster.add_argument("--wait", action="store_true", help=wait)
    cluster.add_argument("--partition", help="SLURM partition")
    cluster.add_argument("--time", type=int, help="time limit per job, minutes")
    cluster.add_argument("--gpus-per-node", type=int)
    cluster.add_argument("--cpus-per-task", type=int)
    cluster.add_argument("--mem-gb", type=float)
    cluster.add_argument(
        "--slurm", action="append", metavar="KEY=VALUE", help="any other submitit slurm_ option"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="seqlab",
        description=__doc__.splitlines()[0],
        epilog="Multi-host: SEQLAB_DISTRIBUTED=1 starts jax.distributed first (with "
        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or SLURM / Open MPI).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    run = commands.add_parser("run", help="train one experiment into a run directory")
    run.add_argument("experiment", help="a name in experiments/ (or a task), or a .py file")
    run.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    run.add_argument("--out", help="run directory (default: runs/<task>-<time>)")
    run.set_defaults(run=_run)

    sweep = commands.add_parser("sweep", help="the cartesian product of key=v1,v2 axes")
    sweep.add_argument("experiment")
    sweep.add_argument("axes", nargs="*", help="key=v1,v2,... (a single value is shared)")
    sweep.add_argument("--kfold", type=int, default=0, help="k-fold cross-validation")
    sweep.add_argument("--out", help="sweep directory (default: runs/sweep-<task>-<time>)")
    workers = sweep.add_argument_group(
        "several workers",
        "workers share the sweep folder (on a filesystem they all see) and claim points "
        "before training them; without the flags, a SLURM array task's "
        "SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT are used",
    )
    workers.add_argument("--worker", type=int, help="this worker's index, 0 .. N-1")
    workers.add_argument("--num-workers", type=int, help="how many workers share the sweep")
    workers.add_argument(
        "--stale-after",
        type=float,
        default=experiments.STALE_AFTER,
        help="seconds without a heartbeat after which another worker takes a point over "
        "(default %(default)g)",
    )
    workers.add_argument(
        "--devices-per-point",
        type=int,
        help="run points side by side on this host, each on K of its devices (one local "
        "worker per K devices)",
    )
    _add_submission(sweep, wait="wait for the jobs and merge")
    sweep.set_defaults(run=_sweep)

    tune = commands.add_parser(
        "tune",
        help="budgeted hyperparameter search (Optuna) with pruning on seqlab's evaluations",
        description="Start a study (EXPERIMENT --space --trials), continue one or join it as "
        "another worker (a study DIR), or re-run its best trial on fresh seeds (DIR --confirm).",
    )
    tune.add_argument("experiment", help="an experiment (as for run), or a study directory")
    tune.add_argument("overrides", nargs="*", help="dotted key=value overrides every trial shares")
    tune.add_argument("--space", help="the search space, a YAML file of dotted config keys")
    tune.add_argument("--trials", type=int, help="the study's budget of trials (all workers)")
    tune.add_argument("--out", help="study directory (default: runs/tune-<task>-<time>)")
    tune.add_argument("--study", help="the study's name in the storage (default: DIR's name)")
    tune.add_argument(
        "--storage",
        help="an Optuna database URL (sqlite:///..., postgresql://...) or the path of a "
        "journal file (default: DIR/study.db)",
    )
    tune.add_argument("--sampler", choices=experiments.SAMPLERS, help="default tpe")
    tune.add_argument("--pruner", choices=experiments.PRUNERS, help="default median")
    tune.add_argument("--metric", help="the metric the study optimizes (default eval/loss)")
    tune.add_argument(
        "--direction",
        choices=("minimize", "maximize"),
        help="default: maximize for accuracies, else minimize",
    )
    tune.add_argument("--seeds", type=int, help="seeds per trial (default 1; 10 with --confirm)")
    tune.add_argument("--sampler-seed", type=int, help="the sampler's seed (default 0)")
    tune.add_argument(
        "--prune-warmup", type=int, help="no pruning before this training step (default 0)"
    )
    tune.add_argument(
        "--confirm",
        metavar="best|N",
        help="re-run trial N (or the best) of the study DIR with --seeds fresh seeds",
    )
    faults = tune.add_argument_group("workers and faults")
    faults.add_argument("--worker", type=int, help="this worker's index (for logs)")
    faults.add_argument("--num-workers", type=int, help="how many workers share the study")
    faults.add_argument(
        "--heartbeat-interval",
        type=float,
        help="seconds between a running trial's heartbeats (default 30)",
    )
    faults.add_argument(
        "--grace-period",
        type=float,
        help="seconds without a heartbeat before a trial is failed and retried "
        "from its checkpoint (default 120)",
    )
    faults.add_argument(
        "--retry-running",
        action="store_true",
        help="fail and retry every trial still marked running (only while no "
        "other worker runs; journal storage has no heartbeat)",
    )
    _add_submission(tune, wait="wait for the jobs, then report")
    tune.set_defaults(run=_tune)

    resume = commands.add_parser(
        "resume", help="continue a run from its latest checkpoint, an interrupted sweep or a study"
    )
    resume.add_argument("directory")
    resume.set_defaults(run=_resume)

    report = commands.add_parser("report", help="write report.md for a run, a sweep or a study")
    report.add_argument("directory")
    report.set_defaults(run=_report)

    analyze = commands.add_parser("analyze", help="gradient norms over time of a checkpoint")
    analyze.add_argument("directory")
    analyze.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    analyze.set_defaults(run=_analyze)

    demo = commands.add_parser(
        "demo", help="gradient-norm decay and an adding sweep over RNN, LSTM and GRU"
    )
    demo.add_argument("--out", help="output folder (default: runs/demo-<time>)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value items after an option (`sweep digits --kfold 5 train.lr=1e-3`)
        if args.command not in ("run", "sweep", "tune") or any(
            item.startswith("-") for item in extra
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        (args.axes if args.command == "sweep" else args.overrides).extend(extra)
    _quiet_libraries()
    try:
        # SEQLAB_DISTRIBUTED=1: jax.distributed, before anything touches a device
        experiments.initialize_distributed()
        return args.run(args)
    except ValueError as error:
        return _fail(args.command, str(error))
    except OSError as error:  # a file or folder that cannot be made, read or written
        where = f": {error.filename}" if error.filename else ""
        return _fail(args.command, f"{error.strerror or error}{where}")
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = f"`seqlab resume {out}` continues" if out else "nothing was saved"
        if args.command in ("report", "analyze"):
            hint = "run the command again"
        elif args.command == "demo":
            hint = "start it again with another --out"
        print(f"seqlab {args.command}: interrupted; {hint}", file=sys.stderr)
        return 130


def _fail(command: str, message: str) -> int:
    """The one-line error of the command line (exit status 2)."""
    print(f"seqlab {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
