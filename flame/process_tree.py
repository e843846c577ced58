"""Process trees of ``torchrun`` launches: list a launcher's descendants, kill the whole tree; and the
workers' side: die with the launcher, stop on a signal without a traceback, report a one-line error.

torchrun starts each rank in a session of its own, so signalling the launcher's process group
leaves the ranks running; these helpers walk ``/proc`` (Linux) instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Live descendant process ids of ``pid`` (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_tree(proc: subprocess.Popen, wait_s: float = 60.0) -> None:
    """SIGKILL ``proc`` (started in a session of its own) and every descendant's process group; wait until gone.

    torchrun starts each rank in a session of its own, so killing the launcher's group alone would
    leave the ranks running: the descendants are listed first, then every group is killed.
    """
    pids = [proc.pid, *descendants(proc.pid)]
    groups = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            groups.add(os.getpgid(pid))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for pid in pids:  # a process that left its group (setpgid) is still killed
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + wait_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


# ----------------------------------------------------------------------------- the worker side

LAUNCHER_PID = "FLAME_LAUNCHER_PID"
"""Set by ``python -m flame.launch --run`` (what ``train.sh`` starts torchrun with): its pid, the workers' parent."""

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``).

    ``parent`` (default ``$FLAME_LAUNCHER_PID``) is the expected parent: if it is already gone (it
    died before the call), ``sig`` is sent now. Returns False where the call is not available (not
    Linux): there the process outlives a killed launcher.
    """
    expected = str(parent) if parent is not None else os.environ.get(LAUNCHER_PID)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if expected and expected.isdigit() and os.getppid() != int(expected):
        os.kill(os.getpid(), sig)  # the launcher died before prctl: it will never signal us
    return True


class Stopped(BaseException):  # noqa: N818 - like KeyboardInterrupt: not an error, not caught by `except Exception`
    """Raised in the main thread when SIGINT / SIGTERM / SIGHUP arrives (:func:`stop_on_signals`)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(self.signum)  # picklable: DCP gathers a rank's exception to the others

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


_RECEIVED: Stopped | None = None


def stop_inside(err: BaseException) -> Stopped | KeyboardInterrupt | None:
    """The :class:`Stopped` (or KeyboardInterrupt) ``err`` is or wraps, or the stop signal this process got.

    DCP catches every exception of a collective save or load, a signal's included, and raises a
    ``CheckpointException`` whose ``failures`` hold each rank's ``(exception, traceback)``. Once a
    stop signal arrived, any error is its consequence (a peer rank that stopped first closed the
    connection of a collective), so it counts as that stop.
    """
    if isinstance(err, Stopped | KeyboardInterrupt):
        return err
    if _RECEIVED is not None:
        return _RECEIVED
    for failure in (getattr(err, "failures", None) or {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, Stopped | KeyboardInterrupt):
            return inner
    return None


def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> None:
    """Turn the first of ``signals`` into :class:`Stopped` in the main thread; later ones are ignored.

    Call from the main thread. The run then unwinds through its ``finally`` blocks (no traceback),
    while a launcher that gives up waiting sends SIGKILL.
    """

    def handler(signum, frame):
        global _RECEIVED
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        _RECEIVED = Stopped(signum)
        raise _RECEIVED

    for sig in signals:
        signal.signal(sig, handler)


def report_to_launcher(message: str) -> None:
    """Write ``message`` where torchrun reads a worker's failure reason (``TORCHELASTIC_ERROR_FILE``).

    ``python -m flame.launch --run`` prints it as the last line of a failed run. No-op outside torchrun.
    """
    import json

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump({"message": message, "timestamp": int(time.time())}, f)
