"""Backends (renderers, compilers, browsers, physics worlds) and the errors that blame them.

An env owns its backends through :class:`BackendHandle`s. A handle

- creates its backend lazily, in the process that first calls :meth:`~BackendHandle.get`
  (Gymnasium's ``AsyncVectorEnv`` builds one env in the parent before forking its workers: a GL
  context, a browser or a worker pipe made there deadlocks or leaks in the children);
- is never pickled with its backend (an unpickled or forked env starts its own);
- closes it on :meth:`~BackendHandle.close` (idempotent), or drops a broken one on
  :meth:`~BackendHandle.discard` so the next ``get()`` starts afresh;
- optionally shares one backend among all handles of a process that use the same ``share_key``
  (one Chromium per process, a context per env), closing it when the last handle closes;
- can be told to fail: ``handle.inject_fault(times)`` makes the next ``times`` calls of ``get()``
  raise :class:`BackendError`, so tests reach the env-error and reset-retry paths of every backend.

Blame (DESIGN.md section 3): :class:`BackendError` is a failure of the machine, reported as
``info["env_error"]``. :class:`BackendCrash` is the backend dying on one particular input; whether
the input or the machine is at fault is decided by :func:`call_with_blame`, which retries the input
once on a fresh backend: a crash that recurs is the agent's (an ``ActionError``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from visrl_envs.core.errors import ActionError, BackendCrash, BackendError, BackendUnavailable


class Backend(Protocol):
    """What a handle needs of a backend: a way to release it."""

    def close(self) -> None: ...


B = TypeVar("B", bound=Backend)


@dataclass
class _Shared:
    pid: int
    backend: Any
    refs: int
    generation: int


_SHARED: dict[Hashable, _Shared] = {}
_SHARED_LOCK = threading.Lock()
_generation = 0


class BackendHandle(Generic[B]):
    """Lazy, per-process, closable, optionally shared ownership of one backend (see module doc).

    ``factory`` builds the backend; it is pickled with the env, so give a class or a
    ``functools.partial`` of a module-level function, not a lambda.
    """

    def __init__(self, name: str, factory: Callable[[], B], *, share_key: Hashable | None = None) -> None:
        self.name = name
        self.factory = factory
        self.share_key = share_key
        self._backend: B | None = None
        self._pid = -1
        self._generation = -1
        self._faults = 0
        self.created = 0  # backends this handle has started (tests, diagnostics)

    # -- access ---------------------------------------------------------------------------------
    def get(self) -> B:
        """The backend, created on first use in this process. Raises :class:`BackendError` when an
        injected fault is pending or the factory fails."""
        if self._faults > 0:
            self._faults -= 1
            raise BackendError(f"{self.name}: injected fault", self.name)
        if (
            self._backend is not None
            and self._pid == os.getpid()
            and (self.share_key is None or self._current_shared())
        ):
            return self._backend
        return self._acquire()

    @property
    def active(self) -> bool:
        """Whether a backend is running for this handle in this process."""
        return self._backend is not None and self._pid == os.getpid()

    def peek(self) -> B | None:
        """The backend if one is running in this process (never creates one, never fails)."""
        return self._backend if self.active else None

    def inject_fault(self, times: int = 1) -> None:
        """Make the next ``times`` calls of :meth:`get` raise :class:`BackendError` (for tests)."""
        self._faults = int(times)

    @property
    def pending_faults(self) -> int:
        return self._faults

    def _current_shared(self) -> bool:
        entry = _SHARED.get(self.share_key)
        return entry is not None and entry.generation == self._generation and entry.pid == self._pid

    def _acquire(self) -> B:
        global _generation
        pid = os.getpid()
        if self._pid != pid:  # inherited across fork or unpickled: the old backend is not ours to close
            self._backend, self._generation = None, -1
        if self.share_key is None:
            if self._backend is None:
                self._backend = self._build()
                self._pid = pid
            return self._backend
        with _SHARED_LOCK:
            entry = _SHARED.get(self.share_key)
            if entry is not None and entry.pid != pid:
                entry = None  # a parent's backend: leave it alone
            if entry is None:
                _generation += 1
                entry = _SHARED[self.share_key] = _Shared(pid, self._build(), 0, _generation)
            if self._generation != entry.generation:
                entry.refs += 1
                self._generation = entry.generation
            self._backend, self._pid = entry.backend, pid
            return self._backend  # type: ignore[no-any-return]

    def _build(self) -> B:
        try:
            backend = self.factory()
        except BackendError:
            raise
        except Exception as err:
            raise BackendError(f"{self.name} could not be started: {type(err).__name__}: {err}", self.name) from err
        self.created += 1
        return backend

    # -- release --------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend (idempotent); a shared one is closed with its last handle."""
        backend, self._backend = self._backend, None
        if backend is None or self._pid != os.getpid():
            self._generation = -1
            return
        if self.share_key is None:
            backend.close()
            return
        to_close = None
        with _SHARED_LOCK:
            entry = _SHARED.get(self.share_key)
            if entry is not None and entry.generation == self._generation and entry.pid == self._pid:
                entry.refs -= 1
                if entry.refs <= 0:
                    del _SHARED[self.share_key]
                    to_close = entry.backend
        self._generation = -1
        if to_close is not None:
            to_close.close()

    def discard(self) -> None:
        """Close a backend that failed, so the next :meth:`get` starts a fresh one. A shared backend
        is closed for every handle sharing it (they re-acquire a new one on their next call)."""
        if self.share_key is None or not self.active:
            self.close()
            return
        to_close = None
        with _SHARED_LOCK:
            entry = _SHARED.get(self.share_key)
            if entry is not None and entry.generation == self._generation and entry.pid == self._pid:
                del _SHARED[self.share_key]
                to_close = entry.backend
        self._backend, self._generation = None, -1
        if to_close is not None:
            to_close.close()

    # -- pickling: the backend never travels ------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "factory": self.factory, "share_key": self.share_key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["factory"], share_key=state["share_key"])  # type: ignore[misc]

    def __repr__(self) -> str:
        state = "running" if self.active else "idle"
        shared = f", shared as {self.share_key!r}" if self.share_key is not None else ""
        return f"BackendHandle({self.name!r}, {state}{shared})"


T = TypeVar("T")


def call_with_blame(handle: BackendHandle[B], call: Callable[[B], T], what: str = "your input") -> T:
    """Run ``call(backend)``, deciding blame for a crash: on :class:`BackendCrash` the backend is
    discarded and the same input retried once on a fresh one. A second crash means the input itself
    kills the backend, so it is the agent's fault (:class:`ActionError`); other
    :class:`BackendError`\\ s (the machine) propagate."""
    try:
        return call(handle.get())
    except BackendCrash as first:
        handle.discard()
        try:
            return call(handle.get())
        except BackendCrash as second:
            handle.discard()
            raise ActionError(
                f"{what} made the {handle.name} fail twice ({first}; then {second}); simplify it"
            ) from second


__all__ = [
    "Backend",
    "BackendCrash",
    "BackendError",
    "BackendHandle",
    "BackendUnavailable",
    "call_with_blame",
]
