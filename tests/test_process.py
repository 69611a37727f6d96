"""The limited subprocess runner: limits, group kill, scrubbed environment, bounded capture, safe outputs.

Every program is ``sys.executable -c ...``, so no extra binaries are needed. Tests marked with the
``backend`` fixture run twice: through the ``prlimit`` binary and through the ``preexec_fn`` fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from visrl_envs.core import process
from visrl_envs.core.process import (
    ProcessLimitExceeded,
    ProcessLimits,
    ProcessStartError,
    ProcessTimeout,
    run_limited,
)

PY = sys.executable
MB = 1 << 20


#: A hang (a limit that did not fire, a blocking open) fails fast instead of waiting for the global timeout.
pytestmark = pytest.mark.timeout(60)


def py(code: str, *args: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code), *args]


def gone(pid: int, within: float = 2.0) -> bool:
    """Whether ``pid`` is dead (or a zombie awaiting its reaper) within ``within`` seconds."""
    end = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return True
        if state in ("Z", "X"):  # killed; only init's reaping is pending
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.02)


def read_pids(path: Path, count: int, within: float = 5.0) -> list[int]:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if path.exists():
            pids = [int(p) for p in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.02)
    raise AssertionError(f"{path} did not get {count} pids")


@pytest.fixture(autouse=True)
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Working directories are created under a private root that must be empty after every test."""
    root = tmp_path / "tmproot"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    assert list(root.iterdir()) == [], "a working directory was left behind"


