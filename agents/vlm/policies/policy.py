"""What the rollout collector, the evaluator and the trainer see of a model: the policy protocols.

Two levels, because servers and in-process models give different things:

- :class:`ChatPolicy` answers conversations (chat messages with images, plus tool schemas) with
  text. Every backend has it; it is all evaluation needs and all a hosted API offers.
- :class:`TokenPolicy` adds the token level that RL needs: ``generate`` continues exact token ids
  (never a re-rendered history) and returns each new token's log-probability; ``token_logprobs``
  scores given ids with the same distribution, so a recorded trajectory can be re-scored. Its
  :attr:`codec` turns chat turns into ids. The in-process transformers backend has it.

Log-probabilities are those of the sampling distribution: logits divided by the temperature (1 when
greedy), with the suppressed tokens (the vision specials) removed. ``top_p`` and ``top_k`` are off by
default so that the recorded log-probabilities are the ones a trainer recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

Message = dict[str, Any]


@dataclass(frozen=True)
class Sampling:
    """How to generate. ``temperature=0`` is greedy. ``max_new_tokens`` bounds one turn."""

    temperature: float = 1.0
    max_new_tokens: int = 256
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 turns it off), got {self.top_k}")

    @property
    def scale(self) -> float:
        """The temperature the log-probabilities are computed at (1 when greedy)."""
        return self.temperature if self.temperature > 0 else 1.0


@dataclass(frozen=True)
class ChatRequest:
    """One conversation to answer: messages (image parts carry uint8 arrays) and the tool schemas."""

    messages: list[Message]
    tools: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Reply:
    """A model's answer. ``ids``/``logprobs`` are given when the backend knows them."""

    text: str
    ids: list[int] | None = None
    logprobs: list[float] | None = None
    finished: bool = True  # False: cut at max_new_tokens
    usage: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenPrompt:
    """Exact input ids (image pads already expanded) and the images they stand for, in order."""

    ids: list[int]
    images: list[np.ndarray]


@dataclass(frozen=True)
class Completion:
    """Generated ids (the end-of-turn token included when ``finished``) and their log-probabilities."""

    ids: list[int]
    logprobs: list[float]
    finished: bool


@runtime_checkable
class ChatPolicy(Protocol):
    """Answers a batch of conversations. ``name`` labels results; ``close`` frees what it holds."""

    name: str

    def reply(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Reply]: ...

    def close(self) -> None: ...


class ChatCodec(Protocol):
    """Chat turns as exact token ids, appended to a conversation without re-tokenising its history."""

    eos_id: int

    def start(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> TokenPrompt:
        """The ids of the first turns, ending with the assistant's generation prompt."""
        ...

    def continuation(
        self, message: Message, tools: list[dict[str, Any]] | None, after_finished_turn: bool
    ) -> TokenPrompt:
        """The ids that follow an assistant turn: the rest of that turn's closing (the turn separator),
        ``message`` (a user/tool turn) and the next generation prompt. ``after_finished_turn=False``
        (the model was cut at ``max_new_tokens``) closes the turn with the end-of-turn token first."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...


@runtime_checkable
class TokenPolicy(ChatPolicy, Protocol):
    """A :class:`ChatPolicy` that also works on exact ids (what RL needs)."""

    @property
    def codec(self) -> ChatCodec: ...

    def generate(self, prompts: Sequence[TokenPrompt], sampling: Sampling) -> list[Completion]: ...

    def token_logprobs(self, sequences: Sequence[TokenPrompt], temperature: float = 1.0) -> list[np.ndarray]:
        """Per sequence, ``lp[i] = log p(ids[i] | ids[:i])`` for ``i >= 1`` (``lp[0] = 0``)."""
        ...


def reply_by_tokens(policy: TokenPolicy, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Reply]:
    """``ChatPolicy.reply`` of a token-level policy: each conversation through its codec, one batched
    ``generate``, the completions decoded."""
    prompts = [policy.codec.start(r.messages, r.tools) for r in requests]
    completions = policy.generate(prompts, sampling)
    return [
        Reply(
            policy.codec.decode(c.ids),
            c.ids,
            c.logprobs,
            c.finished,
            {"prompt_tokens": len(p.ids), "completion_tokens": len(c.ids)},
        )
        for p, c in zip(prompts, completions, strict=True)
    ]
