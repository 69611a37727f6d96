"""Backends (renderers, compilers, browsers, physics worlds) and the errors that blame them.

An env owns its backends through :class:`BackendHandle`\\ s. A handle

- creates its backend lazily, in the process that first calls :meth:`~BackendHandle.get`
  (Gymnasium's ``AsyncVectorEnv`` builds one env in the parent before forking its workers: a GL
  context, a browser or a worker pipe made there deadlocks or leaks in the children);
- may build it from a :class:`SharedParent`: one resource per process (a Chromium) shared by every
  handle naming the same key, each handle's backend a child made from it (a browser context per
  env); the parent is closed with its last handle;
- closes it on :meth:`~BackendHandle.close` (idempotent), or drops a broken one on
  :meth:`~BackendHandle.discard`: only this handle's backend (``scope="backend"``, the default: the
  siblings keep theirs) or the shared parent (``scope="parent"``: every sibling's child died with it,
  and each rebuilds its own on its next ``get()``);
- counts the backends it built (:attr:`~BackendHandle.generation`) and calls ``on_acquire(backend)``
  after building each one, so an env whose backend holds episode state (a page, a job directory)
  restores that state on a rebuilt backend before it is used;
- can be told to fail, for tests: :meth:`~BackendHandle.inject_fault` with a kind (below).

Pickling. What travels with a handle: its name, factory, parent spec and ``on_acquire`` callback.
What never travels: the backend itself (nor the parent). An unpickled or forked handle starts its
own backend on first use (a forked child leaves the inherited one to its owner), and calls
``on_acquire`` on it like on any rebuilt backend: that is how an env pickled mid-episode restores a
stateful backend (see ``VisualEnv.add_backend(stateful=True)``).

Fault kinds (``handle.inject_fault(times, kind, scope)``; each fires once per later ``get()``):

- ``"error"``: ``get()`` raises :class:`BackendError` (the backend cannot be had at all);
- ``"crash"``: the backend dies mid-call. A backend (or parent) with a ``kill()`` method is killed
  for real, so its own crash detection runs; otherwise the next method call made on what ``get()``
  returned raises :class:`BackendCrash`;
- ``"hang"``: the next call runs past its timeout. A backend with a ``hang()`` method hangs for real
  (its own timeout fires); otherwise the next method call raises :class:`BackendCrash` saying it
  timed out.

Blame (DESIGN.md section 3): :class:`BackendError` is a failure of the machine, reported as
``info["env_error"]``. :class:`BackendCrash` is the backend dying on one particular input; whether
the input or the machine is at fault is decided by :func:`call_with_blame`, which retries the input
once on a fresh backend (restored first, when it is stateful): a crash that recurs is the agent's
(an ``ActionError``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from visrl_envs.core.errors import (
    ActionError,
    BackendCrash,
    BackendError,
    BackendUnavailable,
    FailureScope,
)

FaultKind = Literal["error", "crash", "hang"]
FAULT_KINDS: tuple[FaultKind, ...] = ("error", "crash", "hang")


class Backend(Protocol):
    """What a handle needs of a backend: a way to release it.

    Optional, used by fault injection when present: ``kill()`` (die now, as a crash would: the next
    call finds the backend dead) and ``hang()`` (the next call hangs until its timeout fires)."""

    def close(self) -> None: ...


B = TypeVar("B", bound=Backend)


@dataclass(frozen=True)
class SharedParent:
    """A resource shared by every handle of a process that names the same ``key`` (one Chromium per
    process). ``factory`` builds it (picklable: a class or a ``functools.partial``)."""

    key: Hashable
    factory: Callable[[], Any]


@dataclass
class _ParentEntry:
    pid: int
    backend: Any
    refs: int
    generation: int


_PARENTS: dict[Hashable, _ParentEntry] = {}
_PARENTS_LOCK = threading.Lock()
_parent_generation = 0


@dataclass(frozen=True)
class _Fault:
    kind: FaultKind
    scope: FailureScope


class _Faulty:
    """What ``get()`` returns for an injected crash or hang on a backend that cannot really die or
    hang: its next method call raises :class:`BackendCrash`, its attributes are the backend's."""

    def __init__(self, backend: Any, message: str, name: str, scope: FailureScope) -> None:
        self._backend, self._message, self._name, self._scope = backend, message, name, scope

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._backend, attr)
        if not callable(value):
            return value

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise BackendCrash(self._message, self._name, scope=self._scope)

        return fail


