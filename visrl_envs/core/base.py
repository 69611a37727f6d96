"""The contract every visrl env shares.

:class:`VisualEnv` owns ``reset``/``step``, both interfaces (text and numeric), the episode horizon,
error capture, ``info`` assembly, seeding, train/test splits and rendering. A family implements a
few hooks: draw a task from an rng, parse or decode one action, apply it, observe, score.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from visrl_envs.core.rewards import format_gate
from visrl_envs.core.text import MAX_ACTION_CHARS, MAX_ACTION_TEXT, MAX_OBSERVATION_TEXT, text_space, to_charset
from visrl_envs.core.tools import ActionError, ToolSet

ActionMode = Literal["text", "numeric"]
Split = Literal["train", "test"]

#: Task seeds of each split: disjoint halves of the 32-bit range.
SPLIT_SEED_RANGES: dict[str, tuple[int, int]] = {"train": (0, 2**31), "test": (2**31, 2**32)}
MAX_DIFFICULTY = 3


class BackendError(RuntimeError):
    """An infrastructure failure (dead renderer, browser, worker): never the agent's fault."""


@dataclass
class Outcome:
    """What applying one action did: reward terms by name, termination and feedback text."""

    reward_terms: dict[str, float] = field(default_factory=dict)
    terminated: bool = False
    feedback: str = ""


