"""The ``seqlab`` command line: a thin face over library functions.

    seqlab demo [--out DIR]     RNN vs LSTM vs GRU vs MGU on the adding problem

Bad input prints one line and exits with status 2; nothing already saved is overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import sys


def _demo(args: argparse.Namespace) -> int:
    from seqlab.demo import run_demo

    out = args.out or f"runs/demo-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    run_demo(out)
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="seqlab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    demo = commands.add_parser(
        "demo", help="compare RNN, LSTM, GRU and MGU on the adding problem (about 2 minutes)"
    )
    demo.add_argument("--out", help="output folder (default: runs/demo-<time>)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"seqlab {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
