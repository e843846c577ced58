"""flame.process_tree: a launcher's whole tree is found and killed, including children in other sessions."""

from __future__ import annotations

import subprocess
import sys
import time

from flame.process_tree import alive, descendants, kill_tree

# A parent whose child starts a session of its own (as torchrun does with its ranks), with a grandchild.
TREE = """
import subprocess, sys, time
inner = ("import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
subprocess.Popen([sys.executable, "-c", inner], start_new_session=True)
time.sleep(60)
"""


def test_kill_tree_reaches_children_in_their_own_sessions():
    proc = subprocess.Popen([sys.executable, "-c", TREE], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        tree = []
        while len(tree) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            tree = descendants(proc.pid)
        assert len(tree) == 2, f"expected a child and a grandchild, found {tree}"
        assert all(alive(p) for p in tree)
        kill_tree(proc, wait_s=10)
        assert proc.returncode is not None
        assert not any(alive(p) for p in tree), "a descendant survived kill_tree"
    finally:
        if proc.poll() is None:
            proc.kill()
