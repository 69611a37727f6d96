"""Who is to blame: the errors every env sorts failures into (DESIGN.md section 3).

- :class:`ActionError`: the agent's output cannot be carried out (malformed, out of range, a program
  that does not render, an input that reproducibly crashes a backend). The env reports it as
  ``info["action_error"]`` with the format penalty, and the episode goes on.
- :class:`BackendError`: the machine failed (a dead worker, browser or compiler). The env reports it
  as ``info["env_error"]`` and truncates the episode; the next ``reset`` recovers.
- :class:`BackendCrash`: a backend died or hung on one input; whose fault that was is decided by
  retrying the input once on a fresh backend (:func:`visrl_envs.core.backend.call_with_blame`).
- :class:`BackendUnavailable`: a backend kept failing while ``reset`` set up an episode.
- :class:`EnvContractError`: the env's own code broke the contract (an image of the wrong shape,
  more images than it declared): a bug in the family, raised where it happens.

A backend with a shared parent (one browser per process, a context per env) says which of the two
failed with ``scope``: ``"backend"`` (this env's own backend, e.g. its browser context) or
``"parent"`` (the shared resource, e.g. the browser process), so that recovery drops only what died.
"""

from __future__ import annotations

from typing import Literal

#: Which resource of a backend failed: the env's own backend, or the parent it shares with others.
FailureScope = Literal["backend", "parent"]


class ActionError(ValueError):
    """Agent output that cannot be carried out; the message is shown to the agent next turn."""


class BackendError(RuntimeError):
    """An infrastructure failure (dead renderer, browser, worker): never the agent's fault.

    ``backend`` names the backend that failed (e.g. ``"svg renderer"``); ``scope`` says whether the
    env's own backend or the parent it shares failed (see the module docstring).
    """

    def __init__(self, message: str, backend: str = "", *, scope: FailureScope = "backend") -> None:
        super().__init__(message)
        if scope not in ("backend", "parent"):
            raise ValueError(f"scope must be 'backend' or 'parent', got {scope!r}")
        self.backend = backend
        self.scope: FailureScope = scope


class BackendCrash(BackendError):
    """The backend died or hung while processing one input (blame decided by a retry)."""


class BackendUnavailable(RuntimeError):
    """A backend kept failing while an episode was being set up (raised by ``reset``)."""


class EnvContractError(TypeError):
    """The env's own code broke the contract (a bug in the family, not the agent's or the machine's
    fault): raised at the call that broke it, with a message naming the declaration to fix."""
