"""What a chat needs from an env, and the one function that writes it as a human-readable prompt.

Every env exposes, the same way for every id (``env.unwrapped.prompt_spec()``, and
``info["prompt_spec"]`` after a text-mode ``reset``), a :class:`PromptSpec`:

- ``task``: this episode's task text (what to do, the grid, the choices...);
- ``tools``: the JSON function schemas of its tools (``tools=`` of a Qwen2.5-VL / OpenAI chat
  template);
- ``answer``: the answer format (kind, description, example, JSON Schema of the value);
- ``image_frame`` and ``max_turns``.

A VLM formatter builds a chat from these alone (tools through the template, the task text and the
images in the user turn). :func:`build_prompt` renders the same facts as plain text; it is the
first text observation of every env, so an agent without tool-calling templates sees them too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

GRAMMAR_NOTE = "You may think first inside <think>...</think>."


@dataclass(frozen=True)
class PromptSpec:
    """The parts of a prompt, apart from each other (JSON-serialisable with :meth:`to_dict`)."""

    task: str
    tools: tuple[dict[str, Any], ...]
    answer: dict[str, Any] | None
    image_frame: tuple[int, int]  # (width, height) of every image, px
    max_turns: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tools"] = list(self.tools)
        out["image_frame"] = list(self.image_frame)
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
        n = schema.get("minItems", 0)
        if "prefixItems" in schema:
            text = f"list of {n}: [" + ", ".join(_item_text(s) for s in schema["prefixItems"]) + "]"
        else:
            text = f"list of {n} {_item_text(schema['items']).replace(' in ', 's, each in ', 1)}"
    else:
        text = json.dumps(schema)
    if "default" in schema:
        text += f" (optional, default {json.dumps(schema['default'])})"
    return text


def signature(function: dict[str, Any]) -> str:
    """``name(arg: kind in [low, high], ...)`` of a function schema."""
    fn = function["function"]
    properties = fn["parameters"]["properties"]
    return f"{fn['name']}(" + ", ".join(f"{name}: {describe_value(s)}" for name, s in properties.items()) + ")"


def example_call(function: dict[str, Any]) -> str:
    """The text of a valid call of a function schema (required arguments only)."""
    fn = function["function"]
    arguments: dict[str, Any] = {}
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
    items = schema.get("prefixItems") or [schema["items"]] * schema.get("minItems", 0)
    return [_example_value(s, 0) for s in items]


def build_prompt(spec: PromptSpec, tools_in_template: bool = False) -> str:
    """The human-readable prompt of an episode: task, frame, turns, tools, answer format. With
    ``tools_in_template`` the tool list is left out (a chat template renders ``spec.tools``)."""
    width, height = spec.image_frame
    turns = "1 turn" if spec.max_turns == 1 else f"{spec.max_turns} turns"
    lines = [spec.task.strip(), "", f"Images are {width}x{height} px. You have {turns}."]
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
