"""Run an external program on hostile input with hard resource limits.

Used for tools such as ``pdflatex`` and ``pdftoppm`` fed with agent-written input. The agent's output is
treated as hostile: it may loop forever, allocate without bound, write huge files, flood stdout, fork
helpers that outlive the compiler, or replace an expected output file by a symlink to a private file.
:func:`run_limited` guarantees, per call:

- a fresh temporary working directory (the program's cwd, ``HOME`` and ``TMPDIR``), always removed;
- a scrubbed environment: a fixed ``PATH``, locale and the caller's explicit extras, nothing inherited
  from ``os.environ`` (API keys, proxy settings, ``LD_PRELOAD`` and the like never reach the program);
- kernel resource limits set before the program's first instruction: address space, largest file
  written, open descriptors, CPU seconds, no core dumps;
- its own session and process group, killed as a whole with SIGKILL on the wall timeout *and* after a
  normal exit, so a forked grandchild cannot keep running (or keep our pipes open);
- bounded memory on our side: stdout and stderr are read concurrently, capped, and drained past the cap
  so the program never blocks on a full pipe; output files are size-checked before they are read, and
  symlinks or non-regular files are never followed.

A non-zero exit status is a normal result (a LaTeX error is the agent's fault); exceptions are reserved
for the wall timeout, a program that cannot be started, and resource-limit kills.

Not guaranteed: the program runs as the calling user without filesystem or network isolation, so it can
read whatever that user can read. A descendant that calls ``setsid()`` leaves the process group and
escapes the group kill (only a PID namespace or cgroup would catch it); such a process can hold our
pipes open for at most a short grace period after the program exits.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ProcessError",
    "ProcessLimitExceeded",
    "ProcessLimits",
    "ProcessResult",
    "ProcessStartError",
    "ProcessTimeout",
    "run_limited",
]

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
#: After the program exits (and its group is killed), how long we keep reading pipes that a descendant
#: outside the group may still hold open.
_DRAIN_GRACE_S = 1.0
#: Poll interval for the program's exit when ``pidfd_open`` is unavailable (old kernels, seccomp).
_POLL_S = 0.02
_CHUNK = 1 << 16
#: prlimit's own message when its ``execvp`` of the program fails (exit status 126 or 127).
_PRLIMIT_EXEC_FAILED = b"prlimit: failed to execute "


@dataclass(frozen=True)
class ProcessLimits:
    """Resource limits of one :func:`run_limited` call."""

    timeout_s: float = 30.0  # wall clock
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    file_size_bytes: int = 64 << 20  # RLIMIT_FSIZE (largest file the program may write)
    open_files: int = 256  # RLIMIT_NOFILE
    cpu_seconds: int = 60  # RLIMIT_CPU
    max_output_bytes: int = 1 << 20  # cap on captured stdout and stderr each (excess is dropped, flagged)
    max_result_bytes: int = 64 << 20  # cap on each output file read back

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}")
        if self.cpu_seconds < 1:
            raise ValueError(f"cpu_seconds must be at least 1, got {self.cpu_seconds!r}")
        for name in ("memory_bytes", "file_size_bytes", "open_files", "max_output_bytes", "max_result_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ProcessResult:
    """What a finished program left behind."""

    returncode: int  # negative = killed by that signal (as subprocess does)
    stdout: bytes
    stderr: bytes
    files: dict[str, bytes]  # the requested output files that exist, by name
    timed_out: bool  # True only on the partial result attached to ProcessTimeout
    output_truncated: bool  # stdout or stderr hit max_output_bytes
    seconds: float


class ProcessError(RuntimeError):
    """Base class: the run did not produce a usable result.

    ``result`` holds what was captured when the program ran at all (partial output, no files), else None.
    """

    def __init__(self, message: str, result: ProcessResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class ProcessTimeout(ProcessError):
    """The wall timeout was hit; the whole process group was killed."""


class ProcessLimitExceeded(ProcessError):
    """An output file exceeded ``max_result_bytes``, or a file-size / CPU limit killed the program."""


class ProcessStartError(ProcessError):
    """The program could not be started (not found, not executable, exec failed)."""


@dataclass
class _Capture:
    """One captured stream: keeps at most ``cap`` bytes, counts the rest as truncation."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk


_EXIT = object()  # selector tag of the pidfd
_STDIN = object()  # selector tag of the program's stdin


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{what} name must be a plain file name (no '/', not '', '.' or '..'), got {name!r}")


def _prlimit_path() -> str | None:
    """The util-linux ``prlimit`` binary, if installed."""
    return shutil.which("prlimit")


