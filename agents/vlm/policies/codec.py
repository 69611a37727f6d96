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

Encodings are memoised by content (the text and the images' bytes): the G members of a group start
from the same prompt and many feedback turns repeat, so the processor runs once per distinct turn.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from agents.vlm.policies.policy import Message, TokenPrompt

_PROBE_USER = "X"
_PROBE_REPLY = "Y"


def _probe_messages() -> list[Message]:
    return [
        {"role": "user", "content": [{"type": "text", "text": _PROBE_USER}]},
        {"role": "assistant", "content": _PROBE_REPLY},
    ]


def _image_arrays(messages: list[Message]) -> list[np.ndarray]:
    """The uint8 arrays of the messages' image parts, in order."""
    return [
        np.asarray(part["image"], dtype=np.uint8)
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image"
    ]


def render(
    processor: Any, messages: list[Message], tools: list[dict[str, Any]] | None, add_generation_prompt: bool = True
) -> str:
    """The text of ``messages`` under the processor's chat template (by default ready to generate)."""
    plain = [
        {**m, "content": [{k: v for k, v in part.items() if k != "image"} for part in m["content"]]}
        if isinstance(m["content"], list)
        else m
        for m in messages
    ]
    return processor.apply_chat_template(
        plain, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def image_key(image: np.ndarray) -> bytes:
    """A content key of an image array: its bytes' digest, shape and dtype (SHA-256: hardware-accelerated
    on most CPUs, about twice as fast as blake2b)."""
    data = np.ascontiguousarray(image)
    return hashlib.sha256(data.data).digest()[:16] + repr((data.shape, data.dtype.str)).encode()


def _frozen(image: np.ndarray) -> np.ndarray:
    """A read-only copy (what ``np.asarray`` of a PIL image gives)."""
    out = np.array(image, dtype=np.uint8)
    out.flags.writeable = False
    return out


def _json_key(value: Any) -> str | None:
    """A canonical text of ``value`` for cache keys (``None`` when it is not JSON)."""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return None


class _LRU:
    """A bounded mapping that forgets the least recently used entry (thread-safe)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[Hashable, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self.lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


class ProcessorCodec:
    """A :class:`~agents.vlm.policies.policy.ChatCodec` over a transformers processor (tokenizer + image processor).

    Image placeholders are expanded by the processor, so ids hold as many image-pad tokens as the
    model consumes; the images are kept beside the ids (:class:`TokenPrompt`). ``cache``: how many
    encoded turns (and rendered feedback turns) to remember."""

    def __init__(self, processor: Any, cache: int = 256) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self._encoded = _LRU(cache)  # (text, image keys) -> ids
        self._turns = _LRU(cache)  # (tools, message) -> turn text
        self._bases = _LRU(16)  # tools -> the probe conversation's text
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

    def _encode(self, text: str, images: list[np.ndarray]) -> list[int]:
        """The ids of ``text`` with its image placeholders expanded for ``images`` (memoised)."""
        key = (text, *(image_key(image) for image in images))
        ids = self._encoded.get(key)
        if ids is None:
            if images:
                from PIL import Image

                pil = [Image.fromarray(image) for image in images]
                batch = self.processor(text=[text], images=pil, add_special_tokens=False, return_tensors="np")
                ids = tuple(int(i) for i in batch["input_ids"][0])
            else:
                ids = tuple(self._encode_text(text))
            self._encoded.put(key, ids)
        return list(ids)

    def start(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> TokenPrompt:
        images = _image_arrays(messages)
        ids = self._encode(self._render(messages, tools, generation_prompt=True), images)
        return TokenPrompt(ids, [_frozen(image) for image in images])

    def turn_text(self, message: Message, tools: list[dict[str, Any]] | None) -> str:
        """The template's text for ``message`` appended after an assistant turn, up to the next generation prompt."""
        content = message["content"]
        plain = (
            {**message, "content": [{k: v for k, v in part.items() if k != "image"} for part in content]}
            if isinstance(content, list)
            else message
        )
        tools_key, message_key = _json_key(tools), _json_key(plain)
        key = None if tools_key is None or message_key is None else (tools_key, message_key)
        if key is not None and (text := self._turns.get(key)) is not None:
            return str(text)
        full = self._render([*_probe_messages(), message], tools, generation_prompt=True)
        base = self._bases.get(tools_key)
        if base is None or not full.startswith(base):  # not cached yet (or the template's output moved on)
            base = self._render(_probe_messages(), tools, generation_prompt=False)
            if tools_key is not None:
                self._bases.put(tools_key, base)
        if not full.startswith(base):
            raise ValueError(
                "the chat template rewrites earlier turns when a turn is appended; multi-turn token-exact "
                "rollouts need a template that only appends (Qwen-VL style)"
            )
        text = full[len(base) :]
        if key is not None:
            self._turns.put(key, text)
        return text

    def continuation(
        self, message: Message, tools: list[dict[str, Any]] | None, after_finished_turn: bool
    ) -> TokenPrompt:
        images = _image_arrays([message])
        closing = ([] if after_finished_turn else [self.eos_id]) + self.separator_ids
        ids = closing + self._encode(self.turn_text(message, tools), images)
        return TokenPrompt(ids, [_frozen(image) for image in images])

    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ids, without the end-of-turn token (special tokens such as
        ``<tool_call>`` are kept: they are part of the action)."""
        ids = list(ids)
        if ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [str(self.tokenizer.decode([i], skip_special_tokens=False)) for i in ids]
