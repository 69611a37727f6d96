"""The sandbox worker: limits, timeouts, crashes, respawn, no leaked processes."""

from __future__ import annotations

import os
import pickle

import pytest

from tests.helpers import process_alive
from visrl_envs.core.sandbox import (
    SandboxCallError,
    SandboxCrash,
    SandboxLimits,
    SandboxTimeout,
    SandboxWorker,
)

T = "tests.sandbox_targets:"


@pytest.fixture(scope="module")
def worker() -> SandboxWorker:
    w = SandboxWorker(SandboxLimits(memory_bytes=1 << 30, timeout_s=5.0))
    yield w
    w.close()


def test_call_and_reuse(worker: SandboxWorker) -> None:
    assert worker.call(T + "add", 2, 3) == 5
    first = worker.call(T + "pid")
    assert worker.call(T + "pid") == first != os.getpid()


def test_timeout_kills_and_respawns(worker: SandboxWorker) -> None:
    old = worker.call(T + "pid")
    spawned = worker.spawn_count
    with pytest.raises(SandboxTimeout):
        worker.call(T + "sleep", 30, timeout_s=0.5)
    assert not process_alive(old)
    assert worker.call(T + "sleep", 0) == "woke"
    assert worker.spawn_count == spawned + 1


@pytest.mark.parametrize("fn", ["segfault", "exit_hard"])
def test_crash_is_reported_and_recovered(worker: SandboxWorker, fn: str) -> None:
    with pytest.raises(SandboxCrash):
        worker.call(T + fn)
    assert worker.call(T + "add", 1, 1) == 2


def test_memory_limit(worker: SandboxWorker) -> None:
    with pytest.raises(SandboxCallError) as err:
        worker.call(T + "allocate", 4 << 30)
    assert err.value.kind == "MemoryError"
    assert worker.call(T + "allocate", 1 << 20) == 1 << 20


def test_no_file_reads_outside_the_interpreter(worker: SandboxWorker, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("canary")
    with pytest.raises(SandboxCallError) as err:
        worker.call(T + "read_file", str(secret))
    assert err.value.kind == "PermissionError"
    with pytest.raises(SandboxCallError):
        worker.call(T + "read_file", "/etc/passwd")


def test_no_writes_and_no_sockets(worker: SandboxWorker, tmp_path) -> None:
    with pytest.raises(SandboxCallError):
        worker.call(T + "write_file", str(tmp_path / "out.txt"))
    assert not (tmp_path / "out.txt").exists()
    with pytest.raises(SandboxCallError) as err:
        worker.call(T + "connect", 9)
    assert err.value.kind == "PermissionError"


def test_exceptions_come_back_as_data(worker: SandboxWorker) -> None:
    with pytest.raises(SandboxCallError) as err:
        worker.call(T + "add", 1, "x")
    assert err.value.kind == "TypeError"


def test_close_leaves_no_process() -> None:
    w = SandboxWorker()
    pid = w.call(T + "pid")
    w.close()
    w.close()
    assert not process_alive(pid)


def test_pickles_without_its_process() -> None:
    w = SandboxWorker()
    w.call(T + "add", 1, 2)
    clone = pickle.loads(pickle.dumps(w))
    assert clone.pid is None
    assert clone.call(T + "add", 2, 2) == 4
    assert clone.pid != w.pid
    w.close()
    clone.close()


def test_calls_from_many_threads_are_serialised(worker: SandboxWorker) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: worker.call(T + "add", i, 1), range(64)))
    assert results == [i + 1 for i in range(64)]
