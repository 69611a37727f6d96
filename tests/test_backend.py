"""Backend handles (lazy, per process, shared, never pickled, fault injection), blame, numeric actions."""

from __future__ import annotations

import functools
import os
import pickle

import numpy as np
import pytest
from gymnasium import spaces

from visrl_envs.core.backend import BackendHandle, SharedParent, call_with_blame, shared_parent_running
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


class Browser:
    """A shared parent: a stand-in for one Chromium per process (module level: factories pickle)."""

    launched: list[Browser] = []  # noqa: RUF012

    def __init__(self) -> None:
        self.closed = 0
        self.dead = False
        Browser.launched.append(self)

    def kill(self) -> None:
        self.dead = True

    def close(self) -> None:
        self.closed += 1


class Context:
    """A child of a Browser: dies with it; knows whether it was killed or told to hang."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.closed = 0
        self.dead = False
        self.hanging = False

    def run(self, text: str) -> str:
        if self.dead or self.browser.dead:
            raise BackendCrash("target closed", "browser", scope="parent" if self.browser.dead else "backend")
        if self.hanging:
            raise BackendCrash("timed out after 30 s", "browser")
        return text.upper()

    def kill(self) -> None:
        self.dead = True

    def hang(self) -> None:
        self.hanging = True

    def close(self) -> None:
        self.closed += 1


def browser_handle(key: str, **kwargs: object) -> BackendHandle[Context]:
    return BackendHandle("browser", Context, parent=SharedParent(key, Browser), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _forget_browsers() -> None:
    Browser.launched.clear()


def test_children_share_one_parent_closed_with_the_last() -> None:
    a, b = browser_handle("test-refs"), browser_handle("test-refs")
    ctx_a, ctx_b = a.get(), b.get()
    assert ctx_a is not ctx_b and ctx_a.browser is ctx_b.browser and len(Browser.launched) == 1
    assert shared_parent_running("test-refs")
    a.close()
    assert ctx_a.closed == 1 and ctx_a.browser.closed == 0 and b.get() is ctx_b
    b.close()
    assert ctx_b.closed == 1 and ctx_b.browser.closed == 1 and not shared_parent_running("test-refs")
    c = browser_handle("test-refs")
    assert c.get().browser is not ctx_a.browser
    c.close()


def test_discarding_a_child_leaves_siblings_and_the_parent_alone() -> None:
    a, b = browser_handle("test-child"), browser_handle("test-child")
    old_a, ctx_b = a.get(), b.get()
    a.discard()
    assert old_a.closed == 1 and ctx_b.closed == 0 and ctx_b.browser.closed == 0
    new_a = a.get()
    assert new_a is not old_a and new_a.browser is ctx_b.browser and b.get() is ctx_b
    assert (a.generation, b.generation) == (2, 1)
    a.close()
    b.close()
    assert ctx_b.browser.closed == 1


def test_discarding_the_parent_rebuilds_every_sibling_on_its_next_use() -> None:
    rebuilt: list[Context] = []
    a, b = browser_handle("test-parent"), browser_handle("test-parent", on_acquire=rebuilt.append)
    old_a, old_b = a.get(), b.get()
    assert rebuilt == [old_b]
    a.discard("parent")
    assert old_a.browser.closed == 1 and not b.active and b.peek() is None
    new_b = b.get()  # the sibling notices the new parent and rebuilds its child, then restores it
    assert new_b is not old_b and new_b.browser is not old_b.browser and rebuilt == [old_b, new_b]
    assert old_b.closed == 1, "the stale child is released"
    assert a.get().browser is new_b.browser and len(Browser.launched) == 2
    a.close()
    b.close()
    assert new_b.browser.closed == 1


def test_blame_discards_what_the_crash_names() -> None:
    a, b = browser_handle("test-blame"), browser_handle("test-blame")
    ctx_b = b.get()
    a.get().browser.kill()  # the browser process died: both contexts are gone
    assert call_with_blame(a, lambda c: c.run("ok")) == "OK"
    assert a.get().browser is not ctx_b.browser, "a parent-scope crash restarts the parent"
    assert b.get() is not ctx_b and call_with_blame(b, lambda c: c.run("x")) == "X"
    a.close()
    b.close()


@pytest.mark.parametrize("scope", ["backend", "parent"])
def test_injected_crash_kills_for_real_and_the_retry_recovers(scope: str) -> None:
    handle = browser_handle(f"test-crash-{scope}")
    first = handle.get()
    handle.inject_fault(kind="crash", scope=scope)  # type: ignore[arg-type]
    assert call_with_blame(handle, lambda c: c.run("ok")) == "OK"
    assert (first.browser.dead if scope == "parent" else first.dead) and handle.generation == 2
    handle.close()


def test_injected_hang_uses_the_backends_own_hang() -> None:
    handle = browser_handle("test-hang")
    handle.get()
    handle.inject_fault(kind="hang")
    with pytest.raises(BackendCrash, match="timed out after 30 s"):
        handle.get().run("x")
    handle.close()


def test_injected_crash_and_hang_without_kill_or_hang_methods() -> None:
    handle: BackendHandle[Flaky] = BackendHandle("flaky", Flaky)
    handle.inject_fault(2, kind="crash")
    with pytest.raises(BackendCrash, match="flaky: injected crash"):
        handle.get().run("x")
    assert call_with_blame(handle, lambda b: b.run("y")) == "Y", "the retry gets the real backend"
    handle.inject_fault(kind="hang")
    with pytest.raises(BackendCrash, match="did not answer within its timeout"):
        handle.get().run("z")
    assert handle.get().run("z") == "Z" and handle.pending_faults == 0
    with pytest.raises(ValueError, match="fault kind"):
        handle.inject_fault(kind="melt")  # type: ignore[arg-type]
    handle.close()


def test_kill_leaves_the_dead_backend_in_place() -> None:
    handle = browser_handle("test-kill")
    assert handle.kill() is False, "nothing runs yet"
    ctx = handle.get()
    assert handle.kill() is True and ctx.dead and handle.get() is ctx
    with pytest.raises(BackendCrash):
        ctx.run("x")
    handle.close()


def test_pickling_keeps_parent_and_on_acquire_but_no_backend() -> None:
    handle = browser_handle("test-pickle", on_acquire=functools.partial(print, end=""))
    handle.get()
    clone = pickle.loads(pickle.dumps(handle))
    assert clone.parent == handle.parent and clone.on_acquire is not None and not clone.active
    assert clone.generation == 0 and clone.get().browser is handle.get().browser, "one parent per process"
    clone.close()
    handle.close()


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
