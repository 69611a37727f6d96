"""Privileged scripted agents: they read the hidden task state through the env's oracle hooks.

They prove every env is solvable and give the upper baseline: SvgRender's text oracle writes the
hidden SVG; the Jigsaw oracle solves in the minimum number of swaps; the question oracles answer
the ground truth. SvgRender's numeric oracle is exact at difficulty 0 and a greedy search above.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class OracleAgent:
    name = "oracle"

    def __init__(self) -> None:
        self.env: Any = None

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = env.unwrapped

    def act(self, observation: Any, info: dict[str, Any]) -> Any:
        if self.env.action_mode == "text":
            return self.env.oracle_text()
        return self.env.oracle_numeric()
