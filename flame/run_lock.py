"""One live run per dump folder: ``<job.dump_folder>/run.lock``, held by the job's global rank 0.

The lock is per job, not per host: a multi-node job writes one checkpoint folder on a shared file
system, so a second job started from *any* host on the same folder must be refused; a per-host lock
would only see runs of its own host. Rank 0 takes it after the process group exists and every rank
learns the verdict, so a refused job stops on every node with the same one-line error.

The file names the holder (host, pid, the process's start time, when it started). It is stale when:

* its host is this host and that pid is gone, or is another process now (start time differs);
* its host is another host and its heartbeat (the file's mtime, touched every :data:`HEARTBEAT_S`
  seconds by the holder) is older than :data:`STALE_S` seconds: a dead run's lock on another host is
  taken over after that long.

A stale lock is taken over with a warning; a live one is a :class:`flame.config.ConfigError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from flame.config import ConfigError

LOCK_NAME = "run.lock"
HEARTBEAT_S = 20.0
STALE_S = 120.0


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22), None if unknown/gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(info: dict, mtime: float) -> bool:
    """Whether the run described by a lock file's ``info`` (and its ``mtime``) still runs."""
    if info.get("host") != socket.gethostname():
        return time.time() - mtime < STALE_S
    pid = int(info.get("pid", -1))
    if pid <= 0 or not _pid_alive(pid):
        return False
    ticks = info.get("start_ticks")
    return ticks is None or _start_ticks(pid) in (None, ticks)


class RunLock:
    """The lock on ``folder`` (see the module docstring); :meth:`acquire`, then :meth:`release` at the end."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start_ticks": _start_ticks(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": uuid.uuid4().hex,  # this holder, even against another lock of the same process
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[dict, float] | None:
        try:
            return json.loads(Path(self.path).read_text() or "{}"), os.path.getmtime(self.path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}, 0.0  # unreadable (a write cut short): treated as stale

    def acquire(self) -> str | None:
        """Take the lock; returns a warning when a stale lock was taken over. ConfigError if a live run holds it."""
        os.makedirs(self.folder, exist_ok=True)
        warning = None
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                found = self._read()
                if found is None:
                    continue  # released meanwhile
                info, mtime = found
                who = f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
                if holder_alive(info, mtime):
                    raise ConfigError(
                        "job.dump_folder",
                        self.folder,
                        f"a live run holds it ({who}; {self.path}): stop that run or choose another dump_folder",
                    ) from None
                warning = f"Taking over the stale lock {self.path} of a run that is gone ({who})"
                tmp = f"{self.path}.{os.getpid()}"
                Path(tmp).write_text(json.dumps(self.me))
                os.replace(tmp, self.path)
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(self.me))
            if (self._read() or ({}, 0))[0] == self.me:  # two runs taking over at once: one wins
                self._heartbeat()
                return warning
        raise ConfigError("job.dump_folder", self.folder, f"another run is taking {self.path} at the same time")

    def _heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        self._thread = threading.Thread(target=beat, name="flame-run-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        self._stop.set()
        found = self._read()
        if found is not None and found[0] == self.me:
            with contextlib.suppress(OSError):
                os.remove(self.path)
