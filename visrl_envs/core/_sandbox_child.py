"""Entry point of a sandbox worker process (see :mod:`visrl_envs.core.sandbox`)."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import mmap
import os
import resource
import signal
import sys
from typing import Any

from visrl_envs.core.sandbox import SHARED_BYTES, _read_message, _write_message

_DENIED_EVENTS = (
    "socket.",
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "shutil.",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "webbrowser.open",
    "ftplib.",
    "http.client.connect",
    "smtplib.",
)


def _set_limits(memory: int, files: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    with contextlib.suppress(OSError, AttributeError):  # die with the parent (Linux); best effort elsewhere
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _install_audit_hook() -> None:
    roots = tuple(
        os.path.realpath(p) + os.sep
        for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, *(p for p in sys.path if p)}
        if p and os.path.isdir(p)
    )

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode = args[0], args[1]
            if isinstance(path, int):
                return
            if isinstance(path, bytes):
                path = path.decode(errors="replace")
            if not isinstance(path, str):
                raise PermissionError("sandbox: open of a non-path refused")
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if writing or not os.path.realpath(path).startswith(roots):
                raise PermissionError(f"sandbox: reading {path!r} is not allowed")
        elif event == "urllib.Request":
            if not str(args[0]).startswith("data:"):
                raise PermissionError(f"sandbox: fetching {str(args[0])[:80]!r} is not allowed")
        elif event.startswith(_DENIED_EVENTS):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)


def main() -> None:
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    config = _read_message(read_fd, None)
    shared = None
    if config.get("shared_fd", -1) >= 0:
        shared = mmap.mmap(config["shared_fd"], SHARED_BYTES)
    for module in config["preload"]:  # trusted imports first: they may probe compilers, temp files
        importlib.import_module(module)
    _set_limits(config["memory"], config["files"])
    _install_audit_hook()
    cache: dict[str, Any] = {}
    _write_message(write_fd, ("ready", None))
    while True:
        try:
            function, args = _read_message(read_fd, None)
        except EOFError:
            return
        try:
            fn = cache.get(function)
            if fn is None:
                module, _, name = function.partition(":")
                fn = cache[function] = getattr(importlib.import_module(module), name)
            value = fn(*args)
            blob = value[0] if isinstance(value, tuple) and value and isinstance(value[0], bytes) else value
            if shared is not None and isinstance(blob, bytes) and 65536 < len(blob) <= SHARED_BYTES:
                shared[: len(blob)] = blob
                # ("shared", n): the result is the buffer's first n bytes; ("shared+", (n, rest)): it is
                # the tuple (those bytes, *rest)
                reply: tuple[str, Any] = ("shared", len(blob)) if blob is value else ("shared+", (len(blob), value[1:]))
            else:
                reply = ("ok", value)
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt | SystemExit):
                return
            reply = ("err", (type(err).__name__, str(err)[:2000]))
        try:
            _write_message(write_fd, reply)
        except MemoryError:
            _write_message(write_fd, ("err", ("MemoryError", "result too large")))


if __name__ == "__main__":
    main()