class BackendHandle(Generic[B]):
    """Lazy, per-process, closable ownership of one backend, optionally the child of a shared parent
    (see the module docstring).

    ``factory`` builds the backend: ``factory()``, or ``factory(parent)`` with a ``parent``. It is
    pickled with the env, so give a class or a ``functools.partial`` of a module-level function, not
    a lambda. ``on_acquire(backend)`` runs after each backend is built (a :class:`BackendError` it
    raises discards that backend and propagates from ``get()``).
    """

    def __init__(
        self,
        name: str,
        factory: Callable[..., B],
        *,
        parent: SharedParent | None = None,
        on_acquire: Callable[[B], None] | None = None,
    ) -> None:
        self.name = name
        self.factory = factory
        self.parent = parent
        self.on_acquire = on_acquire
        self._backend: B | None = None
        self._pid = -1
        self._parent_generation = -1
        self._faults: list[_Fault] = []
        #: How many backends this handle has built (1 after the first ``get()``; +1 per rebuild).
        self.generation = 0

    # -- access ---------------------------------------------------------------------------------
    def get(self) -> B:
        """The backend, created on first use in this process. Raises :class:`BackendError` when an
        injected fault is pending or the factory (or ``on_acquire``) fails."""
        if self._faults and self._faults[0].kind == "error":
            fault = self._faults.pop(0)
            raise BackendError(f"{self.name}: injected fault", self.name, scope=fault.scope)
        backend = self._backend if self.active else self._acquire()
        if self._faults:
            return self._arm(backend, self._faults.pop(0))
        return backend  # type: ignore[return-value]

    @property
    def active(self) -> bool:
        """Whether a live backend is held for this handle in this process (for a child: built from
        the parent that is current now)."""
        if self._backend is None or self._pid != os.getpid():
            return False
        if self.parent is None:
            return True
        entry = _PARENTS.get(self.parent.key)
        return entry is not None and entry.pid == self._pid and entry.generation == self._parent_generation

    def peek(self) -> B | None:
        """The backend if one is running in this process (never creates one, never fails)."""
        return self._backend if self.active else None

    @property
    def created(self) -> int:
        """Backends this handle has built (the same as :attr:`generation`)."""
        return self.generation

    def _acquire(self) -> B:
        pid = os.getpid()
        if self._pid != pid:  # inherited across fork or unpickled: the old backend is not ours to close
            self._backend, self._parent_generation = None, -1
        parent_backend: Any = None
        if self.parent is not None:
            parent_backend, stale = self._join_parent(pid)
            if stale is not None:  # made from a parent that is gone: it died with it, release what is left
                with contextlib.suppress(Exception):
                    stale.close()
        if self._backend is None:
            try:
                backend = self.factory(parent_backend) if self.parent is not None else self.factory()
            except BackendError:
                raise
            except Exception as err:
                raise BackendError(f"{self.name} could not be started: {type(err).__name__}: {err}", self.name) from err
            self._backend, self._pid = backend, pid
            self.generation += 1
            if self.on_acquire is not None:
                try:
                    self.on_acquire(backend)
                except BackendError:
                    self.discard()
                    raise
        return self._backend  # type: ignore[return-value]

    def _join_parent(self, pid: int) -> tuple[Any, Any]:
        """The current parent of this process (built if there is none), counting this handle in, and
        this handle's stale child (made from a parent that is gone), if it had one."""
        global _parent_generation
        assert self.parent is not None
        with _PARENTS_LOCK:
            entry = _PARENTS.get(self.parent.key)
            if entry is not None and entry.pid != pid:
                entry = None  # a parent's parent, inherited across fork: leave it alone
            if entry is None:
                try:
                    built = self.parent.factory()
                except BackendError:
                    raise
                except Exception as err:
                    raise BackendError(
                        f"{self.name}'s shared parent could not be started: {type(err).__name__}: {err}",
                        self.name,
                        scope="parent",
                    ) from err
                _parent_generation += 1
                entry = _PARENTS[self.parent.key] = _ParentEntry(pid, built, 0, _parent_generation)
            stale = None
            if self._parent_generation != entry.generation:
                stale, self._backend = self._backend, None
                entry.refs += 1
                self._parent_generation = entry.generation
            return entry.backend, stale

    def _arm(self, backend: Any, fault: _Fault) -> Any:
        """Make an injected crash or hang happen on ``backend`` (or its parent)."""
        target = backend
        if fault.scope == "parent" and self.parent is not None:
            entry = _PARENTS.get(self.parent.key)
            target = entry.backend if entry is not None else backend
        method = "kill" if fault.kind == "crash" else "hang"
        if callable(getattr(target, method, None)):
            getattr(target, method)()
            return backend
        message = "injected crash" if fault.kind == "crash" else "did not answer within its timeout (injected hang)"
        return _Faulty(backend, f"{self.name}: {message}", self.name, fault.scope)

    # -- faults and kills (tests, the reliability checks) ----------------------------------------
    def inject_fault(self, times: int = 1, kind: FaultKind = "error", scope: FailureScope = "backend") -> None:
        """Make the next ``times`` calls of :meth:`get` fail in the way ``kind`` says (module
        docstring); ``scope="parent"`` aims crashes and hangs at the shared parent. ``times=0``
        clears pending faults."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
        if scope not in ("backend", "parent"):
            raise ValueError(f"scope must be 'backend' or 'parent', got {scope!r}")
        self._faults = [_Fault(kind, scope)] * int(times)

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    def kill(self, scope: FailureScope = "backend") -> bool:
        """Kill the running backend (or its shared parent) abruptly with its ``kill()``, as a crash
        would; the handle still holds it, so the next call finds it dead. Returns whether anything
        was killed (``False`` when nothing runs or the backend has no ``kill()``)."""
        target: Any = self.peek()
        if scope == "parent" and self.parent is not None and target is not None:
            entry = _PARENTS.get(self.parent.key)
            target = entry.backend if entry is not None else None
        if target is None or not callable(getattr(target, "kill", None)):
            return False
        target.kill()
        return True

    # -- release --------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend (idempotent); a shared parent is closed with its last handle."""
        backend, self._backend = self._backend, None
        pid, self._pid = self._pid, -1
        if pid != os.getpid():
            self._parent_generation = -1
            return
        current = self.parent is None or self._current_parent_entry(pid) is not None
        if backend is not None:
            if current:
                backend.close()
            else:  # made from a parent that is gone: it died with it
                with contextlib.suppress(Exception):
                    backend.close()
        self._leave_parent(pid)

    def discard(self, scope: FailureScope = "backend") -> None:
        """Drop a backend that failed, so the next :meth:`get` starts a fresh one. ``scope="backend"``
        drops this handle's own backend only (siblings keep theirs, and a shared parent lives on);
        ``scope="parent"`` closes the shared parent too, for every sibling."""
        backend, self._backend = self._backend, None
        pid = self._pid
        if backend is not None and pid == os.getpid():
            with contextlib.suppress(Exception):  # it is broken: closing it may fail too
                backend.close()
        if scope == "parent" and self.parent is not None and pid == os.getpid():
            to_close = None
            with _PARENTS_LOCK:
                entry = _PARENTS.get(self.parent.key)
                if entry is not None and entry.pid == pid:
                    del _PARENTS[self.parent.key]
                    to_close = entry.backend
            self._parent_generation = -1
            if to_close is not None:
                with contextlib.suppress(Exception):
                    to_close.close()

    def _current_parent_entry(self, pid: int) -> _ParentEntry | None:
        if self.parent is None:
            return None
        entry = _PARENTS.get(self.parent.key)
        if entry is not None and entry.pid == pid and entry.generation == self._parent_generation:
            return entry
        return None

    def _leave_parent(self, pid: int) -> None:
        if self.parent is None:
            return
        to_close = None
        with _PARENTS_LOCK:
            entry = self._current_parent_entry(pid)
            if entry is not None:
                entry.refs -= 1
                if entry.refs <= 0:
                    del _PARENTS[self.parent.key]
                    to_close = entry.backend
        self._parent_generation = -1
        if to_close is not None:
            to_close.close()

    # -- pickling: the backend never travels ------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "factory": self.factory, "parent": self.parent, "on_acquire": self.on_acquire}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["name"], state["factory"], parent=state["parent"], on_acquire=state["on_acquire"]
        )

    def __repr__(self) -> str:
        state = "running" if self.active else "idle"
        shared = f", child of {self.parent.key!r}" if self.parent is not None else ""
        return f"BackendHandle({self.name!r}, {state}{shared}, generation {self.generation})"


