"""A new task is one small class: a minimal env written against the contract passes Gymnasium's
strict checker on both interfaces, and its backend's failures take the documented paths."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from visrl_envs.core import AnswerFormat, BackendUnavailable, Outcome, ToolSet, VisualEnv
from visrl_envs.core.tools import answer_text


class Painter:
    """A stand-in backend: paints a frame of one grey level (module level, so the factory pickles)."""

    def paint(self, level: int) -> np.ndarray:
        return np.full((64, 64, 3), level, dtype=np.uint8)

    def close(self) -> None:
        pass


class BrighterHalfEnv(VisualEnv):
    """Which half of the image is brighter? (A) left or (B) right. Numeric: Discrete(2)."""

    family = "toy"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tools = ToolSet(answer=AnswerFormat("choice", "the brighter half", options=("A", "B")))
        self.painter = self.add_backend("painter", Painter)
        image = spaces.Box(0, 255, (64, 64, 3), dtype=np.uint8)
        self._set_spaces((64, 64, 3), spaces.Dict({"image": image}), spaces.Discrete(2))

    horizon = 2  # one retry after a malformed answer

    def _new_task(self, rng: np.random.Generator) -> None:
        left, right = (int(v) for v in rng.choice(256, size=2, replace=False))
        self.image = np.concatenate(
            [self.painter.get().paint(left)[:, :32], self.painter.get().paint(right)[:, 32:]], 1
        )
        self.truth, self.correct = int(right > left), False
        self.show(self.image)

    def _task_text(self) -> str:
        return "Which half of the image is brighter?\n(A) the left half\n(B) the right half"

    def _parse_text(self, text: Any) -> int:
        return "AB".index(self.tools.parse(text).value)

    def _action_text(self, action: int) -> str:
        return answer_text("AB"[action])

    def _apply(self, action: int, backend_result: Any) -> Outcome:
        self.painter.get()  # the step uses the backend too
        self.correct = action == self.truth
        return Outcome(
            {"accuracy": float(self.correct)}, terminated=True, feedback="Correct." if self.correct else "No."
        )

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        return {"image": self.image.copy()}

    def _score(self) -> float:
        return float(self.correct)

    def _render_frame(self) -> np.ndarray:
        return self.image.copy()

    def null_text(self) -> str:
        return answer_text("A")

    def oracle_text(self) -> str:
        return self._action_text(self.truth)

    def oracle_numeric(self) -> int:
        return self.truth


gym.register("visrl-test/BrighterHalf-v0", entry_point=BrighterHalfEnv, max_episode_steps=2)


@pytest.mark.parametrize("mode", ["text", "numeric"])
def test_a_small_class_is_a_full_env(mode: str) -> None:
    env = gym.make("visrl-test/BrighterHalf-v0", action_mode=mode, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
    obs, info = env.reset(seed=0)
    base = env.unwrapped
    _, reward, terminated, _, info = env.step(base.oracle_text() if mode == "text" else base.oracle_numeric())
    assert reward == 1.0 and terminated and info["success"]
    if mode == "text":
        assert obs["text"].startswith("Which half") and "<answer>A</answer>" in obs["text"]
        env.reset(seed=0)
        assert env.step("<answer>(c)</answer>")[-1]["action_error"] == "answer with one of A, B; got '(c)'"
    env.close()


def test_its_backend_failures_take_the_documented_paths() -> None:
    env = gym.make("visrl-test/BrighterHalf-v0")
    env.reset(seed=0)
    painter = env.unwrapped.backends["painter"]
    painter.inject_fault()
    *_, truncated, info = env.step("<answer>A</answer>")
    assert truncated and info["env_error"] == "painter: injected fault"
    painter.inject_fault(1)
    first = env.reset(seed=3)[0]["images"][0]
    assert np.array_equal(first, gym.make("visrl-test/BrighterHalf-v0").reset(seed=3)[0]["images"][0])
    painter.inject_fault(3)
    with pytest.raises(BackendUnavailable, match=r"painter failed 3 times while starting task \d+ of BrighterHalfEnv"):
        env.reset(seed=3)
    env.close()
