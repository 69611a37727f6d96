"""Who is to blame: the errors every env sorts failures into (DESIGN.md section 3).

- :class:`ActionError`: the agent's output cannot be carried out (malformed, out of range, a program
  that does not render, an input that reproducibly crashes a backend). The env reports it as
  ``info["action_error"]`` with the format penalty, and the episode goes on.
- :class:`BackendError`: the machine failed (a dead worker, browser or compiler). The env reports it
  as ``info["env_error"]`` and truncates the episode; the next ``reset`` recovers.
- :class:`BackendCrash`: a backend died or hung on one input; whose fault that was is decided by
  retrying the input once on a fresh backend (:func:`visrl_envs.core.backend.call_with_blame`).
- :class:`BackendUnavailable`: a backend kept failing while ``reset`` set up an episode.
"""

from __future__ import annotations


class ActionError(ValueError):
    """Agent output that cannot be carried out; the message is shown to the agent next turn."""


class BackendError(RuntimeError):
    """An infrastructure failure (dead renderer, browser, worker): never the agent's fault.

    ``backend`` names the backend that failed (e.g. ``"svg renderer"``).
    """

    def __init__(self, message: str, backend: str = "") -> None:
        super().__init__(message)
        self.backend = backend


class BackendCrash(BackendError):
    """The backend died or hung while processing one input (blame decided by a retry)."""


class BackendUnavailable(RuntimeError):
    """A backend kept failing while an episode was being set up (raised by ``reset``)."""
