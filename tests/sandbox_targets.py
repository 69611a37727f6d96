"""Functions the sandbox tests run inside a worker (imported there by name)."""

from __future__ import annotations

import ctypes
import os
import socket
import time


def add(a: int, b: int) -> int:
    return a + b


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def allocate(n_bytes: int) -> int:
    return len(bytearray(n_bytes))


def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_file(path: str) -> None:
    with open(path, "w") as f:
        f.write("x")


def connect(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=1)


def segfault() -> None:
    ctypes.string_at(0)


def exit_hard() -> None:
    os._exit(3)


def pid() -> int:
    return os.getpid()
