"""Workers of a sweep: numbering, side by side on one host's devices, or submitted as a
job array (submitit), and the merge of what they finished.

The ``seqlab sweep`` command line parses its flags and calls these; so can a script. A
worker is always a ``seqlab sweep ... --worker I --num-workers N`` command line (its
``argv`` here, without the program name): on one host it runs as a subprocess
(``python -m seqlab``), in a submitted job as ``job(argv)``, a function the caller gives
(the command line passes its own ``main``).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Sequence

from seqlab.experiments import _cluster, _distributed
from seqlab.experiments._claims import STALE_AFTER
from seqlab.experiments._report import report, write_results
from seqlab.experiments._run import resume
from seqlab.experiments._rundir import SWEEP
from seqlab.experiments._study import TUNE
from seqlab.experiments._sweep import prepare_sweep, resume_sweep
from seqlab.experiments._tune import continue_study
from seqlab.experiments._tune_report import report_study

CLUSTERS = _cluster.CLUSTERS
initialize_distributed = _distributed.initialize  # SEQLAB_DISTRIBUTED=1: jax.distributed
is_writer = _distributed.is_writer  # whether this process writes files (process 0)


def worker_numbers(
    worker: int | None, num_workers: int | None, *, submit: bool = False
) -> tuple[int, int]:
    """(worker, num_workers): as given, else a SLURM array task's, else one worker.

    With ``submit`` only ``num_workers`` is needed (the submission starts every worker)."""
    if worker is None and num_workers is None:
        return _cluster.worker_from_environment() or (0, 1)
    if num_workers is None or (worker is None and not submit):
        raise ValueError("--worker and --num-workers go together")
    if num_workers < 1:
        raise ValueError(f"--num-workers must be >= 1, got {num_workers}")
    return (worker or 0), num_workers


def worker_argv(
    experiment: str,
    axes: Sequence[str],
    out: str | os.PathLike,
    *,
    kfold: int = 0,
    stale_after: float = STALE_AFTER,
    devices_per_point: int | None = None,
) -> list[str]:
    """The ``seqlab sweep`` command line of one worker, without --worker / --num-workers.
    Paths are made absolute: a job may start in another folder."""
    if experiment.endswith(".py") and os.path.exists(experiment):
        experiment = os.path.abspath(experiment)
    argv = ["sweep", experiment, *axes, "--out", os.path.abspath(out)]
    argv += ["--kfold", str(kfold), "--stale-after", str(stale_after)]
    if devices_per_point is not None:
        argv += ["--devices-per-point", str(devices_per_point)]
    return argv


def resume_any(directory: str | os.PathLike):
    """Continue a study (tune.json), a sweep (sweep.json) or a run from where it stopped."""
    if (pathlib.Path(directory) / TUNE).exists():
        return continue_study(directory)
    if (pathlib.Path(directory) / SWEEP).exists():
        return resume_sweep(directory)
    return resume(directory)


def merge_results(out: str | os.PathLike, echo: Callable = print) -> None:
    """Merge the points the workers finished into results.csv and report.md."""
    echo(f"results: {write_results(out)}")
    report(out)


def run_local_workers(
    argv: list[str],
    out: str | os.PathLike,
    *,
    devices_per_point: int,
    worker: int = 0,
    num_workers: int = 1,
    echo: Callable = print,
) -> int:
    """Run one worker per ``devices_per_point`` devices of this host side by side
    (subprocesses of ``argv``, each seeing its own devices), wait for them and merge what
    they finished. ``worker`` / ``num_workers`` number this host among several. Returns
    the first non-zero exit status of a worker, else 0."""
    platform, count = _cluster.probe_devices()
    environments = _cluster.device_environments(platform, count, devices_per_point)
    local = len(environments)
    echo(f"{local} local worker(s), {devices_per_point} of {count} {platform} device(s) each")
    code = _cluster.run_local_workers(
        argv, environments, first=worker * local, total=num_workers * local
    )
    if (pathlib.Path(out) / SWEEP).exists():
        merge_results(out, echo)
    return code


def submitit_options(
    *,
    time: int | None = None,
    gpus_per_node: int | None = None,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    partition: str | None = None,
    slurm: Sequence[str] = (),
) -> dict:
    """submitit's executor options from the command line's flags; ``slurm`` items are
    ``KEY=VALUE`` for any other ``slurm_KEY`` option (digits become ints)."""
    options = {}
    for key, value in (
        ("timeout_min", time),
        ("gpus_per_node", gpus_per_node),
        ("cpus_per_task", cpus_per_task),
        ("mem_gb", mem_gb),
        ("slurm_partition", partition),
    ):
        if value is not None:
            options[key] = value
    for item in slurm:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm takes KEY=VALUE (a submitit slurm_ option), got {item!r}")
        options[f"slurm_{key.removeprefix('slurm_')}"] = int(value) if value.isdigit() else value
    return options


def submit_workers(
    job: Callable[[list[str]], int],
    config,
    axes: dict,
    out: str | os.PathLike,
    *,
    argv: list[str],
    num_workers: int,
    cluster: str,
    options: dict,
    kfold: int = 0,
    wait: bool = False,
    echo: Callable = print,
) -> int:
    """Check the sweep and write its plan here, then submit ``num_workers`` workers as a
    job array (each runs ``job(argv + ["--worker", I, "--num-workers", N])``).

    On SLURM without ``wait`` it returns once submitted; otherwise (and always on the
    local executor, whose jobs are this process's children) it waits, merges what the
    workers finished, and raises ValueError naming the workers that failed."""
    _cluster.check_submission(cluster=cluster, options=options, count=num_workers)
    prepare_sweep(config, axes, out, kfold=kfold)  # checked, then planned
    return _submit_array(
        job,
        out,
        argv=argv,
        num_workers=num_workers,
        cluster=cluster,
        options=options,
        wait=wait,
        name="seqlab",
        finish=lambda: merge_results(out, echo),
        later="merges the results of the points finished so far",
        echo=echo,
    )


def _submit_array(
    job, out, *, argv, num_workers, cluster, options, wait, name, finish, later, echo
) -> int:
    """Submit the workers as a job array; unless it may return at once (SLURM without
    ``wait``), wait for them, call ``finish`` and raise ValueError naming failed workers."""
    out_path = pathlib.Path(out).absolute()
    jobs = _cluster.submit(
        job,
        [
            argv + ["--worker", str(i), "--num-workers", str(num_workers)]
            for i in range(num_workers)
        ],
        out_path / "submitit",
        cluster=cluster,
        options=options,
        name=f"{name}-{out_path.name}",
    )
    echo(f"submitted {len(jobs)} worker(s): jobs {', '.join(job.job_id for job in jobs)}")
    echo(f"logs: {out_path / 'submitit'}")
    if not wait and cluster == "slurm":
        echo(f"`seqlab report {out}` {later}")
        return 0
    failed = []
    for submitted in jobs:
        try:
            submitted.result()
        except Exception as error:  # noqa: BLE001 - submitit re-raises the job's error
            failed.append(f"job {submitted.job_id}: {str(error).strip().splitlines()[-1][:200]}")
    finish()
    if failed:
        raise ValueError(
            f"{len(failed)} worker(s) failed ({'; '.join(failed)}); logs in {out_path / 'submitit'}"
        )
    return 0


def submit_study_workers(
    job: Callable[[list[str]], int],
    out: str | os.PathLike,
    *,
    argv: list[str],
    num_workers: int,
    cluster: str,
    options: dict,
    wait: bool = False,
    echo: Callable = print,
) -> int:
    """Submit ``num_workers`` workers of the study already prepared in ``out`` (each runs
    ``job(argv + ["--worker", I, "--num-workers", N])``, a ``seqlab tune DIR`` that
    continues the study). On SLURM without ``wait`` it returns once submitted; otherwise
    it waits, writes the study's report, and raises ValueError naming the failed workers."""
    _cluster.check_submission(cluster=cluster, options=options, count=num_workers)
    return _submit_array(
        job,
        out,
        argv=argv,
        num_workers=num_workers,
        cluster=cluster,
        options=options,
        wait=wait,
        name="seqlab-tune",
        finish=lambda: echo(f"report: {report_study(out)}"),
        later="reports the trials finished so far",
        echo=echo,
    )
