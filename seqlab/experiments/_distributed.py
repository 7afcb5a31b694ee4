"""Several processes as one run: start-up under ``jax.distributed``, process 0 as the
only writer of a run directory, barriers, and a check that every process runs the same.

``SEQLAB_DISTRIBUTED=1`` makes the command line call :func:`initialize` before anything
touches a device. It passes ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID`` to ``jax.distributed.initialize`` (jax 0.10 reads only the first from
the environment itself); with none of the three set, ``initialize()`` detects SLURM or
Open MPI on its own. CPU processes talk through gloo collectives, which this module turns
on. Everything here is a no-op in a single process.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import time

import jax
import numpy as np

ENV = "SEQLAB_DISTRIBUTED"
# How long (seconds) start-up waits for the coordinator and for every process to join.
TIMEOUT_ENV = "SEQLAB_DISTRIBUTED_TIMEOUT"
# Seconds without a heartbeat after which JAX declares a process dead and stops the others.
HEARTBEAT_ENV = "SEQLAB_HEARTBEAT_TIMEOUT"
# Where process 0's coordinator listens (JAX's default: every interface, the port of
# JAX_COORDINATOR_ADDRESS).
BIND_ENV = "JAX_COORDINATOR_BIND_ADDRESS"


def _int_env(environ, name: str, default: int | None = None, minimum: int = 0) -> int | None:
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _host_and_port(name: str, address: str) -> tuple[str, int]:
    """(host, port) of ``address``, ``host:port`` or ``[ipv6]:port``; a ValueError naming
    the variable ``name`` otherwise (JAX itself would fail with an IndexError on process 0,
    or abort the process)."""
    host, sep, port = address.rpartition(":")
    expected = f"{name} must be host:port (or [ipv6]:port) with a port in 1..65535"
    if not (sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{expected}, got {address!r}")
    if any(character in host for character in ":[]"):
        if not (host.startswith("[") and host.endswith("]") and _is_ipv6(host[1:-1])):
            raise ValueError(f"{expected}, got {address!r} (an IPv6 address goes in brackets)")
        host = host[1:-1]
    elif any(character.isspace() for character in host):
        raise ValueError(f"{expected}, got {address!r}")
    return host, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Connect to the coordinator's port until it answers; a ValueError after ``timeout``
    seconds (JAX itself would abort the process without a Python exception)."""
    host, port = _host_and_port("JAX_COORDINATOR_ADDRESS", address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ValueError(
                    f"the coordinator at {address} could not be reached within {timeout:g} s "
                    f"({error.strerror or error}); is process 0 running, and is "
                    f"JAX_COORDINATOR_ADDRESS its address? ({TIMEOUT_ENV} sets the wait)"
                ) from None
            time.sleep(0.5)


def initialize(environ=None) -> bool:
    """Start ``jax.distributed`` when ``SEQLAB_DISTRIBUTED=1``; True when it did.

    Reads ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (all
    three, or none for SLURM / Open MPI detection), ``SEQLAB_DISTRIBUTED_TIMEOUT`` (seconds
    to wait for the coordinator and the other processes, default 300) and
    ``SEQLAB_HEARTBEAT_TIMEOUT`` (seconds of silence after which a process counts as dead
    and JAX stops the others, default 100). Every process checks the form of
    ``JAX_COORDINATOR_ADDRESS`` (and of ``JAX_COORDINATOR_BIND_ADDRESS`` when set), and a
    process other than 0 then checks that the coordinator answers, so a malformed or
    unreachable address is a ValueError, not an IndexError or an abort.
    """
    environ = os.environ if environ is None else environ
    if environ.get(ENV, "") in ("", "0"):
        return False
    if environ[ENV] != "1":
        raise ValueError(f"{ENV} must be 1 (or unset), got {environ[ENV]!r}")
    address = environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = _int_env(environ, "JAX_NUM_PROCESSES", minimum=1)
    process_id = _int_env(environ, "JAX_PROCESS_ID")
    given = {
        "JAX_COORDINATOR_ADDRESS": address,
        "JAX_NUM_PROCESSES": num_processes,
        "JAX_PROCESS_ID": process_id,
    }
    missing = [name for name, value in given.items() if value is None]
    if 0 < len(missing) < 3:
        raise ValueError(
            f"{ENV}=1 needs JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID "
            f"together (or none of them, under SLURM or Open MPI); {', '.join(missing)} "
            "not set"
        )
    if process_id is not None and process_id >= num_processes:
        raise ValueError(
            f"JAX_PROCESS_ID must be below JAX_NUM_PROCESSES ({num_processes}), got {process_id}"
        )
    # Every process checks the addresses (process 0 binds, the others connect), so that
    # they all refuse the same mistake instead of some waiting for the others.
    if address is not None:
        _host_and_port("JAX_COORDINATOR_ADDRESS", address)
    if environ.get(BIND_ENV):  # JAX reads it itself: process 0 binds there
        _host_and_port(BIND_ENV, environ[BIND_ENV])
    timeout = _int_env(environ, TIMEOUT_ENV, 300, minimum=1)
    heartbeat = _int_env(environ, HEARTBEAT_ENV, 100, minimum=1)
    # CPU devices of different processes exchange data through gloo (the default is no
    # cross-process collectives at all); GPUs and TPUs ignore the setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if address is not None and process_id != 0:
        _wait_for_coordinator(address, timeout)
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout,
        heartbeat_timeout_seconds=heartbeat,
    )
    return True


def is_writer() -> bool:
    """True in the one process that writes run and sweep files (process 0)."""
    return jax.process_index() == 0


def writer_echo(echo):
    """``echo`` in the writing process, silence in the others."""
    return echo if is_writer() else (lambda *args, **kwargs: None)


def multiprocess() -> bool:
    return jax.process_count() > 1


def barrier(name: str) -> None:
    """Wait until every process reaches ``name`` (nothing in a single process)."""
    if multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"seqlab:{name}")


def check_same(what: str, text: str) -> None:
    """Refuse (ValueError) processes that were given different ``text`` (a config, a
    directory): compares a hash of it across processes."""
    if not multiprocess():
        return
    from jax.experimental import multihost_utils

    digest = hashlib.sha256(text.encode()).digest()[:16]
    mine = np.frombuffer(digest, np.uint32).copy()
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
    differing = [p for p in range(len(every)) if not np.array_equal(every[p], every[0])]
    if differing:
        raise ValueError(
            f"the processes were given different {what}: process(es) "
            f"{', '.join(map(str, differing))} differ from process 0; start every process "
            "with the same command and files"
        )