def _rlimits(limits: ProcessLimits) -> list[tuple[int, str, int, int]]:
    """``(resource, prlimit flag, soft, hard)`` for each limit; ValueError if one exceeds our own hard limit.

    The CPU hard limit is one second above the soft one: at the soft limit the kernel sends SIGXCPU, but when
    soft == hard it sends SIGKILL instead (checked on this kernel), which is indistinguishable from other kills.
    """
    wanted = [
        (resource.RLIMIT_AS, "--as", limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, "--fsize", limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_NOFILE, "--nofile", limits.open_files, limits.open_files),
        (resource.RLIMIT_CPU, "--cpu", limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_CORE, "--core", 0, 0),
    ]
    out = []
    for res, flag, soft, hard in wanted:
        own_hard = resource.getrlimit(res)[1]
        if own_hard != resource.RLIM_INFINITY:
            if soft > own_hard:
                raise ValueError(f"limit {flag[2:]}={soft} exceeds this process's own hard limit {own_hard}")
            hard = min(hard, own_hard)
        out.append((res, flag, soft, hard))
    return out


def _limit_setter(rlimits: list[tuple[int, str, int, int]]) -> Callable[[], None]:
    """A ``preexec_fn`` applying ``rlimits`` in the child (fallback when prlimit is absent)."""

    def apply() -> None:
        for res, _flag, soft, hard in rlimits:
            resource.setrlimit(res, (soft, hard))

    return apply


def _resolve(program: str, path: str) -> str:
    """Absolute path of an executable ``program`` (looked up on ``path`` when it has no '/')."""
    found = shutil.which(program, path=path)
    if found is None:
        where = "is not an executable file" if "/" in program else f"was not found on PATH={path}"
        raise ProcessStartError(f"cannot start {program!r}: it {where}")
    return os.path.abspath(found)


def _kill_group(pgid: int) -> None:
    """SIGKILL every process of the group (the leader may be a zombie, which keeps the group id reserved)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits, without reaping it; None if unsupported."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return None
    return fd


def _has_exited(pid: int) -> bool:
    """Whether ``pid`` has exited, leaving it unreaped (so its pid and group id stay reserved)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _reap(proc: subprocess.Popen[bytes]) -> float:
    """Collect the exit status into ``proc.returncode``; return the CPU seconds the program used."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # someone else reaped it (SIGCHLD ignored, a stray os.wait())
        proc.returncode = -signal.SIGKILL
        return 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return float(usage.ru_utime + usage.ru_stime)


def _supervise(
    proc: subprocess.Popen[bytes], stdin: bytes | None, deadline: float, out: _Capture, err: _Capture
) -> bool:
    """Feed stdin and drain stdout/stderr until the program exits and the pipes close; True on wall timeout.

    Kills the process group as soon as the program exits, then drains for at most ``_DRAIN_GRACE_S``.
    """
    assert proc.stdout is not None and proc.stderr is not None
    exit_fd = _open_pidfd(proc.pid)
    sel = selectors.DefaultSelector()
    try:
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, out)
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, err)
        if exit_fd is not None:
            sel.register(exit_fd, selectors.EVENT_READ, _EXIT)
        pending = memoryview(stdin or b"")
        if proc.stdin is not None:
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, _STDIN)
            else:
                proc.stdin.close()
        exited = False
        stop_at = deadline

        def on_exit() -> None:
            nonlocal exited, stop_at
            exited = True
            _kill_group(proc.pid)
            stop_at = min(deadline, time.monotonic() + _DRAIN_GRACE_S)
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(KeyError):
                    sel.unregister(proc.stdin.fileno())
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        while True:
            if not exited and exit_fd is None and _has_exited(proc.pid):
                on_exit()
            if exited and all(key.data is _EXIT for key in sel.get_map().values()):
                return False
            remaining = stop_at - time.monotonic()
            if remaining <= 0:
                return not exited
            for key, _events in sel.select(remaining if exit_fd is not None else min(remaining, _POLL_S)):
                if key.data is _EXIT:
                    sel.unregister(key.fd)
                    on_exit()
                elif key.data is _STDIN:
                    assert proc.stdin is not None
                    if proc.stdin.closed:  # on_exit() closed it earlier in this batch of events
                        continue
                    try:
                        pending = pending[os.write(key.fd, pending[:_CHUNK]) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # BrokenPipeError: the program closed its stdin
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(key.fd)
                        with contextlib.suppress(OSError):
                            proc.stdin.close()
                else:
                    chunk = os.read(key.fd, _CHUNK)
                    if chunk:
                        key.data.add(chunk)
                    else:
                        sel.unregister(key.fd)
    finally:
        sel.close()
        if exit_fd is not None:
            os.close(exit_fd)


def _read_output(workdir: str, name: str, max_bytes: int) -> bytes | None:
    """Contents of a regular output file; None if missing, a symlink, or not a regular file.

    ``O_NOFOLLOW`` refuses a symlink (e.g. ``out.pdf -> /etc/passwd``), ``O_NONBLOCK`` keeps a FIFO from
    blocking the open, and the size is checked on the opened descriptor before anything is read.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(os.path.join(workdir, name), flags)
    except OSError:  # missing, symlink (ELOOP), socket (ENXIO), unreadable (EACCES)
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > max_bytes:
            raise ProcessLimitExceeded(
                f"output file {name!r} is {info.st_size} bytes, over max_result_bytes={max_bytes}"
            )
        parts: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
        if total > max_bytes:  # grew after the size check
            raise ProcessLimitExceeded(f"output file {name!r} grew past max_result_bytes={max_bytes}")
        return b"".join(parts)
    finally:
        os.close(fd)


