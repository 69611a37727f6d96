"""The text grammar: tool calls and answers, and its error messages."""

from __future__ import annotations

import pytest

from visrl_envs.core.text import CHARSET, to_charset
from visrl_envs.core.tools import ActionError, Answer, Arg, Tool, ToolCall, ToolSet, extract_answer, tool_call_text

TOOLS = ToolSet(
    [
        Tool("swap", "exchange two tiles", (Arg("a", "int", "", 1, 4), Arg("b", "int", "", 1, 4))),
        Tool("zoom", "zoom in", (Arg("scale", "float", "", 1.0, 4.0), Arg("mode", "choice", choices=("fast", "slow")))),
    ],
    answer_hint="done",
)


def test_parse_tool_call_with_think() -> None:
    text = '<think>swap them</think><tool_call>{"name": "swap", "arguments": {"a": 1, "b": 3.0}}</tool_call>'
    assert TOOLS.parse(text) == ToolCall("swap", {"a": 1, "b": 3})


def test_parse_answer() -> None:
    assert TOOLS.parse("<think>x</think> <answer> done </answer>") == Answer("done")
    assert extract_answer("<answer>1</answer> then <answer>2</answer>") == "2"


def test_example_round_trips() -> None:
    for tool in TOOLS.tools:
        parsed = TOOLS.parse(tool.example())
        assert isinstance(parsed, ToolCall) and parsed.name == tool.name
    assert TOOLS.parse(tool_call_text("zoom", {"scale": 2.5, "mode": "slow"})) == ToolCall(
        "zoom", {"scale": 2.5, "mode": "slow"}
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nothing here", "no <tool_call>"),
        ("<tool_call>{oops}</tool_call>", "not valid JSON"),
        ('<tool_call>{"name": "fly"}</tool_call>', "unknown tool"),
        ('<tool_call>{"name": "swap", "arguments": {"a": 1}}</tool_call>', "needs argument 'b'"),
        ('<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 9}}</tool_call>', "must be in [1, 4]"),
        ('<tool_call>{"name": "swap", "arguments": {"a": 1.5, "b": 2}}</tool_call>', "must be an integer"),
        ('<tool_call>{"name": "swap", "arguments": {"a": true, "b": 2}}</tool_call>', "must be a number"),
        ('<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 2, "c": 3}}</tool_call>', "has no argument"),
        ('<tool_call>{"name": "zoom", "arguments": {"scale": NaN, "mode": "fast"}}</tool_call>', "finite"),
        ('<tool_call>{"name": "zoom", "arguments": {"scale": 2, "mode": "warp"}}</tool_call>', "must be one of"),
        ("<tool_call>{}</tool_call><tool_call>{}</tool_call>", "one tool call per turn"),
        ("<tool_call>{}</tool_call><answer>x</answer>", "not both"),
        ('<tool_call>{"name": "swap"', "unclosed <tool_call>"),
        ("<answer>half", "unclosed <answer>"),
    ],
)
def test_errors_are_readable(text: str, message: str) -> None:
    with pytest.raises(ActionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TOOLS.parse(text)


def test_prompt_lists_every_tool_with_ranges() -> None:
    prompt = TOOLS.prompt()
    assert "swap(a: int in [1, 4], b: int in [1, 4])" in prompt
    assert "mode: one of 'fast', 'slow'" in prompt


def test_to_charset_keeps_text_inside_the_space() -> None:
    text = "ok \u2603 snow \x00 and 漢字"
    cleaned = to_charset(text)
    assert set(cleaned) <= set(CHARSET)
    assert cleaned.startswith("ok ? snow ? and ??")
    assert len(to_charset("x" * 100, max_length=20)) == 20
