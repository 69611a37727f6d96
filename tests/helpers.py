"""Helpers shared by the tests (the contract's trajectory and digest helpers live in
:mod:`visrl_envs.testing`, where users' own env tests reach them too)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` still exists and is not a zombie (reaped processes do not exist)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