class VisualEnv(gym.Env[dict[str, Any], Any]):
    """Base of every visrl env. Subclasses set ``family`` and implement the hooks below.

    Arguments common to every env:
        action_mode: ``"text"`` (observation ``{"image", "text"}``, action a string) or ``"numeric"``
            (Dict of uint8 images and vectors; Discrete/MultiDiscrete/Box actions).
        difficulty: 0 (easiest) to 3.
        split: ``"train"`` or ``"test"``; their task seeds are disjoint.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"`` (a pygame window).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 4}  # noqa: RUF012 - gymnasium's convention
    family: ClassVar[str] = ""
    #: Reward term added for a malformed or invalid action (RAGEN/GEM convention: -0.1).
    format_penalty: ClassVar[float] = -0.1

    def __init__(
        self,
        action_mode: ActionMode = "text",
        difficulty: int = 0,
        split: Split = "train",
        render_mode: str | None = None,
    ) -> None:
        if action_mode not in ("text", "numeric"):
            raise ValueError(f"action_mode must be 'text' or 'numeric', got {action_mode!r}")
        if not isinstance(difficulty, int | np.integer) or not 0 <= difficulty <= MAX_DIFFICULTY:
            raise ValueError(f"difficulty must be an integer in 0..{MAX_DIFFICULTY}, got {difficulty!r}")
        if split not in SPLIT_SEED_RANGES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.action_mode: ActionMode = action_mode
        self.difficulty = int(difficulty)
        self.split: Split = split
        self.render_mode = render_mode
        self.task_seed: int | None = None
        self.turn = 0
        self._needs_reset = True
        self._display: Any = None
        self._last_obs: dict[str, Any] | None = None

    # -- hooks ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def horizon(self) -> int:
        """Steps after which the current episode is truncated."""

    @abstractmethod
    def _new_task(self, rng: np.random.Generator) -> None:
        """Draw a new task (all randomness from ``rng``) and set the initial state."""

    @abstractmethod
    def _prompt(self) -> str:
        """First-turn text: the task, the tools and their ranges, the image frame."""

    def _parse_text(self, text: str) -> Any:
        """Agent text -> a typed action; raise :class:`ActionError` when malformed."""
        return self.tools.parse(text)

    @abstractmethod
    def _decode_numeric(self, action: Any) -> Any:
        """Numeric action -> the same typed action the text parser produces."""

    @abstractmethod
    def _apply(self, action: Any) -> Outcome:
        """Carry out a typed action; raise :class:`ActionError` (agent's fault) or :class:`BackendError`."""

    @abstractmethod
    def _text_image(self) -> np.ndarray:
        """The image of this turn's text observation (uint8 HxWx3, a fresh array)."""

    @abstractmethod
    def _numeric_observation(self) -> dict[str, np.ndarray]:
        """The numeric observation (fresh arrays)."""

    @abstractmethod
    def _score(self) -> float:
        """The task metric of the current state, in [0, 1]."""

    @abstractmethod
    def _success(self) -> bool:
        """Whether the task is solved in the current state."""

    @abstractmethod
    def _render_frame(self) -> np.ndarray:
        """A frame for ``render()`` (uint8 HxWx3)."""

    def _close_backends(self) -> None:
        """Release renderers, workers, browsers (idempotent)."""

    @abstractmethod
    def _action_text(self, action: Any) -> str:
        """The text form of a typed action (what an agent would write to do the same)."""

    @abstractmethod
    def null_text(self) -> str:
        """The well-formed text action that changes nothing (the null baseline): its score is the
        floor of the task metric, e.g. a blank SVG's similarity to the target."""

    @abstractmethod
    def oracle_text(self) -> str:
        """The text action an all-knowing agent sends now (scripted baselines; proves solvability)."""

    @abstractmethod
    def oracle_numeric(self) -> Any:
        """The numeric action an all-knowing (or, where noted, greedy) agent sends now."""

    def _numeric_integers(self, action: Any) -> int | tuple[int, ...]:
        """Validate a Discrete or MultiDiscrete action against ``numeric_action_space``: an int, or a
        tuple of ints; raises :class:`ActionError` with a readable message otherwise."""
        space = self.numeric_action_space
        if isinstance(space, spaces.Discrete):
            try:
                k = int(action)
            except (TypeError, ValueError):
                raise ActionError(f"numeric action must be an integer, got {action!r}") from None
            if not space.start <= k < space.start + space.n:
                raise ActionError(f"numeric action must be in [{space.start}, {space.start + space.n}), got {k}")
            return k
        assert isinstance(space, spaces.MultiDiscrete)
        values = np.asarray(action).reshape(-1)
        if values.shape != (space.nvec.size,) or values.dtype.kind not in "iu":
            raise ActionError(f"numeric action must be {space.nvec.size} integers")
        decoded = tuple(values.tolist())
        if not all(0 <= v < n for v, n in zip(decoded, space.nvec.tolist(), strict=True)):
            raise ActionError(f"numeric action out of range: {list(decoded)} vs {space.nvec.tolist()}")
        return decoded

    # -- sampling (random agents, tests) -----------------------------------------------------------
    def sample_numeric_action(self, rng: np.random.Generator) -> Any:
        """A uniformly random numeric action drawn from ``rng``."""
        space = self.numeric_action_space
        if isinstance(space, spaces.Discrete):
            return np.int64(space.start + rng.integers(space.n))
        if isinstance(space, spaces.MultiDiscrete):
            return (rng.random(space.nvec.shape) * space.nvec).astype(space.dtype)
        if isinstance(space, spaces.Box):
            return rng.uniform(space.low, space.high).astype(space.dtype)
        raise TypeError(f"numeric action spaces are Discrete, MultiDiscrete or Box; got {space}")

    def sample_text_action(self, rng: np.random.Generator) -> str:
        """A well-formed random text action: a random numeric action written as text."""
        return self._action_text(self._decode_numeric(self.sample_numeric_action(rng)))

    tools: ToolSet = ToolSet([])

    # -- spaces ------------------------------------------------------------------------------
    def _set_spaces(
        self, text_image_shape: tuple[int, int, int], numeric_observation: spaces.Dict, numeric_action: spaces.Space
    ) -> None:
        self.numeric_action_space = numeric_action
        if self.action_mode == "text":
            self.observation_space = spaces.Dict(
                {
                    "image": spaces.Box(0, 255, text_image_shape, dtype=np.uint8),
                    "text": text_space(MAX_OBSERVATION_TEXT),
                }
            )
            self.action_space = text_space(MAX_ACTION_TEXT)
        else:
            self.observation_space = numeric_observation
            self.action_space = numeric_action

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict]:
        """Start an episode. ``options={"task_seed": k}`` replays task ``k`` of this split."""
        super().reset(seed=seed)
        low, high = SPLIT_SEED_RANGES[self.split]
        task_seed = (options or {}).get("task_seed")
        if task_seed is None:
            task_seed = low + int(self.np_random.integers(0, high - low))
        elif not low <= int(task_seed) < high:
            raise ValueError(f"task_seed {task_seed} is outside the {self.split} split's range [{low}, {high})")
        self.task_seed = int(task_seed)
        self.turn = 0
        self._new_task(np.random.default_rng(self.task_seed))
        self._needs_reset = False
        obs = self._observe(self._prompt())
        info = self._info({}, None, None)
        if self.render_mode == "human":
            self.render()
        return obs, info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict]:
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step(), and again after an episode ends")
        self.turn += 1
        action_error: str | None = None
        env_error: str | None = None
        terminated = truncated = False
        try:
            if self.action_mode == "text" and isinstance(action, str) and len(action) > MAX_ACTION_CHARS:
                raise ActionError(f"the action has {len(action)} characters; the limit is {MAX_ACTION_CHARS}")
            typed = self._parse_text(action) if self.action_mode == "text" else self._decode_numeric(action)
            outcome = self._apply(typed)
        except ActionError as err:
            action_error = str(err)
            outcome = Outcome({"format": self.format_penalty}, feedback=f"Error: {action_error}")
        except BackendError as err:
            env_error = str(err) or type(err).__name__
            outcome = Outcome({}, feedback=f"Environment error (not your fault): {env_error}")
            truncated = True
        terminated = outcome.terminated
        if not terminated and self.turn >= self.horizon:
            truncated = True
        self._needs_reset = terminated or truncated
        feedback = outcome.feedback
        if not self._needs_reset and self.action_mode == "text":
            feedback = f"{feedback}\nTurn {self.turn + 1} of {self.horizon}.".strip()
        if env_error is not None and self._last_obs is not None:
            obs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._last_obs.items()}
            if self.action_mode == "text":
                obs["text"] = to_charset(feedback)
        else:
            obs = self._observe(feedback)
        reward = format_gate(action_error is None, sum(outcome.reward_terms.values()), self.format_penalty)
        info = self._info(outcome.reward_terms, action_error, env_error)
        if self.render_mode == "human":
            self.render()
        return obs, reward, terminated, truncated, info

    def _observe(self, text: str) -> dict[str, Any]:
        if self.action_mode == "text":
            obs: dict[str, Any] = {"image": self._text_image(), "text": to_charset(text)}
        else:
            obs = self._numeric_observation()
        self._last_obs = obs
        return obs

    def _info(self, terms: dict[str, float], action_error: str | None, env_error: str | None) -> dict[str, Any]:
        return {
            "success": bool(self._success()) if env_error is None else False,
            "score": float(self._score()) if env_error is None else 0.0,
            "reward_terms": {k: float(v) for k, v in terms.items()},
            "action_error": action_error,
            "env_error": env_error,
            "task_seed": self.task_seed,
            "turn": self.turn,
        }

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to make()")
            return None
        if self._needs_reset and self.task_seed is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        frame = self._render_frame()
        if self.render_mode == "rgb_array":
            return frame
        if self._display is None:
            from visrl_envs.core.display import HumanDisplay

            self._display = HumanDisplay(title=f"visrl {type(self).__name__}", fps=self.metadata["render_fps"])
        self._display.show(frame)
        return None

    def close(self) -> None:
        if self._display is not None:
            self._display.close()
            self._display = None
        self._close_backends()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_display"] = None
        return state
