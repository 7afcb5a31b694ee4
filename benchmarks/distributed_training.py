"""One training run over several processes against one process with the same devices.

Times the training chunks of ``seqlab.experiments.Experiment`` (after compilation) on the
adding task, LSTM, in two set-ups with the same global devices and batch:

- ``one process``: one process with all D devices; the training program makes each batch;
- ``P processes``: P processes under jax.distributed with D / P devices each; every
  process makes its rows of each chunk's batches on the host and hands them over
  (``jax.make_array_from_process_local_data``), and gradients are summed across processes
  (gloo on the CPU).

It prints seconds per chunk, steps/s and the ratio, and the mean training loss of every
chunk in both set-ups and in one process with one device. The set-ups train the same
model up to float summation order (how the batch is split over devices): the first two
chunks must agree to 1e-4 or the script exits 1. Later chunks may not: once training
leaves the adding task's plateau, rounding differences grow, and one process with 1, 2
or 4 devices drifts apart just as much (printed beside). On the CPU the devices are
slices of one host (``--xla_force_host_platform_device_count``), so the ratio is the
cost of the multi-process machinery itself (gloo collectives over localhost TCP, batches
made on the host), not of a network. No speed target gates: there is no peer to compare
against, only the single-process run.

    python benchmarks/distributed_training.py --preset ci    # T=20, H=16, 2 x 2 vs 1 x 4
    python benchmarks/distributed_training.py --preset cpu   # T=100, H=64, batch 64
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
import time

import _common

PRESETS = {
    "ci": dict(seq_len=20, hidden=16, batch=32, steps=20, repeats=2, devices=4, processes=2),
    "cpu": dict(seq_len=100, hidden=64, batch=64, steps=100, repeats=3, devices=4, processes=2),
}


def worker(preset: dict, result_path: str) -> None:
    """One process of a set-up: compile, time ``repeats`` chunks, write the result (process
    0) as JSON."""
    import jax

    from seqlab.experiments import Experiment, _distributed, apply_overrides, default_config

    _distributed.initialize()
    config = apply_overrides(
        default_config("adding"),
        [
            "model.cell=lstm",
            f"model.hidden_size={preset['hidden']}",
            f"data.seq_len={preset['seq_len']}",
            f"train.batch_size={preset['batch']}",
        ],
    )
    experiment = Experiment.from_config(config)
    state = experiment.init_state()
    steps = preset["steps"]
    state, metrics = experiment.train_chunk(state, 0, steps)  # compile
    jax.block_until_ready(state)
    seconds, losses = [], [float(metrics["train/loss"][0])]
    for repeat in range(preset["repeats"]):
        start = time.perf_counter()
        state, metrics = experiment.train_chunk(state, (repeat + 1) * steps, steps)
        jax.block_until_ready(state)
        seconds.append(time.perf_counter() - start)
        losses.append(float(metrics["train/loss"][0]))
    if jax.process_index() == 0:
        payload = {"seconds": seconds, "losses": losses, "devices": jax.device_count()}
        pathlib.Path(result_path).write_text(json.dumps(payload))


def launch(preset: dict, processes: int, result: pathlib.Path) -> dict:
    """Run the worker as ``processes`` processes sharing ``preset['devices']`` devices."""
    port = _free_port()
    started = []
    for pid in range(processes):
        env = {
            **os.environ,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={preset['devices'] // processes}",
        }
        if processes > 1:
            env.update(
                SEQLAB_DISTRIBUTED="1",
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(pid),
            )
        else:
            env.pop("SEQLAB_DISTRIBUTED", None)
        command = [sys.executable, __file__, "--worker", json.dumps(preset), str(result)]
        started.append(
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
    for process in started:
        _, err = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err.decode()[-3000:]}")
    return json.loads(result.read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]), sys.argv[3])
        return 0
    parser = _common.preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    stem = out / f"distributed_training_{args.preset}_{date}"
    one = launch(preset, 1, stem.with_suffix(".one.tmp"))
    many = launch(preset, preset["processes"], stem.with_suffix(".many.tmp"))
    single = launch({**preset, "devices": 1}, 1, stem.with_suffix(".single.tmp"))
    for path in stem.parent.glob(stem.name + ".*.tmp"):
        path.unlink()
    t_one = sorted(one["seconds"])[len(one["seconds"]) // 2]
    t_many = sorted(many["seconds"])[len(many["seconds"]) // 2]
    difference = max(
        abs(a - b) / abs(a) for a, b in zip(one["losses"][:2], many["losses"][:2], strict=True)
    )
    steps, devices, processes = preset["steps"], preset["devices"], preset["processes"]
    import jax

    lines = [
        f"# distributed_training, preset {args.preset}: cpu "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
        f"jax {jax.__version__}, {date}",
        "",
        f"adding task, LSTM, H={preset['hidden']}, T={preset['seq_len']}, global batch "
        f"{preset['batch']}; {devices} CPU devices in all; {steps} steps per chunk, median of "
        f"{preset['repeats']} chunks after compilation.",
        "",
        "| set-up | seconds per chunk | steps/s | x one process |",
        "|---|---|---|---|",
        f"| 1 process x {devices} devices | {t_one:.3f} | {steps / t_one:.1f} | 1.00 |",
        f"| {processes} processes x {devices // processes} devices | {t_many:.3f} | "
        f"{steps / t_many:.1f} | {t_many / t_one:.2f} |",
        "",
        "Mean training loss of each chunk (the first one compiles):",
        "",
        "| set-up | "
        + " | ".join(f"steps {i * steps}-{(i + 1) * steps - 1}" for i in range(len(one["losses"])))
        + " |",
        "|---|" + "---|" * len(one["losses"]),
    ]
    for name, result in (
        (f"1 process x {devices} devices", one),
        (f"{processes} processes x {devices // processes} devices", many),
        ("1 process x 1 device", single),
    ):
        lines.append(f"| {name} | " + " | ".join(f"{v:.6f}" for v in result["losses"]) + " |")
    lines += [
        "",
        f"Largest relative difference over the first two chunks, {processes} processes "
        f"against one: {difference:.1e} (gate: 1e-4).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    # Taken here, after the workers have finished: it starts JAX's backend in this process
    # (whose device count is then its own, not the workers' forced CPU devices).
    recorded = _common.provenance()
    stem.with_suffix(".md").write_text(text + _common.provenance_markdown(recorded))
    payload = {
        "preset": args.preset,
        **preset,
        "one": one,
        "many": many,
        "one_device": single,
        "jax": jax.__version__,
        "provenance": recorded,
    }
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    if difference > 1e-4:  # the two set-ups must train the same model
        print(f"the set-ups disagree: {difference:.1e} > 1e-4")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
