"""Tools as data, and the text grammar that parses agent output onto them.

A family declares its tools once (:class:`Tool` with typed, ranged :class:`Arg`s). The prompt's tool
list, the parser's validation and the family's numeric action space are derived from that one table,
so the interfaces cannot drift apart.

Grammar (the convention of UI-R1, DeepEyes, Chain-of-Focus and Jigsaw-R1): an optional
``<think>...</think>``, then either one ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` or one
``<answer>...</answer>``. Anything else is an :class:`ActionError` whose message tells the model what
to fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from visrl_envs.core.text import quote


class ActionError(ValueError):
    """Agent output that cannot be carried out; the message is shown to the agent next turn."""


@dataclass(frozen=True)
class Arg:
    """One tool argument: an integer in ``[low, high]``, a float in ``[low, high]`` or a choice."""

    name: str
    kind: Literal["int", "float", "choice"]
    description: str = ""
    low: float = 0
    high: float = 0
    choices: tuple[str, ...] = ()

    def signature(self) -> str:
        if self.kind == "choice":
            return f"{self.name}: one of {', '.join(repr(c) for c in self.choices)}"
        low, high = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return f"{self.name}: {self.kind} in [{low}, {high}]"

    def validate(self, value: Any, tool: str) -> Any:
        where = f"argument {self.name!r} of {tool}"
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ActionError(f"{where} must be one of {list(self.choices)}, got {quote(str(value), 40)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ActionError(f"{where} must be a number, got {quote(json.dumps(value), 40)}")
        if self.kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise ActionError(f"{where} must be an integer, got {value}")
                value = int(value)
        elif value != value:  # NaN
            raise ActionError(f"{where} must be a finite number")
        if not self.low <= value <= self.high:
            low, high = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
            raise ActionError(f"{where} must be in [{low}, {high}], got {value}")
        return value


@dataclass(frozen=True)
class Tool:
    """A tool the agent may call: its name, a one-line description and its arguments."""

    name: str
    description: str
    args: tuple[Arg, ...] = ()

    def signature(self) -> str:
        return f"{self.name}({', '.join(a.signature() for a in self.args)})"

    def example(self) -> str:
        values = {
            a.name: a.choices[0] if a.kind == "choice" else type_cast(a, min(a.high, a.low + i))
            for i, a in enumerate(self.args)
        }
        return tool_call_text(self.name, values)


def type_cast(arg: Arg, value: float) -> int | float:
    return int(value) if arg.kind == "int" else float(value)


@dataclass(frozen=True)
class ToolCall:
    """A validated call of one declared tool."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """The content of an ``<answer>`` block (stripped)."""

    text: str


ParsedAction = ToolCall | Answer


def tag_blocks(text: str, tag: str) -> tuple[list[str], bool]:
    """The contents of every ``<tag>...</tag>`` block in order, and whether one was left unclosed.

    Linear time with ``str.find`` (a lazy regex rescans to the end from every unclosed opening tag:
    quadratic, seconds for 64 KB of hostile text).
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    blocks: list[str] = []
    pos = 0
    while True:
        start = text.find(opening, pos)
        if start < 0:
            return blocks, False
        end = text.find(closing, start + len(opening))
        if end < 0:
            return blocks, True
        blocks.append(text[start + len(opening) : end])
        pos = end + len(closing)


def strip_think(text: str) -> str:
    """``text`` without its closed ``<think>...</think>`` blocks."""
    parts: list[str] = []
    pos = 0
    while True:
        start = text.find("<think>", pos)
        end = text.find("</think>", start + 7) if start >= 0 else -1
        if end < 0:
            parts.append(text[pos:])
            return "".join(parts)
        parts.append(text[pos:start])
        pos = end + len("</think>")


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """The canonical text of a tool call (what a scripted agent sends)."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def answer_text(content: str) -> str:
    return f"<answer>{content}</answer>"


def extract_answer(text: str) -> str | None:
    """The content of the last ``<answer>`` block, or None."""
    found, _ = tag_blocks(strip_think(text), "answer")
    return found[-1].strip() if found else None


class ToolSet:
    """The tools of one env and the parser of agent text onto them."""

    def __init__(self, tools: Sequence[Tool], *, answer_hint: str = "") -> None:
        self.tools = tuple(tools)
        self.by_name = {t.name: t for t in self.tools}
        if len(self.by_name) != len(self.tools):
            raise ValueError("tool names must be unique")
        self.answer_hint = answer_hint

    def prompt(self) -> str:
        """The tool list and the reply format, for the first observation."""
        lines = ["Tools (call exactly one per turn):"]
        lines += [f"- {t.signature()}: {t.description}" for t in self.tools]
        if self.tools:
            lines.append(f"Call a tool like this: {self.tools[0].example()}")
        if self.answer_hint:
            lines.append(f"Finish with <answer>...</answer>: {self.answer_hint}")
        lines.append("You may think first inside <think>...</think>.")
        return "\n".join(lines)

    def parse(self, text: str) -> ParsedAction:
        """Parse one turn of agent text; raise :class:`ActionError` with a readable message."""
        if not isinstance(text, str):
            raise ActionError(f"the action must be a string, got {type(text).__name__}")
        body = strip_think(text)
        calls, unclosed_call = tag_blocks(body, "tool_call")
        answers, unclosed_answer = tag_blocks(body, "answer")
        if calls and answers:
            raise ActionError("send either one <tool_call> or one <answer> per turn, not both")
        if len(calls) > 1:
            raise ActionError(f"one tool call per turn, got {len(calls)}")
        if calls:
            return self._parse_call(calls[0])
        if answers:
            return Answer(answers[-1].strip())
        if unclosed_call:
            raise ActionError("unclosed <tool_call>: end it with </tool_call>")
        if unclosed_answer:
            raise ActionError("unclosed <answer>: end it with </answer>")
        expected = "<tool_call>{...}</tool_call>" if self.tools else ""
        expected += " or " if self.tools else ""
        raise ActionError(f"no {expected}<answer>...</answer> found in {quote(text)}")

    def _parse_call(self, payload: str) -> ToolCall:
        try:
            call = json.loads(payload)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, huge integers, deep nesting
            msg = err.msg if isinstance(err, json.JSONDecodeError) else "too large or nested too deeply"
            raise ActionError(f"tool call is not valid JSON ({msg}): {quote(payload)}") from None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ActionError('a tool call is a JSON object {"name": ..., "arguments": {...}}')
        tool = self.by_name.get(call["name"])
        if tool is None:
            known = ", ".join(self.by_name) or "none"
            raise ActionError(f"unknown tool {quote(call['name'], 40)}; tools: {known}")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, dict):
            raise ActionError(f"'arguments' of {tool.name} must be a JSON object")
        unknown = set(arguments) - {a.name for a in tool.args}
        if unknown:
            raise ActionError(f"{tool.name} has no argument(s) {sorted(quote(u, 20) for u in unknown)}")
        values: dict[str, Any] = {}
        for arg in tool.args:
            if arg.name not in arguments:
                raise ActionError(f"{tool.name} needs argument {arg.name!r} ({arg.signature()})")
            values[arg.name] = arg.validate(arguments[arg.name], tool.name)
        return ToolCall(tool.name, values)
