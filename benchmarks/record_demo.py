"""``seqlab demo`` recorded: its table and its wall time as a committed result file.

The README's demo table (eval MSE and gradient-norm decay per cell, at initialization and
after training) was typed from a terminal; this runs the same demo (``seqlab.demo.run_demo``)
and writes what it printed as ``demo_<preset>_<backend>_<date>/results.json`` (with the
demo's own ``summary.json``, its table ``summary.md`` and the run's provenance), which
``benchmarks/readme_tables.py`` renders into the README.

    python benchmarks/record_demo.py --preset full   # `seqlab demo` as shipped (~3 min, 2 cores)
    python benchmarks/record_demo.py --preset ci     # a tiny demo (20 steps, T = 10)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import shutil
import sys
import tempfile
import time

import jax
from _common import (  # (also puts the checkout on sys.path)
    preset_parser,
    provenance,
    provenance_markdown,
)

from seqlab.demo import DemoConfig, run_demo  # noqa: E402

PRESETS = {
    "ci": DemoConfig(steps=20, seq_len=10, hidden_size=8, log_every=10),
    "full": DemoConfig(),
}


def main(argv=None) -> int:
    parser = preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args(argv)
    config = PRESETS[args.preset]
    record = provenance()
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        # the demo's "wrote <path>" lines name the scratch folder, which goes away
        echo = lambda line: None if str(line).startswith("wrote ") else print(line)  # noqa: E731
        payload = run_demo(pathlib.Path(scratch) / "demo", config, echo=echo)
        wall = time.perf_counter() - start
        summary_md = (pathlib.Path(scratch) / "demo" / "summary.md").read_text()
        device = jax.devices()[0]
        stem = f"demo_{args.preset}_{device.platform}_{datetime.date.today().isoformat()}"
        out = pathlib.Path(args.out) / stem
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        result = {
            "name": "demo",
            "preset": args.preset,
            "config": dataclasses.asdict(config),
            "wall_seconds": wall,
            "results": payload["results"],
            "provenance": record,
        }
        (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "summary.md").write_text(
            f"# seqlab demo ({args.preset} preset), {wall:.0f} s in all\n\n"
            + summary_md
            + provenance_markdown(record)
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
