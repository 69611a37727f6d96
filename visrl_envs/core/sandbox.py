"""A persistent, resource-limited worker process for untrusted rendering.

Renderers parse hostile input (agent-written SVG, user files). They run in a separate Python process
that is started once and reused across steps and episodes (a spawn costs 0.3-1.2 s), with:

- an address-space limit (``RLIMIT_AS``), no file writes (``RLIMIT_FSIZE=0``), few descriptors;
- an audit hook that refuses, after start-up, every Python-level ``open`` outside the interpreter's
  and the package's own directories, every socket, subprocess and ``urllib`` request;
- a wall timeout per call: past it the worker is killed (SIGKILL, reaped) and respawned lazily;
- the parent's death kills it (``PR_SET_PDEATHSIG``), so no orphan outlives a crashed trainer.

Why not ``multiprocessing``: its spawn start method re-imports the user's ``__main__`` (a script without
an ``if __name__ == "__main__"`` guard would run again in the worker) and fork is unsafe beside
threads (torch, Playwright). A plain ``subprocess`` with a length-prefixed pickle protocol over two
pipes has neither problem. Only our own worker writes the pickles we load.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct(">Q")
#: How long the parent waits on a call made to hang by :meth:`SandboxWorker.hang` before its timeout
#: path runs (the real limit would make every fault test wait ``timeout_s``).
INJECTED_HANG_WAIT_S = 0.2
_MAX_MESSAGE = 1 << 30
#: Shared buffer for large ``bytes`` results (a rendered image): one pipe round trip instead of
#: several 64 KiB pipe-buffer hand-offs between the two processes.
SHARED_BYTES = 8 << 20


class SandboxError(RuntimeError):
    """The sandbox could not complete a call."""


class SandboxTimeout(SandboxError):
    """The call ran past its wall timeout; the worker was killed."""


class SandboxCrash(SandboxError):
    """The worker died during the call (memory limit, segfault, killed)."""


class SandboxUnavailable(SandboxError):
    """The worker could not be started or answered garbage (an infrastructure failure)."""


class SandboxCallError(SandboxError):
    """The function raised inside the worker; ``kind`` is the exception's type name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one worker process."""

    memory_bytes: int = 1 << 30
    timeout_s: float = 10.0
    open_files: int = 64
    startup_timeout_s: float = 60.0


