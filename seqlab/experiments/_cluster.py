"""Sweep workers beyond one process: SLURM arrays through submitit, and one worker per
group of local devices (``--devices-per-point``).

Both start ordinary sweep workers (``seqlab sweep ... --worker I --num-workers N``) that
share the sweep folder through its claims; nothing here trains or schedules points.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile

CLUSTERS = ("slurm", "local")


def worker_from_environment(environ=None) -> tuple[int, int] | None:
    """(worker, num_workers) of a SLURM array task, or None outside one.

    ``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN`` (0 when unset) gives the worker,
    ``SLURM_ARRAY_TASK_COUNT`` the count; the worker is taken modulo the count, since the
    index only decides which points a worker tries first (``--array=1,4,9`` still works).
    """
    environ = os.environ if environ is None else environ
    task, count = environ.get("SLURM_ARRAY_TASK_ID"), environ.get("SLURM_ARRAY_TASK_COUNT")
    if task is None or count is None:
        return None
    try:
        task, count, first = int(task), int(count), int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
    except ValueError:
        raise ValueError(
            "SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT and SLURM_ARRAY_TASK_MIN must be "
            f"integers, got {task!r}, {count!r}, {environ.get('SLURM_ARRAY_TASK_MIN')!r}"
        ) from None
    if count < 1:
        raise ValueError(f"SLURM_ARRAY_TASK_COUNT must be >= 1, got {count}")
    return (task - first) % count, count


def check_submission(*, cluster: str, options: dict, count: int) -> None:
    """Everything ``submit`` can refuse before it submits (submitit missing, a machine
    without SLURM's commands, an option submitit does not take), as a ValueError, with
    nothing written where the jobs will go: the executor is tried on a scratch folder
    (submitit's local executor makes its folder as soon as it exists)."""
    with tempfile.TemporaryDirectory(prefix="seqlab-submit-") as scratch:
        _executor(
            pathlib.Path(scratch), cluster=cluster, options=options, name="check", count=count
        )


def submit(
    job,
    argvs: list[list[str]],
    folder: pathlib.Path,
    *,
    cluster: str,
    options: dict,
    name: str,
):
    """Submit ``job(argv)`` for every ``argvs`` entry as a submitit job array; returns the
    jobs (``job`` must be importable: a module-level function, pickled by reference).

    ``options`` go to ``submitit.AutoExecutor.update_parameters`` (``timeout_min``,
    ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``slurm_partition``, any other
    ``slurm_*``); submitit writes each job's logs under ``folder``. ``check_submission``
    finds the same mistakes without writing anything.
    """
    executor = _executor(folder, cluster=cluster, options=options, name=name, count=len(argvs))
    try:
        return executor.map_array(job, argvs)
    except (RuntimeError, subprocess.CalledProcessError) as error:  # sbatch said no
        reason = " ".join(str(error).split())[:300]
        raise ValueError(f"--submit {cluster}: the submission failed: {reason}") from None


def _executor(folder: pathlib.Path, *, cluster: str, options: dict, name: str, count: int):
    if cluster not in CLUSTERS:
        raise ValueError(f"--submit must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    try:
        import submitit
    except ImportError:
        raise ValueError(
            "--submit needs submitit, which is not installed: pip install 'seqlab[cluster]'"
        ) from None
    try:
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    except RuntimeError as error:  # no srun / sbatch here
        raise ValueError(
            f"--submit {cluster}: {error} (submit from a machine with SLURM's commands, or "
            "run --worker I --num-workers N by hand)"
        ) from None
    parameters = {"name": name, "slurm_array_parallelism": count, **options}
    if cluster == "local":  # the local executor knows none of SLURM's own options
        parameters = {k: v for k, v in parameters.items() if not k.startswith("slurm_")}
    try:
        executor.update_parameters(**parameters)
    # (an unknown option is a NameError, a value of the wrong type an AssertionError)
    except (ValueError, TypeError, NameError, AssertionError) as error:
        reason = " ".join(str(error).split())[:300]
        raise ValueError(f"submitit refused the job options: {reason}") from None
    return executor


def probe_devices() -> tuple[str, int]:
    """(platform, count) of this host's devices, asked of a fresh process so that this one
    never initializes (and holds memory on) the accelerators its workers will use."""
    code = "import jax; print(jax.default_backend(), jax.local_device_count())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise ValueError(f"could not list the devices: {result.stderr.strip()[-500:]}")
    platform, count = result.stdout.split()[-2:]
    return platform, int(count)


_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=\d+")


def device_environments(platform: str, count: int, per_point: int, environ=None) -> list[dict]:
    """One environment per local worker, each seeing ``per_point`` of the ``count`` devices:
    ``CUDA_VISIBLE_DEVICES`` (and ``HIP_VISIBLE_DEVICES``) on GPUs, a forced device count
    on the CPU (there the devices are slices of one host)."""
    environ = dict(os.environ if environ is None else environ)
    if per_point < 1:
        raise ValueError(f"--devices-per-point must be >= 1, got {per_point}")
    if per_point > count:
        raise ValueError(
            f"--devices-per-point {per_point} is more than the {count} {platform} device(s) "
            "of this host"
        )
    workers = count // per_point
    environments = []
    for worker in range(workers):
        env = dict(environ)
        ids = list(range(worker * per_point, (worker + 1) * per_point))
        if platform == "gpu":
            for variable in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
                visible = environ.get(variable)
                base = visible.split(",") if visible else [str(i) for i in range(count)]
                env[variable] = ",".join(base[i] for i in ids)
        elif platform == "cpu":
            flags = _DEVICE_COUNT.sub("", environ.get("XLA_FLAGS", "")).strip()
            env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={per_point}"
        else:
            raise ValueError(
                f"--devices-per-point supports GPUs and the CPU, not {platform}; run one "
                "sweep worker per host instead"
            )
        environments.append(env)
    return environments


def run_local_workers(argv: list[str], environments: list[dict], *, first: int, total: int):
    """Start ``seqlab ARGV --worker first+j --num-workers total`` once per environment,
    side by side, and wait for them all; returns the worst exit status."""
    processes = []
    try:
        for j, env in enumerate(environments):
            worker = ["--worker", str(first + j), "--num-workers", str(total)]
            processes.append(
                subprocess.Popen([sys.executable, "-m", "seqlab", *argv, *worker], env=env)
            )
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        raise
    return max(codes, key=lambda code: (code != 0, abs(code)))
