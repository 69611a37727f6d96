"""Chat turns as exact token ids, for any processor whose chat template appends turns (Qwen-VL style).

A multi-turn rollout must not re-render and re-tokenise its history: the model's sampled ids may not
be what re-tokenising their text gives, and a template may rewrite earlier turns. So the first
prompt is tokenised once (:meth:`ProcessorCodec.start`) and every later turn is *appended*
(:meth:`ProcessorCodec.continuation`). What to append is learned from the template itself with a
probe conversation: render ``[user X, assistant Y]`` and ``[user X, assistant Y, new turn]`` (plus
the generation prompt); the second minus the first is the new turn's text, and what follows ``Y``
in the first is how the template closes an assistant turn (``<|im_end|>`` then ``"\\n"`` for Qwen).
The closing's first token is the end-of-turn token generation stops at; the rest of it is the turn
separator the env appends after the model's last token. Dropping that separator is the bug three
trainers shipped in 2026; ``tests/test_vlm_rollout.py`` checks it against a full re-render.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agents.vlm.chat import images_of, render
from agents.vlm.policy import Message, TokenPrompt

_PROBE_USER = "X"
_PROBE_REPLY = "Y"


def _probe_messages() -> list[Message]:
    return [
        {"role": "user", "content": [{"type": "text", "text": _PROBE_USER}]},
        {"role": "assistant", "content": _PROBE_REPLY},
    ]


class ProcessorCodec:
    """A :class:`~agents.vlm.policy.ChatCodec` over a transformers processor (tokenizer + image processor).

    Image placeholders are expanded by the processor, so ids hold as many image-pad tokens as the
    model consumes; the images are kept beside the ids (:class:`TokenPrompt`)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        closing = self._closing_text()
        closing_ids = self._encode_text(closing)
        if not closing_ids:
            raise ValueError(f"the chat template closes an assistant turn with nothing after its content ({closing!r})")
        #: The token an assistant turn ends with (generation stops there).
        self.eos_id: int = closing_ids[0]
        #: What the template puts after the end-of-turn token before the next turn (``"\n"`` for Qwen).
        self.separator_ids: list[int] = closing_ids[1:]

    def _render(self, messages: list[Message], tools: list[dict[str, Any]] | None, generation_prompt: bool) -> str:
        return render(self.processor, messages, tools, add_generation_prompt=generation_prompt)

    def _closing_text(self) -> str:
        text = self._render(_probe_messages(), None, generation_prompt=False)
        end = text.rfind(_PROBE_REPLY)
        if end < 0:
            raise ValueError("the chat template does not render the assistant's content verbatim")
        return text[end + len(_PROBE_REPLY) :]

    def _encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, text: str, images: list[Any]) -> list[int]:
        if not images:
            return self._encode_text(text)
        batch = self.processor(text=[text], images=images, add_special_tokens=False, return_tensors="np")
        return [int(i) for i in batch["input_ids"][0]]

    def start(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> TokenPrompt:
        images = images_of(messages)
        ids = self._encode(self._render(messages, tools, generation_prompt=True), images)
        return TokenPrompt(ids, [np.asarray(image) for image in images])

    def turn_text(self, message: Message, tools: list[dict[str, Any]] | None) -> str:
        """The template's text for ``message`` appended after an assistant turn, up to the next generation prompt."""
        base = self._render(_probe_messages(), tools, generation_prompt=False)
        full = self._render([*_probe_messages(), message], tools, generation_prompt=True)
        if not full.startswith(base):
            raise ValueError(
                "the chat template rewrites earlier turns when a turn is appended; multi-turn token-exact "
                "rollouts need a template that only appends (Qwen-VL style)"
            )
        return full[len(base) :]

    def continuation(
        self, message: Message, tools: list[dict[str, Any]] | None, after_finished_turn: bool
    ) -> TokenPrompt:
        images = images_of([message])
        closing = ([] if after_finished_turn else [self.eos_id]) + self.separator_ids
        ids = closing + self._encode(self.turn_text(message, tools), images)
        return TokenPrompt(ids, [np.asarray(image) for image in images])

    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ids, without the end-of-turn token (special tokens such as
        ``<tool_call>`` are kept: they are part of the action)."""
        ids = list(ids)
        if ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [str(self.tokenizer.decode([i], skip_special_tokens=False)) for i in ids]
