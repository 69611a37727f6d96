"""One chat formatter for every visrl env: observations become chat messages, with no per-env code.

A visrl text observation is ``{"images": tuple of uint8 arrays, "text": str}``; the first one comes
with ``info["prompt_spec"]`` (task, tool schemas, answer format). :class:`ChatFormatter` turns them
into the messages a chat template takes: the first user turn holds the images and the prompt
written by :func:`visrl_envs.core.prompt.build_prompt` without the tool list (the template renders
``spec.tools`` itself, as Qwen2.5-VL's and OpenAI's do); later user turns hold the new images and
the env's feedback. Images appear in the messages as ``{"type": "image"}`` parts, in order;
:func:`images_of` returns the matching PIL images for the processor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.vlm.policies.codec import render as render  # re-exported: agents.vlm.chat.render, its old home
from agents.vlm.policies.policy import Message
from visrl_envs.core.prompt import PromptSpec, build_prompt, split_at_markers


def user_message(images: tuple[np.ndarray, ...] | list[np.ndarray], text: str) -> Message:
    """A user turn: the images (the arrays ride along as ``"image"``) and the text. When the text
    announces its images with one marker each (envs whose images vary in size or carry captions:
    :mod:`visrl_envs.core.prompt`), each image part takes its marker's place, between its caption
    and what follows; otherwise the images come first, then the text."""
    pieces = split_at_markers(text, len(images))
    if pieces is None:
        parts: list[dict[str, Any]] = [{"type": "image", "image": image} for image in images]
        parts.append({"type": "text", "text": text})
        return {"role": "user", "content": parts}
    parts = [{"type": "text", "text": pieces[0]}] if pieces[0] else []
    for image, piece in zip(images, pieces[1:], strict=True):
        parts.append({"type": "image", "image": image})
        if piece:
            parts.append({"type": "text", "text": piece})
    return {"role": "user", "content": parts}


def assistant_message(text: str) -> Message:
    return {"role": "assistant", "content": text}


class ChatFormatter:
    """Builds the conversation of one episode, turn by turn.

    ``tools_in_template``: the model's chat template renders tool schemas (``tools=``); otherwise the
    tool list is written into the first user turn. ``system``: an optional system prompt.
    """

    def __init__(self, tools_in_template: bool = True, system: str | None = None) -> None:
        self.tools_in_template = tools_in_template
        self.system = system

    def start(self, observation: dict[str, Any], spec: PromptSpec) -> list[Message]:
        """The messages before the first assistant turn."""
        messages: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        messages.append(user_message(observation["images"], build_prompt(spec, self.tools_in_template)))
        return messages

    def feedback(self, observation: dict[str, Any]) -> Message:
        """The user turn after an action: the new images (maybe none) and the env's text."""
        return user_message(observation["images"], observation["text"])

    def tools(self, spec: PromptSpec) -> list[dict[str, Any]] | None:
        """What to pass as the template's ``tools=`` (``None`` when the env has none)."""
        return list(spec.tools) if spec.tools and self.tools_in_template else None


def images_of(messages: list[Message]) -> list[Any]:
    """The PIL images of the messages' image parts, in order (what the processor takes)."""
    from PIL import Image

    found = []
    for message in messages:
        if isinstance(message["content"], list):
            for part in message["content"]:
                if part["type"] == "image":
                    found.append(Image.fromarray(np.asarray(part["image"], dtype=np.uint8)))
    return found
