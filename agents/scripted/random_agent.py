"""Uniformly random well-formed actions, on either interface."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class RandomAgent:
    """Samples a uniformly random numeric action; in text mode it writes that action as text (so the
    random text agent never pays format penalties: it is the chance level of the task itself)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.env: Any = None

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = env.unwrapped
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, observation: Any, info: dict[str, Any]) -> Any:
        if self.env.action_mode == "text":
            return self.env.sample_text_action(self.rng)
        return self.env.sample_numeric_action(self.rng)