@pytest.fixture(params=["prlimit", "preexec"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "prlimit":
        if process._prlimit_path() is None:
            pytest.skip("prlimit is not installed")
    else:
        monkeypatch.setattr(process, "_prlimit_path", lambda: None)
    return str(request.param)


# 1. normal run: stdio, inputs, outputs, exit status
def test_echo_inputs_outputs(backend: str) -> None:
    code = """
        import sys
        data = open("in.txt", "rb").read()
        sys.stdout.write("out:" + data.decode() + "|" + sys.stdin.read())
        sys.stderr.write("err:" + sys.argv[1])
        open("out.txt", "wb").write(data.upper())
        sys.exit(3)
    """
    res = run_limited(py(code, "arg1"), inputs={"in.txt": b"hello"}, outputs=["out.txt", "never.txt"], stdin=b"piped")
    assert res.returncode == 3  # a non-zero exit is a result, not an exception
    assert res.stdout == b"out:hello|piped"
    assert res.stderr == b"err:arg1"
    assert res.files == {"out.txt": b"HELLO"}
    assert not res.timed_out and not res.output_truncated
    assert 0 < res.seconds < 10


def test_large_stdin_and_concurrent_calls() -> None:
    code = "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
    payloads = [bytes([i]) * (8 * MB) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: run_limited(py(code), stdin=p), payloads))
    for payload, res in zip(payloads, results, strict=True):
        assert res.returncode == 0
        assert res.stdout.decode().strip() == hashlib.sha256(payload).hexdigest()


def test_stdin_not_read_by_program() -> None:
    res = run_limited(py("import os; os.close(0)"), stdin=b"x" * (8 * MB))  # our write hits a broken pipe
    assert res.returncode == 0


def test_child_sees_the_limits(backend: str) -> None:
    code = """
        import json, resource
        names = ["RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_CORE"]
        print(json.dumps({n: resource.getrlimit(getattr(resource, n)) for n in names}))
    """
    limits = ProcessLimits(memory_bytes=512 * MB, file_size_bytes=3 * MB, open_files=100, cpu_seconds=7)
    seen = json.loads(run_limited(py(code), limits=limits).stdout)
    assert seen["RLIMIT_AS"] == [512 * MB, 512 * MB]
    assert seen["RLIMIT_FSIZE"] == [3 * MB, 3 * MB]
    assert seen["RLIMIT_NOFILE"] == [100, 100]
    assert seen["RLIMIT_CPU"][0] == 7 and seen["RLIMIT_CPU"][1] in (8, resource.getrlimit(resource.RLIMIT_CPU)[1])
    assert seen["RLIMIT_CORE"] == [0, 0]


def test_open_files_limit() -> None:
    code = """
        fds = []
        try:
            for i in range(1000):
                fds.append(open(f"f{i}", "w"))
        except OSError as exc:
            print(len(fds), exc.errno)
    """
    res = run_limited(py(code), limits=ProcessLimits(open_files=32))
    opened, errno_ = map(int, res.stdout.split())
    assert opened < 32 and errno_ == 24  # EMFILE


# 2. wall timeout
def test_wall_timeout_kills_program(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = (
        "import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); print('started', flush=True)\nwhile True: pass"
    )
    with pytest.raises(ProcessTimeout, match=r"exceeded the wall timeout of 1 s") as info:
        run_limited(py(code, str(pidfile)), limits=ProcessLimits(timeout_s=1))
    assert PY in str(info.value)
    (pid,) = read_pids(pidfile, 1)
    assert gone(pid)
    assert info.value.result is not None and info.value.result.timed_out
    assert info.value.result.stdout == b"started\n"


def test_timeout_while_stdout_is_silent_and_pipes_closed() -> None:
    code = "import os, time; os.close(1); os.close(2); time.sleep(60)"
    with pytest.raises(ProcessTimeout):
        run_limited(py(code), limits=ProcessLimits(timeout_s=1))


# 3. file-size limit
def test_file_size_limit_efbig(backend: str) -> None:
    # Python ignores SIGXFSZ, so write() fails with EFBIG and the program exits with an error.
    code = """
        with open("big.bin", "wb") as f:
            for _ in range(200):
                f.write(b"x" * (1 << 20))
    """
    res = run_limited(py(code), outputs=["big.bin"], limits=ProcessLimits(file_size_bytes=MB))
    assert res.returncode != 0
    assert b"File too large" in res.stderr
    assert len(res.files["big.bin"]) <= MB


def test_file_size_limit_sigxfsz(backend: str, tmp_path: Path) -> None:
    # A program with the default SIGXFSZ disposition is killed by it; the file never exceeds the limit.
    cwd_file = tmp_path / "cwd"
    code = """
        import os, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        open(sys.argv[1], "w").write(os.getcwd())
        with open("big.bin", "wb") as f:
            for _ in range(200):
                f.write(b"x" * (1 << 20))
    """
    with pytest.raises(ProcessLimitExceeded, match="SIGXFSZ") as info:
        run_limited(py(code, str(cwd_file)), outputs=["big.bin"], limits=ProcessLimits(file_size_bytes=MB))
    assert info.value.result is not None and info.value.result.returncode == -signal.SIGXFSZ
    assert not Path(cwd_file.read_text()).exists()  # the working directory is gone


# 4. forked descendants
def test_forked_child_killed_after_parent_exits(backend: str) -> None:
    code = """
        import os, time
        if os.fork() == 0:
            print(os.getpid(), flush=True)
            time.sleep(60)
    """
    # a stall on the sleeping child's open stdout would end in ProcessTimeout, not a result
    res = run_limited(py(code), limits=ProcessLimits(timeout_s=20))
    assert res.returncode == 0 and not res.timed_out
    assert gone(int(res.stdout))


def test_forked_children_killed_on_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    code = """
        import os, sys
        os.fork()
        with open(sys.argv[1], "a") as f:
            f.write(f"{os.getpid()}\\n")
        while True:
            pass
    """
    with pytest.raises(ProcessTimeout):
        run_limited(py(code, str(pidfile)), limits=ProcessLimits(timeout_s=1))
    pids = read_pids(pidfile, 2)
    assert all(gone(pid) for pid in pids)


# 5. memory
def test_memory_limit(backend: str) -> None:
    code = "x = bytearray(2 << 30)"
    res = run_limited(py(code), limits=ProcessLimits(memory_bytes=256 * MB))
    assert res.returncode != 0
    assert b"MemoryError" in res.stderr


# 6. environment
def test_environment_is_scrubbed(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISRL_SECRET", "x")
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent.so")
    code = "import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    seen = json.loads(run_limited(py(code), env={"A": "1"}).stdout)
    env = seen["env"]
    assert "VISRL_SECRET" not in env and "LD_PRELOAD" not in env
    assert env["A"] == "1"
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "A"}
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == env["TMPDIR"] == seen["cwd"]
    assert env["LANG"] == env["LC_ALL"] == "C.UTF-8"


# 7. output files
def test_output_file_over_limit() -> None:
    code = "open('big.bin', 'wb').write(b'x' * (2 << 20))"
    with pytest.raises(ProcessLimitExceeded, match=r"big\.bin"):
        run_limited(py(code), outputs=["big.bin"], limits=ProcessLimits(max_result_bytes=MB))


def test_symlink_and_special_outputs_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    code = """
        import os, sys
        os.symlink(sys.argv[1], "out.pdf")
        os.mkfifo("fifo")
        os.mkdir("dir")
        open("ok.txt", "w").write("fine")
    """
    res = run_limited(
        py(code, str(secret)), outputs=["out.pdf", "fifo", "dir", "ok.txt"]
    )  # a blocking FIFO open hangs: the timeout mark fails it
    assert res.returncode == 0
    assert res.files == {"ok.txt": b"fine"}
    assert secret.read_bytes() == b"top secret"


# 8. output flood
def test_stdout_flood_is_capped_without_deadlock() -> None:
    code = """
        import sys
        sys.stderr.buffer.write(b"e" * (5 << 20))
        for _ in range(50):
            sys.stdout.buffer.write(b"x" * (1 << 20))
        sys.stderr.buffer.write(b"END")
    """
    res = run_limited(py(code), limits=ProcessLimits(max_output_bytes=MB, timeout_s=20))
    assert res.returncode == 0
    assert res.output_truncated
    assert len(res.stdout) == MB and len(res.stderr) == MB
    assert set(res.stdout) == {ord("x")}


# 9. argument validation and start failures
@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", "/etc/passwd"])
def test_bad_file_names(name: str) -> None:
    with pytest.raises(ValueError):
        run_limited(py("pass"), inputs={name: b"x"})
    with pytest.raises(ValueError):
        run_limited(py("pass"), outputs=[name])


def test_empty_argv() -> None:
    with pytest.raises(ValueError):
        run_limited([])


@pytest.mark.parametrize("program", ["visrl-no-such-program-xyz", "/nonexistent/visrl-prog"])
def test_missing_program(program: str, backend: str) -> None:
    with pytest.raises(ProcessStartError, match="visrl-"):
        run_limited([program, "--version"])


def test_non_executable_program(tmp_path: Path, backend: str) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ProcessStartError, match="not an executable"):
        run_limited([str(script)])


def test_program_found_on_scrubbed_path() -> None:
    res = run_limited(["sh", "-c", "echo $0 ok"])
    assert res.returncode == 0 and res.stdout.endswith(b" ok\n")


# 10. CPU limit
def test_cpu_limit_sigxcpu(backend: str) -> None:
    with pytest.raises(ProcessLimitExceeded, match="SIGXCPU") as info:  # not ProcessTimeout: the CPU limit fired
        run_limited(py("while True: pass"), limits=ProcessLimits(cpu_seconds=1, timeout_s=20))
    assert info.value.result is not None and info.value.result.returncode == -signal.SIGXCPU


def test_cpu_limit_when_sigxcpu_is_ignored() -> None:
    # Past the soft limit the program ignores SIGXCPU; the kernel SIGKILLs it at the hard limit (+1 s).
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"
    with pytest.raises(ProcessLimitExceeded, match="SIGKILL"):
        run_limited(py(code), limits=ProcessLimits(cpu_seconds=1, timeout_s=20))


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        ProcessLimits(timeout_s=0)
    with pytest.raises(ValueError):
        ProcessLimits(memory_bytes=-1)
