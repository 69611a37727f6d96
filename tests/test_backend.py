"""Backend handles (lazy, per process, shared, never pickled, fault injection), blame, numeric actions."""

from __future__ import annotations

import functools
import os
import pickle

import numpy as np
import pytest
from gymnasium import spaces

from visrl_envs.core.backend import BackendHandle, call_with_blame
from visrl_envs.core.errors import ActionError, BackendCrash, BackendError
from visrl_envs.core.numeric import box_action, discrete_action, multi_discrete_action, validate_numeric


class Counter:
    """A backend that records its life (module level: factories must pickle)."""

    made: list[Counter] = []  # noqa: RUF012

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.pid = os.getpid()
        self.closed = 0
        Counter.made.append(self)

    def close(self) -> None:
        self.closed += 1


class Broken:
    def __init__(self) -> None:
        raise OSError("no display")

    def close(self) -> None:  # pragma: no cover - never built
        pass


@pytest.fixture(autouse=True)
def _forget() -> None:
    Counter.made.clear()


def test_lazy_creation_reuse_and_close() -> None:
    handle: BackendHandle[Counter] = BackendHandle("counter", Counter)
    assert not handle.active and Counter.made == []
    first = handle.get()
    assert handle.get() is first and handle.created == 1 and handle.active
    handle.close()
    handle.close()
    assert first.closed == 1 and not handle.active
    assert handle.get() is not first and handle.created == 2
    handle.close()


def test_never_pickled_and_restarted_after_unpickling() -> None:
    handle: BackendHandle[Counter] = BackendHandle("counter", functools.partial(Counter, "x"))
    original = handle.get()
    clone = pickle.loads(pickle.dumps(handle))
    assert not clone.active and clone.peek() is None
    fresh = clone.get()
    assert fresh is not original and fresh.tag == "x"
    handle.close()
    clone.close()


def test_a_forked_child_starts_its_own_backend() -> None:
    handle: BackendHandle[Counter] = BackendHandle("counter", Counter)
    parent_backend = handle.get()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the inherited backend is the parent's; a new one is made, the old one left alone
        try:
            child_backend = handle.get()
            ok = child_backend is not parent_backend and child_backend.pid == os.getpid()
            handle.close()
            ok = ok and parent_backend.closed == 0 and child_backend.closed == 1
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert handle.get() is parent_backend and parent_backend.closed == 0
    handle.close()


def test_shared_backends_are_reference_counted() -> None:
    a: BackendHandle[Counter] = BackendHandle("browser", Counter, share_key="test-browser")
    b: BackendHandle[Counter] = BackendHandle("browser", Counter, share_key="test-browser")
    shared = a.get()
    assert b.get() is shared and len(Counter.made) == 1
    a.close()
    assert shared.closed == 0 and b.get() is shared
    b.close()
    assert shared.closed == 1
    c: BackendHandle[Counter] = BackendHandle("browser", Counter, share_key="test-browser")
    assert c.get() is not shared
    c.close()


def test_discarding_a_shared_backend_restarts_it_for_everyone() -> None:
    a: BackendHandle[Counter] = BackendHandle("browser", Counter, share_key="test-discard")
    b: BackendHandle[Counter] = BackendHandle("browser", Counter, share_key="test-discard")
    old = a.get()
    assert b.get() is old
    a.discard()
    assert old.closed == 1
    new = b.get()
    assert new is not old and a.get() is new
    a.close()
    assert new.closed == 0
    b.close()
    assert new.closed == 1


def test_injected_faults_and_factory_failures_are_backend_errors() -> None:
    handle: BackendHandle[Counter] = BackendHandle("counter", Counter)
    handle.inject_fault(2)
    for _ in range(2):
        with pytest.raises(BackendError, match="counter: injected fault") as err:
            handle.get()
        assert err.value.backend == "counter"
    assert handle.pending_faults == 0 and isinstance(handle.get(), Counter)
    handle.close()
    broken: BackendHandle[Broken] = BackendHandle("display", Broken)
    with pytest.raises(BackendError, match="display could not be started: OSError: no display"):
        broken.get()


class Flaky:
    """Crashes on inputs containing 'bomb' always, on 'hiccup' only on its first backend."""

    instances = 0

    def __init__(self) -> None:
        Flaky.instances += 1
        self.generation = Flaky.instances

    def run(self, text: str) -> str:
        if "bomb" in text or ("hiccup" in text and self.generation == 1):
            raise BackendCrash("worker killed by SIGSEGV", "flaky")
        if "down" in text:
            raise BackendError("cannot start", "flaky")
        return text.upper()

    def close(self) -> None:
        pass


def test_blame_a_crash_that_recurs_on_a_fresh_backend_is_the_agents() -> None:
    Flaky.instances = 0
    handle: BackendHandle[Flaky] = BackendHandle("flaky", Flaky)
    assert call_with_blame(handle, lambda b: b.run("ok")) == "OK"
    assert call_with_blame(handle, lambda b: b.run("hiccup")) == "HICCUP"  # the machine's: retried, fine
    assert handle.created == 2
    with pytest.raises(ActionError, match="your input made the flaky fail twice"):
        call_with_blame(handle, lambda b: b.run("bomb"))
    with pytest.raises(BackendError, match="cannot start"):  # not a crash: the machine's, not retried
        call_with_blame(handle, lambda b: b.run("down"))
    assert call_with_blame(handle, lambda b: b.run("fine")) == "FINE"


def test_discrete_and_multi_discrete_validation() -> None:
    space = spaces.Discrete(4, start=1)
    assert discrete_action(space, np.int64(2)) == 2 and discrete_action(space, np.array([4])) == 4
    assert discrete_action(space, 3.0) == 3
    for bad, message in ((0, r"in \[1, 5\)"), (2.5, "one integer"), (True, "integer"), ([1, 2], "one integer")):
        with pytest.raises(ActionError, match=message):
            discrete_action(space, bad)
    md = spaces.MultiDiscrete([3, 2])
    assert multi_discrete_action(md, np.array([2, 1])) == (2, 1)
    for bad in ([3, 0], [1.0, 1.0], [1], "ab", None):
        with pytest.raises(ActionError):
            multi_discrete_action(md, bad)


def test_box_validation() -> None:
    box = spaces.Box(low=np.array([-1.0, 0.0], dtype=np.float32), high=np.array([1.0, 5.0], dtype=np.float32))
    value = box_action(box, [0.5, 4])
    assert value.dtype == np.float32 and value.tolist() == [0.5, 4.0]
    cases = (
        ([0.5], "shape"),
        ([[0.5, 1.0]], "shape"),
        ([np.nan, 1.0], "finite"),
        ([np.inf, 1.0], "finite"),
        ([2.0, 1.0], "out of bounds"),
        (["a", "b"], "numbers"),
        (None, "numbers"),
    )
    for bad, message in cases:
        with pytest.raises(ActionError, match=message):
            box_action(box, bad)
    image_box = spaces.Box(0, 255, (2, 2, 3), dtype=np.uint8)
    assert validate_numeric(image_box, np.full((2, 2, 3), 7)).dtype == np.uint8
    with pytest.raises(TypeError):
        validate_numeric(spaces.Text(5), "x")
