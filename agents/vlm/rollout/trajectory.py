"""A recorded multi-turn episode of a VLM policy, token-exact, ready for a trainer.

Layout (the convention of TRL's multi-turn ``rollout_func`` and verl's agent loop): the first
prompt's ids, then one flat completion side that interleaves the model's tokens with the env's::

    prompt_ids | model turn 1 | env tokens (separator, feedback turn, generation prompt) | model turn 2 | ...
    mask:          1 ... 1      0 ... 0                                                    1 ... 1
    logprobs:      lp ... lp    0 ... 0                                                    lp ... lp

``images`` grows with the conversation: the images the ids' image pads stand for, in order, as the
env produced them (uint8 HxWx3). The ids are never re-tokenised from text, so what a trainer scores
is exactly what the policy generated and saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.vlm.policies.policy import Message, TokenPrompt

#: Why a trajectory ended.
FINISH_REASONS = ("terminated", "truncated", "turn_limit", "token_limit", "env_error")


@dataclass
class Step:
    """One env step: the model's text, what the env returned, and where the turn sits in the ids."""

    action: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]  # JSON-safe: score, success, reward_terms, action_error, env_error, turn
    feedback: str  # the env's text after the step ("" on the last step)
    feedback_images: int  # how many images the env added after the step
    model_span: tuple[int, int] = (0, 0)  # [start, end) of this turn's model tokens in completion_ids
    finished_turn: bool = True  # False: the turn was cut at max_new_tokens


@dataclass
class Trajectory:
    """One episode of one group member. Group members share ``env_id``, ``task_seed`` and ``group``."""

    env_id: str
    task_seed: int
    group: int
    member: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    prompt_spec: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)  # image parts hold {"type": "image", "index": k}
    tools: list[dict[str, Any]] | None = None
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    prompt_images: int = 0  # how many of ``images`` the prompt ids hold
    steps: list[Step] = field(default_factory=list)
    finish: str = ""  # one of FINISH_REASONS once ended
    env_error: str | None = None
    policy: str = ""

    @property
    def done(self) -> bool:
        return bool(self.finish)

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.steps]

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def score(self) -> float:
        """The env's final score (0 after an env error, which is flagged, not the model's fault)."""
        return float(self.steps[-1].info.get("score", 0.0)) if self.steps else 0.0

    @property
    def success(self) -> bool:
        return bool(self.steps[-1].info.get("success", False)) if self.steps else False

    @property
    def ids(self) -> list[int]:
        """The whole sequence: prompt then completion side."""
        return self.prompt_ids + self.completion_ids

    def sequence(self) -> TokenPrompt:
        """The whole sequence with all its images (what re-scoring feeds the model)."""
        return TokenPrompt(self.ids, list(self.images))

    def model_tokens(self) -> int:
        return int(sum(self.mask))

    def append(self, ids: list[int], mask_value: int, logprobs: list[float] | None = None) -> None:
        """Add ids to the completion side: model tokens (``mask_value=1``, with their logprobs) or env tokens."""
        if mask_value not in (0, 1):
            raise ValueError(f"mask value must be 0 or 1, got {mask_value}")
        if logprobs is not None and len(logprobs) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(logprobs)} logprobs")
        self.completion_ids += ids
        self.mask += [mask_value] * len(ids)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)

    def check(self) -> None:
        """Raise if the parallel lists disagree (lengths, mask values, finish reason)."""
        n = len(self.completion_ids)
        if len(self.mask) != n or len(self.logprobs) != n:
            raise ValueError(f"completion ids {n}, mask {len(self.mask)}, logprobs {len(self.logprobs)}")
        if self.finish and self.finish not in FINISH_REASONS:
            raise ValueError(f"unknown finish reason {self.finish!r}; known: {FINISH_REASONS}")
        if self.prompt_images > len(self.images):
            raise ValueError(f"prompt holds {self.prompt_images} images but the trajectory has {len(self.images)}")
