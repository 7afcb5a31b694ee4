"""The ``seqlab`` command line: a thin face over ``seqlab.experiments``.

    seqlab run EXPERIMENT [key=value ...] [--out DIR]     train one config
    seqlab sweep EXPERIMENT [key=v1,v2 ...] [--kfold K] [--out DIR]
    seqlab resume DIR                                      continue a run or a sweep
    seqlab report DIR                                      report.md of a run or sweep
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
from seqlab.experiments import _distributed


def _stamp() -> str:
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _quiet_libraries() -> None:
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's info and read-only notices


def _run(args) -> int:
    config = experiments.apply_overrides(experiments.find(args.experiment), args.overrides)
    out = args.out = args.out or f"runs/{config.task}-{_stamp()}"
    experiments.run(config, out)
    if _distributed.is_writer():
        print(f"run directory: {out}")
    return 0


def _sweep(args) -> int:
    config = experiments.find(args.experiment)
    grid = experiments.parse_grid(args.axes)
    shared = {k: v[0] for k, v in grid.items() if len(v) == 1}
    config = experiments.apply_overrides(config, [f"{k}={v}" for k, v in shared.items()])
    axes = {k: v for k, v in grid.items() if len(v) > 1}
    out = args.out = args.out or f"runs/sweep-{config.task}-{_stamp()}"
    experiments.sweep(config, axes, out, kfold=args.kfold)
    return 0


def _resume(args) -> int:
    args.out = args.directory
    if os.path.exists(os.path.join(args.directory, "sweep.json")):
        experiments.resume_sweep(args.directory)
    else:
        experiments.resume(args.directory)
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


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="seqlab",
        description=__doc__.splitlines()[0],
        epilog="Multi-host: set SEQLAB_DISTRIBUTED=1 to call jax.distributed.initialize() first.",
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
    sweep.set_defaults(run=_sweep)

    resume = commands.add_parser(
        "resume", help="continue a run from its latest checkpoint, or an interrupted sweep"
    )
    resume.add_argument("directory")
    resume.set_defaults(run=_resume)

    report = commands.add_parser("report", help="write report.md for a run or a sweep")
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
        if args.command not in ("run", "sweep") or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        (args.overrides if args.command == "run" else args.axes).extend(extra)
    _quiet_libraries()
    try:
        _distributed.initialize()  # SEQLAB_DISTRIBUTED=1: before anything touches a device
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
