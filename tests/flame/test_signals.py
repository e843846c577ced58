"""Signals, killed launchers and the dump-folder lock (issue 32, item 2).

Fast checks of the pieces (the lock's verdicts, a worker dying with its launcher), then one
``bash train.sh`` job with 2 CPU ranks: a second job on its dump folder is refused (exit 2, the
lock's one line last); SIGKILL of train.sh takes torchrun and the workers with it; a relaunch
takes the stale lock over with a warning and resumes; SIGTERM then stops it with one line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flame.config import ConfigError
from flame.process_tree import alive, descendants, kill_tree
from flame.run_lock import STALE_S, RunLock
from tests.flame.test_launcher import TRAIN_SH, env_for, tiny_args


def test_run_lock_refuses_a_live_run_and_takes_over_a_stale_one(tmp_path):
    first = RunLock(str(tmp_path))
    assert first.acquire() is None
    held = json.loads((tmp_path / "run.lock").read_text())
    assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
    with pytest.raises(ConfigError, match=rf"job\.dump_folder = .*: a live run holds it \(pid {os.getpid()} on "):
        RunLock(str(tmp_path)).acquire()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run.lock").write_text(json.dumps({**held, "pid": dead.pid}))  # a run that was SIGKILLed
    second = RunLock(str(tmp_path))
    warning = second.acquire()
    assert warning and warning.startswith(f"Taking over the stale lock {tmp_path / 'run.lock'}")
    assert f"pid {dead.pid} on {held['host']}" in warning
    first.release()  # no longer its lock: left alone
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    second.release()
    assert not (tmp_path / "run.lock").exists()


def test_run_lock_of_another_host_is_live_while_its_heartbeat_is_fresh(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"host": "other-node", "pid": 1, "since": "then"}))
    with pytest.raises(ConfigError, match="a live run holds it .pid 1 on other-node since then"):
        RunLock(str(tmp_path)).acquire()
    old = time.time() - STALE_S - 1
    os.utime(lock, (old, old))
    mine = RunLock(str(tmp_path))
    assert "Taking over the stale lock" in mine.acquire()
    mine.release()


def test_a_worker_dies_with_its_launcher(tmp_path):
    """PR_SET_PDEATHSIG: SIGKILL of the launcher (no chance to clean up) still ends its worker."""
    worker = textwrap.dedent("""
        import os, sys, time
        from flame.process_tree import die_with_parent
        assert die_with_parent()
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(120)
    """)
    launcher = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker!r}, sys.argv[1]]); "
        "time.sleep(120)"
    )
    pid_file = tmp_path / "worker.pid"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", launcher, str(pid_file)], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        worker_pid = int(pid_file.read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(worker_pid), "the worker outlived its SIGKILLed launcher"
    finally:
        kill_tree(proc)


def start_train_sh(args: list[str], log: Path, **env) -> subprocess.Popen:
    """``bash train.sh ARGS`` (2 CPU ranks) in a session of its own, stdout+stderr to ``log``."""
    out = open(log, "w")  # noqa: SIM115 - closed when the test ends (the process keeps it)
    return subprocess.Popen(
        ["bash", str(TRAIN_SH), *args], env=env_for(NGPU=2, EXPORT_HF=0, **env), stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def wait_for_step(dump: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = dump / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if lines and json.loads(lines[-1]).get("step", 0) >= step:
            return
        assert proc.poll() is None, f"train.sh ended ({proc.returncode}) before step {step}"
        time.sleep(0.1)
    raise AssertionError(f"step {step} not reached")


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.mark.slow  # about 3 minutes on 2 busy cores; the pieces have the fast tests above
def test_train_sh_killed_refused_taken_over_and_stopped(sample_dir, tmp_path):
    dump = tmp_path / "run"
    args = [*tiny_args(sample_dir, dump, steps=100000), "--checkpoint.keep_latest_k", "0"]
    first = start_train_sh(args, tmp_path / "first.log")
    try:
        wait_for_step(dump, 3, first)
        job = descendants(first.pid)  # flame.launch (torchrun) and the 2 workers
        cmdlines = [Path(f"/proc/{p}/cmdline").read_text() for p in job]
        assert len([c for c in cmdlines if "flame.train" in c and "flame.launch" not in c]) == 2, cmdlines

        # a second job on the same dump folder: refused by the lock, one line last, exit 2
        second = subprocess.run(["bash", str(TRAIN_SH), *args], env=env_for(NGPU=2, EXPORT_HF=0),
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-3000:]
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("flame: config error: job.dump_folder = ") and "a live run holds it (pid " in last
        assert "ChildFailedError" not in second.stderr and "Traceback" not in second.stderr

        # SIGKILL of train.sh alone: torchrun and the workers die with it
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert not wait_gone(job), "processes of the job outlived the SIGKILLed train.sh"
    finally:
        kill_tree(first)

    # the workers got SIGTERM from their dying torchrun and released the lock; a SIGKILLed run leaves it:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (dump / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "then"}))
    # the relaunch takes the stale lock over and resumes; SIGTERM stops it with one line
    saved = sorted(int(p.name.split("-")[1]) for p in (dump / "checkpoint").glob("step-*"))
    third = start_train_sh(args, tmp_path / "third.log")
    try:
        wait_for_step(dump, saved[-1] + 3, third)
        job = descendants(third.pid)
        third.send_signal(signal.SIGTERM)
        assert third.wait(timeout=120) == 128 + signal.SIGTERM
        assert not wait_gone(job), "processes of the job outlived the stopped train.sh"
    finally:
        kill_tree(third)
    text = (tmp_path / "third.log").read_text()
    assert f"Taking over the stale lock {dump / 'run.lock'} of a run that is gone" in text
    assert "Traceback" not in text and "ChildFailedError" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("train.sh: stopped by SIGTERM; the newest complete checkpoint is "), last
    assert not (dump / "run.lock").exists(), "the stopped run releases its lock"