def _write_message(fd: int, obj: Any) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_message(fd: int, deadline: float | None) -> Any:
    (length,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if length > _MAX_MESSAGE:
        raise EOFError("oversized message")
    return pickle.loads(_read_exact(fd, length, deadline))


class SandboxWorker:
    """One persistent worker process; ``call("pkg.module:function", *args)`` runs there.

    ``preload`` names modules imported before the audit hook closes the file system, so that their
    import-time file access (shared libraries, data files) is allowed and calls pay none of it.
    The worker starts on the first call, in the process that makes it (safe to pickle and to fork).
    """

    def __init__(self, limits: SandboxLimits | None = None, preload: tuple[str, ...] = ()) -> None:
        self.limits = limits or SandboxLimits()
        self.preload = preload
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._from_child = -1
        self._shared: mmap.mmap | None = None
        self._lock = threading.Lock()  # one call at a time per worker (trainers step envs from thread pools)
        self._lock_pid = os.getpid()
        self._owner_pid = -1
        self._hang_next = False
        self._kill_next = False
        self.spawn_count = 0

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._owner_pid == os.getpid() else None

    def _start(self) -> None:
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        shared_fd = -1
        if hasattr(os, "memfd_create"):
            shared_fd = os.memfd_create("visrl-sandbox", 0)
            os.ftruncate(shared_fd, SHARED_BYTES)
            self._shared = mmap.mmap(shared_fd, SHARED_BYTES)
        config = {
            "memory": self.limits.memory_bytes,
            "files": self.limits.open_files,
            "preload": self.preload,
            "shared_fd": shared_fd,
        }
        # -P (3.11+): the worker's sys.path does not start with its cwd; it is the parent's sys.path, made
        # absolute, so the worker imports exactly the modules its parent does (not a checkout in the cwd).
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        cmd = [sys.executable, *safe_path, "-m", "visrl_envs.core._sandbox_child", str(child_read), str(child_write)]
        pass_fds = (child_read, child_write) + ((shared_fd,) if shared_fd >= 0 else ())
        python_path = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": python_path}
        for key in ("LANG", "LC_ALL", "FONTCONFIG_PATH", "FONTCONFIG_FILE", "HOME"):
            if key in os.environ:
                env[key] = os.environ[key]
        try:
            proc = subprocess.Popen(
                cmd,
                pass_fds=pass_fds,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if os.environ.get("VISRL_SANDBOX_DEBUG") else subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        except OSError as err:
            for fd in (parent_read, child_write, child_read, parent_write, shared_fd):
                if fd >= 0:
                    os.close(fd)
            raise SandboxUnavailable(f"cannot start sandbox worker: {err}") from err
        for fd in (child_read, child_write, shared_fd):
            if fd >= 0:
                os.close(fd)
        self._proc, self._to_child, self._from_child = proc, parent_write, parent_read
        self._owner_pid = os.getpid()
        self.spawn_count += 1
        try:
            _write_message(self._to_child, config)
            ready = _read_message(self._from_child, time.monotonic() + self.limits.startup_timeout_s)
        except (TimeoutError, EOFError, OSError, pickle.UnpicklingError) as err:
            self._kill()
            raise SandboxUnavailable(f"sandbox worker failed to start ({type(err).__name__})") from err
        if ready != ("ready", None):
            self._kill()
            raise SandboxUnavailable(f"sandbox worker failed to start: {ready!r}")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_child = self._from_child = -1
        if self._shared is not None:
            self._shared.close()
            self._shared = None
        if proc is not None and self._owner_pid == os.getpid():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """Kill the worker abruptly (SIGKILL, for fault tests) but keep the handles to it, so the next
        call finds it dead exactly as after a real crash (:class:`SandboxCrash`, then a respawn). A
        worker not running yet dies as soon as the next call has started it."""
        if self._proc is None or self._owner_pid != os.getpid():
            self._kill_next = True
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()

    def hang(self) -> None:
        """Make the next call hang in the worker (for fault tests): the worker sleeps instead of
        running it, and the parent's timeout path (kill, :class:`SandboxTimeout`, respawn) runs after
        :data:`INJECTED_HANG_WAIT_S` rather than the whole limit."""
        self._hang_next = True

    def close(self) -> None:
        """Stop the worker (idempotent); the next call starts a new one."""
        if self._proc is not None and self._owner_pid != os.getpid():
            # Inherited across fork: the process belongs to our parent; only drop our copies.
            self._proc = None
            self._to_child = self._from_child = -1
            self._shared = None
            return
        self._kill()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"limits": self.limits, "preload": self.preload}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limits"], state["preload"])  # type: ignore[misc]

    # -- calls --------------------------------------------------------------------------------
    def call(self, function: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Run ``function`` (``"module:name"``) on ``args`` in the worker and return its result.

        Raises :class:`SandboxCallError` when the function raised, :class:`SandboxTimeout` or
        :class:`SandboxCrash` when the worker had to be killed or died (it is respawned on the next
        call), and :class:`SandboxUnavailable` when no worker could be started.
        """
        if self._lock_pid != os.getpid():  # forked: the parent's lock state means nothing here
            self._lock, self._lock_pid = threading.Lock(), os.getpid()
        with self._lock:
            return self._call(function, args, timeout_s)

    def _call(self, function: str, args: tuple[Any, ...], timeout_s: float | None) -> Any:
        if self._proc is not None and self._owner_pid != os.getpid():
            self.close()
        if self._proc is None:
            self._start()
        if self._kill_next:
            self._kill_next = False
            self.kill()
        timeout = self.limits.timeout_s if timeout_s is None else timeout_s
        hang, self._hang_next = self._hang_next, False
        if hang:
            function, args, wait = "time:sleep", (3600.0,), min(timeout, INJECTED_HANG_WAIT_S)
        else:
            wait = timeout
        try:
            _write_message(self._to_child, (function, args))
            status, value = _read_message(self._from_child, time.monotonic() + wait)
        except TimeoutError:
            self._kill()
            raise SandboxTimeout(f"took longer than {timeout:g} s" + (" (injected hang)" if hang else "")) from None
        except (EOFError, OSError, pickle.UnpicklingError, struct.error):
            code = self._proc.poll() if self._proc is not None else None
            self._kill()
            raise SandboxCrash(_describe_exit(code)) from None
        if status == "ok":
            return value
        if status == "shared" and self._shared is not None:
            return self._shared[:value]
        if status == "shared+" and self._shared is not None:
            length, rest = value
            return (self._shared[:length], *rest)
        kind, message = value
        raise SandboxCallError(kind, message)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker stopped answering"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"worker killed by {name}"
    return f"worker exited with code {code}"
