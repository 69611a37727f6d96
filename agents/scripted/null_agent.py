"""The null baseline: the well-formed action that changes nothing (text interface)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class NullAgent:
    """Sends each env's ``null_text()``: an empty SVG, ``done`` at once, the identity permutation,
    always choice (A). Its score is the floor a policy must beat before it has learned anything."""

    name = "null"

    def __init__(self) -> None:
        self.env: Any = None

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = env.unwrapped
        if self.env.action_mode != "text":
            raise ValueError("the null agent acts on the text interface")

    def act(self, observation: Any, info: dict[str, Any]) -> str:
        return self.env.null_text()
