"""The agent protocol shared by scripted, SB3 and VLM agents."""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym


class Agent(Protocol):
    """Acts in one env at a time. ``reset`` is called after every ``env.reset``."""

    name: str

    def reset(self, env: gym.Env, seed: int | None = None) -> None: ...

    def act(self, observation: Any, info: dict[str, Any]) -> Any: ...