def run_limited(
    argv: Sequence[str],
    *,
    inputs: Mapping[str, bytes] | None = None,
    outputs: Sequence[str] = (),
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    limits: ProcessLimits | None = None,
) -> ProcessResult:
    """Run ``argv`` in a fresh working directory under ``limits``; see the module docstring.

    ``inputs`` are written into the working directory first, ``outputs`` read back afterwards (missing or
    refused ones are absent from ``files``). ``argv[0]`` is looked up on the scrubbed ``PATH`` (or taken as a
    path when it contains '/'). A non-zero exit status is returned, not raised.

    Raises ValueError for an empty ``argv`` or a bad file name, ProcessStartError, ProcessTimeout and
    ProcessLimitExceeded.
    """
    if isinstance(argv, (str, bytes)) or not argv:
        raise ValueError("argv must be a non-empty sequence of strings")
    argv = [str(a) for a in argv]
    limits = limits or ProcessLimits()
    inputs = dict(inputs or {})
    outputs = list(outputs)
    for name in inputs:
        _check_name(name, "input")
    for name in outputs:
        _check_name(name, "output")
    rlimits = _rlimits(limits)
    program = argv[0]

    with tempfile.TemporaryDirectory(prefix="visrl-proc-") as workdir:
        child_env = {"PATH": SAFE_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        child_env.update(env or {})
        executable = _resolve(program, child_env["PATH"])
        for name, content in inputs.items():
            with open(os.path.join(workdir, name), "wb") as fh:
                fh.write(content)

        # The limits must be in force before the program's first instruction. subprocess's preexec_fn would do
        # that, but it runs Python in the forked child, which the docs call unsafe when the parent has threads
        # (trainers run thread pools: a lock held by another thread at fork time can deadlock the child). The
        # prlimit binary sets the limits on itself and then execs the program (same pid, same process group),
        # so no Python code runs between fork and exec. preexec_fn is only the fallback without prlimit.
        prlimit = _prlimit_path()
        preexec_fn: Callable[[], None] | None = None
        if prlimit is not None:
            flags = [f"{flag}={soft}:{hard}" for _res, flag, soft, hard in rlimits]
            cmd = [prlimit, *flags, "--", executable, *argv[1:]]
        else:
            cmd = [executable, *argv[1:]]
            preexec_fn = _limit_setter(rlimits)

        start = time.monotonic()
        deadline = start + limits.timeout_s
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                env=child_env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                preexec_fn=preexec_fn,  # None when prlimit is used (see above)
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProcessStartError(f"cannot start {program!r}: {exc}") from exc

        out = _Capture(limits.max_output_bytes)
        err = _Capture(limits.max_output_bytes)
        cpu_used = 0.0
        try:
            timed_out = _supervise(proc, stdin, deadline, out, err)
        finally:
            # Always: kill whatever is left of the group (including forked grandchildren), reap, close pipes.
            _kill_group(proc.pid)
            if proc.returncode is None:
                cpu_used = _reap(proc)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        returncode = proc.returncode
        assert returncode is not None

        def result(files: dict[str, bytes], timed_out: bool = False) -> ProcessResult:
            return ProcessResult(
                returncode=returncode,
                stdout=bytes(out.data),
                stderr=bytes(err.data),
                files=files,
                timed_out=timed_out,
                output_truncated=out.truncated or err.truncated,
                seconds=time.monotonic() - start,
            )

        if timed_out:
            raise ProcessTimeout(
                f"{program!r} exceeded the wall timeout of {limits.timeout_s:g} s; its process group was killed",
                result({}, timed_out=True),
            )
        if prlimit is not None and returncode in (126, 127) and err.data.startswith(_PRLIMIT_EXEC_FAILED):
            message = bytes(err.data).decode(errors="replace").strip()
            raise ProcessStartError(f"cannot start {program!r}: {message}", result({}))
        if returncode == -signal.SIGXFSZ:
            raise ProcessLimitExceeded(
                f"{program!r} was killed by SIGXFSZ: it wrote past the file-size limit of "
                f"{limits.file_size_bytes} bytes",
                result({}),
            )
        if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and cpu_used >= limits.cpu_seconds):
            raise ProcessLimitExceeded(
                f"{program!r} was killed by {signal.Signals(-returncode).name}: it used {cpu_used:.1f} s of CPU, "
                f"over the limit of {limits.cpu_seconds} s",
                result({}),
            )
        files: dict[str, bytes] = {}
        for name in outputs:
            try:
                data = _read_output(workdir, name, limits.max_result_bytes)
            except ProcessLimitExceeded as exc:
                raise ProcessLimitExceeded(str(exc), result(files)) from None
            if data is not None:
                files[name] = data
        return result(files)