def shared_parent_running(key: Hashable) -> bool:
    """Whether this process holds a live shared parent under ``key`` (tests, diagnostics)."""
    entry = _PARENTS.get(key)
    return entry is not None and entry.pid == os.getpid()


T = TypeVar("T")


def call_with_blame(handle: BackendHandle[B], call: Callable[[B], T], what: str = "your input") -> T:
    """Run ``call(backend)``, deciding blame for a crash: on :class:`BackendCrash` what died (the
    backend, or its shared parent: the crash's ``scope``) is discarded and the same input retried
    once on a fresh backend, which a stateful env has restored first (``on_acquire``). A second
    crash means the input itself kills the backend, so it is the agent's fault
    (:class:`ActionError`); other :class:`BackendError`\\ s (the machine) propagate."""
    try:
        return call(handle.get())
    except BackendCrash as first:
        handle.discard(first.scope)
        try:
            return call(handle.get())
        except BackendCrash as second:
            handle.discard(second.scope)
            raise ActionError(
                f"{what} made the {handle.name} fail twice ({first}; then {second}); simplify it"
            ) from second


__all__ = [
    "FAULT_KINDS",
    "Backend",
    "BackendCrash",
    "BackendError",
    "BackendHandle",
    "BackendUnavailable",
    "FaultKind",
    "SharedParent",
    "call_with_blame",
    "shared_parent_running",
]
