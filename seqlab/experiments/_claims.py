"""Claims on the points of a sweep that several workers share through one folder.

A worker claims a point before it trains it by creating ``claims/<point>@<generation>``
with ``O_CREAT | O_EXCL``, which exactly one creator wins on a local disk and on NFS v3+
alike. While it trains, a background thread touches the file every ``heartbeat``
seconds. The rule for taking a claim over:

- the newest generation of a point's claims holds it;
- a claim is dead when its file has not been touched for ``stale_after`` seconds (time
  read from the shared filesystem itself, so the hosts' clocks need not agree), or at
  once when it names this host and a process id that no longer runs (a worker restarted
  on the same machine);
- a dead claim is taken over by creating the next generation, again with ``O_EXCL``, so
  two workers that both saw it dead cannot both win;
- a worker whose claim was taken over (it was slow, not dead) leaves the point to the new
  holder without writing into it again: the training loop calls ``Claim.check`` before
  every write to the point's folder (config, metrics, checkpoints, summary, plots) and
  before a checkpoint commits, and ``ClaimLost`` ends the point (the sweep says so in one
  line). The heartbeat notices too, but only marks the claim lost: an interrupt could
  land inside orbax's save and leave it half done.

A worker that finishes a point removes its claims; the point's ``summary.json`` says it
is done.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import threading
import time
import uuid

CLAIMS = "claims"
STALE_AFTER = 300.0  # seconds without a heartbeat before a claim counts as dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_files(directory: pathlib.Path, name: str) -> list[tuple[int, pathlib.Path]]:
    """(generation, path) of the claims of point ``name`` in ``directory``, oldest first."""
    found = []
    for path in pathlib.Path(directory).glob(f"{name}@*"):
        generation = path.name.rpartition("@")[2]
        if generation.isdigit():
            found.append((int(generation), path))
    return sorted(found)


def read_holder(directory: pathlib.Path, name: str) -> dict | None:
    """What the newest claim of point ``name`` says about its worker ({} while it is being
    written or was just released; None when the point has no claim)."""
    files = claim_files(directory, name)
    if not files:
        return None
    try:
        return json.loads(files[-1][1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class ClaimLost(Exception):
    """Another worker took over the point this worker was training (``Claim.check``)."""


class Claim:
    """A held claim: heartbeats until ``release``; ``lost`` when another worker took it."""

    def __init__(self, claims: Claims, name: str, generation: int, path: pathlib.Path):
        self.claims, self.name, self.generation, self.path = claims, name, generation, path
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim {name}", daemon=True)
        self._thread.start()

    def _taken_over(self) -> bool:
        """Whether a newer generation holds the point, or this claim's file is gone."""
        newer = any(g > self.generation for g, _ in self.claims.files(self.name))
        return newer or not self.path.exists()

    def _beat(self) -> None:
        while not self._stop.wait(self.claims.heartbeat):
            if self.lost or self._taken_over():
                self.lost = True  # the training loop stops at its next check()
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.lost = True
                return

    def check(self) -> None:
        """Raise ``ClaimLost`` when another worker has taken the point over. Reads the
        claims folder (not only the heartbeat's verdict): a worker frozen past the stale
        limit and woken again runs this before its heartbeat thread has looked."""
        if not self.lost and self._taken_over():
            self.lost = True
        if self.lost:
            raise ClaimLost(f"point {self.name} was taken over by another worker")

    def release(self) -> None:
        """Stop the heartbeat; remove the point's claims unless another worker holds it."""
        self._stop.set()
        self._thread.join()
        if self.lost:
            return
        for generation, path in self.claims.files(self.name):
            if generation <= self.generation:
                path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


class Claims:
    """The ``claims/`` folder of a sweep, seen by the worker ``worker`` (a label)."""

    def __init__(self, out_dir, worker: str, *, stale_after: float = STALE_AFTER):
        self.directory = pathlib.Path(out_dir) / CLAIMS
        self.directory.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self.stale_after = float(stale_after)
        self.heartbeat = min(30.0, self.stale_after / 4)
        self.host = socket.gethostname()

    def files(self, name: str) -> list[tuple[int, pathlib.Path]]:
        """(generation, path) of the point's claims, oldest first."""
        return claim_files(self.directory, name)

    def _now(self) -> float:
        """The shared filesystem's clock: the modification time of a file touched now."""
        probe = self.directory / f".clock-{self.host}-{os.getpid()}"
        try:
            probe.touch()
            os.utime(probe)
            return probe.stat().st_mtime
        finally:
            probe.unlink(missing_ok=True)

    def holder(self, name: str) -> dict | None:
        """What the newest claim of ``name`` says about its worker (None: unclaimed)."""
        return read_holder(self.directory, name)

    def _dead(self, path: pathlib.Path, info: dict) -> bool:
        if info.get("host") == self.host and isinstance(info.get("pid"), int):
            if not _alive(info["pid"]):
                return True
        try:
            age = self._now() - path.stat().st_mtime
        except FileNotFoundError:
            return False  # released meanwhile: not ours to take over this round
        return age > self.stale_after

    def try_claim(self, name: str) -> Claim | None:
        """Claim ``name``; None when a live worker holds it (or won a race for it)."""
        files = self.files(name)
        generation = 0
        if files:
            newest, path = files[-1]
            if not self._dead(path, self.holder(name) or {}):
                return None
            generation = newest + 1
        path = self.directory / f"{name}@{generation}"
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        info = {
            "worker": self.worker,
            "host": self.host,
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "claimed_at": time.time(),
        }
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(json.dumps(info) + "\n")
            file.flush()
            os.fsync(file.fileno())
        return Claim(self, name, generation, path)
