"""On / off switches read from the environment at call time."""

from __future__ import annotations

import os


def env_switch(name: str, default: bool) -> bool:
    """The switch ``name`` in the environment: ``"1"`` on, ``"0"`` off, ``default`` when unset; any other value is
    a ``ValueError`` naming the variable and the value."""
    flag = os.environ.get(name, "1" if default else "0")
    if flag not in ("0", "1"):
        raise ValueError(f"{name}={flag!r}: expected 0 or 1")
    return flag == "1"
