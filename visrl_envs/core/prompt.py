"""What a chat needs from an env, and the one function that writes it as a human-readable prompt.

Every env exposes, the same way for every id (``env.unwrapped.prompt_spec()``, and
``info["prompt_spec"]`` after a text-mode ``reset``), a :class:`PromptSpec`:

- ``task``: this episode's task text (what to do, the grid, the choices...);
- ``tools``: the JSON function schemas of its tools (``tools=`` of a Qwen2.5-VL / OpenAI chat
  template);
- ``answer``: the answer format (kind, description, example, JSON Schema of the value);
- ``image_frame`` (the size of every image, or of the largest one when sizes vary), ``fixed_frame``,
  ``images`` (one :class:`ImageNote` per image of the first observation) and ``max_turns``.

A VLM formatter builds a chat from these alone (tools through the template, the task text and the
images in the user turn). :func:`build_prompt` renders the same facts as plain text; it is the
first text observation of every env, so an agent without tool-calling templates sees them too.

Images in text. When an env's images vary in size, or it captions them, each image of a text
observation is announced in the text by one line and a marker, in order, before the rest of the
text::

    Image 2 (480x270 px): zoom of image 1, box [100, 40, 580, 310]
    <image>

Images are numbered over the episode (tools refer to "image 2"); :data:`IMAGE_MARKER` stands where
the image goes, so a chat formatter can put each image between its caption and what follows (and a
text-only agent still reads its size). Any other ``<image>`` in env text is written ``(image)``, so
the markers are exactly the images. Envs with one fixed frame and no captions get neither lines nor
markers: their images come first and the text after, as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

GRAMMAR_NOTE = "You may think first inside <think>...</think>."
#: Where an image sits in a text observation that announces its images (see the module docstring).
IMAGE_MARKER = "<image>"
_ESCAPED_MARKER = "(image)"


@dataclass(frozen=True)
class ImageNote:
    """One image of a text observation: its number in the episode (from 1), size and caption."""

    index: int
    width: int
    height: int
    caption: str | None = None

    def line(self) -> str:
        text = f"Image {self.index} ({self.width}x{self.height} px)"
        return f"{text}: {self.caption}" if self.caption else text


def escape_markers(text: str) -> str:
    """``text`` with every :data:`IMAGE_MARKER` written ``(image)`` (env text that quotes agents)."""
    return text.replace(IMAGE_MARKER, _ESCAPED_MARKER) if IMAGE_MARKER in text else text


def announce_images(notes: Sequence[ImageNote]) -> str:
    """One caption line and one marker per image, in order (empty for no images)."""
    return "".join(f"{note.line()}\n{IMAGE_MARKER}\n" for note in notes)


def split_at_markers(text: str, count: int) -> list[str] | None:
    """``text`` cut at its image markers: ``count + 1`` pieces (text before image 1, ..., after the
    last), or ``None`` when the text does not hold exactly ``count`` markers (images then go first)."""
    if count == 0 or text.count(IMAGE_MARKER) != count:
        return None
    return text.split(IMAGE_MARKER)


@dataclass(frozen=True)
class PromptSpec:
    """The parts of a prompt, apart from each other (JSON-serialisable with :meth:`to_dict`)."""

    task: str
    tools: tuple[dict[str, Any], ...]
    answer: dict[str, Any] | None
    image_frame: tuple[int, int]  # (width, height) of every image (fixed frame) or of the largest, px
    max_turns: int
    fixed_frame: bool = True
    images: tuple[ImageNote, ...] = field(default=())  # the first observation's images

    @property
    def announces_images(self) -> bool:
        """Whether the text announces each image with a caption line and a marker."""
        return not self.fixed_frame or any(note.caption for note in self.images)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tools"] = list(self.tools)
        out["image_frame"] = list(self.image_frame)
        out["images"] = [asdict(note) for note in self.images]
        return out


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _item_text(schema: dict[str, Any]) -> str:
    kind = "integer" if schema.get("type") == "integer" else "number"
    return f"{kind} in [{_number(schema['minimum'])}, {_number(schema['maximum'])}]"


def describe_value(schema: dict[str, Any]) -> str:
    """A short human description of a JSON Schema value (the kinds :class:`~visrl_envs.core.tools.Arg` makes)."""
    kind = schema.get("type")
    if kind in ("integer", "number"):
        text = _item_text(schema)
    elif kind == "string" and "enum" in schema:
        text = "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    elif kind == "string":
        text = f"text of at most {schema['maxLength']} characters" if "maxLength" in schema else "text"
    elif kind == "array":
        text = _array_text(schema)
    else:
        text = json.dumps(schema)
    if "default" in schema:
        text += f" (optional, default {json.dumps(schema['default'])})"
    return text


def _array_text(schema: dict[str, Any]) -> str:
    fewest, most = schema.get("minItems", 0), schema.get("maxItems", schema.get("minItems", 0))
    count = str(fewest) if fewest == most else f"{fewest} to {most}"
    if "prefixItems" in schema:
        return f"list of {count}: [" + ", ".join(_item_text(s) for s in schema["prefixItems"]) + "]"
    item = schema["items"]
    if item.get("type") == "array":
        return f"list of {count} items, each a {_array_text(item)}"
    return f"list of {count} {_item_text(item).replace(' in ', 's, each in ', 1)}"


def signature(function: dict[str, Any]) -> str:
    """``name(arg: kind in [low, high], ...)`` of a function schema."""
    fn = function["function"]
    properties = fn["parameters"]["properties"]
    return f"{fn['name']}(" + ", ".join(f"{name}: {describe_value(s)}" for name, s in properties.items()) + ")"


def example_call(function: dict[str, Any]) -> str:
    """The text of a valid call of a function schema: its declared example (the parameters'
    ``examples``), else its required arguments at their lowest values."""
    fn = function["function"]
    examples = fn["parameters"].get("examples")
    if examples:
        arguments: dict[str, Any] = dict(examples[0])
    else:
        arguments = {}
        for i, name in enumerate(fn["parameters"].get("required", [])):
            schema = fn["parameters"]["properties"][name]
            arguments[name] = _example_value(schema, i)
    return "<tool_call>" + json.dumps({"name": fn["name"], "arguments": arguments}) + "</tool_call>"


def _example_value(schema: dict[str, Any], offset: int) -> Any:
    kind = schema.get("type")
    if kind in ("integer", "number"):
        low, high = schema["minimum"], schema["maximum"]
        return min(high, low + offset) if kind == "integer" else float(low)
    if kind == "string":
        return schema["enum"][0] if "enum" in schema else "text"
    items = schema.get("prefixItems") or [schema["items"]] * max(1, schema.get("minItems", 0))
    return [_example_value(s, 0) for s in items]


def build_prompt(spec: PromptSpec, tools_in_template: bool = False) -> str:
    """The human-readable prompt of an episode: task, frame, turns, tools, answer format. With
    ``tools_in_template`` the tool list is left out (a chat template renders ``spec.tools``)."""
    width, height = spec.image_frame
    turns = "1 turn" if spec.max_turns == 1 else f"{spec.max_turns} turns"
    if spec.fixed_frame:
        sizes = f"Images are {width}x{height} px."
    else:
        sizes = f"Images are at most {width}x{height} px; each image's size is given with it."
    task = escape_markers(spec.task.strip())
    lines = [announce_images(spec.images) + task if spec.announces_images else task, "", f"{sizes} You have {turns}."]
    if spec.tools and tools_in_template:
        lines.append("Call at most one tool per turn.")
    elif spec.tools:
        lines.append("Tools (call at most one per turn):")
        lines += [f"- {signature(t)}: {t['function']['description']}" for t in spec.tools]
        lines.append(f"Call a tool like this: {example_call(spec.tools[0])}")
    if spec.answer is not None:
        lines.append(f"Answer inside <answer>...</answer>: {spec.answer['description']}, e.g. {spec.answer['example']}")
        if spec.answer.get("bare_allowed"):
            lines.append("The bare code, or a fenced code block, is accepted too.")
    lines.append(GRAMMAR_NOTE)
    return "\n".join(lines)
