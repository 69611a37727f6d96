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
        self.rng = self._rng(seed)
        self.env: Any = None

    @staticmethod
    def _rng(seed: int) -> np.random.Generator:
        # Not default_rng(seed): gymnasium seeds the env's np_random the same way, so with the same
        # episode seed the agent's draws would be the very stream the env drew its task from.
        return np.random.default_rng([0x5EED_A6E7, seed])

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = env.unwrapped
        if seed is not None:
            self.rng = self._rng(seed)

    def act(self, observation: Any, info: dict[str, Any]) -> Any:
        if self.env.action_mode == "text":
            return self.env.sample_text_action(self.rng)
        return self.env.sample_numeric_action(self.rng)
