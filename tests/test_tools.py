"""The text grammar: tools and answers as data, their JSON schemas, parsing and error messages."""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import pytest

from visrl_envs.core.prompt import PromptSpec, build_prompt, describe_value, example_call, signature
from visrl_envs.core.text import CHARSET, to_charset
from visrl_envs.core.tools import (
    ActionError,
    Answer,
    AnswerFormat,
    Arg,
    BoxInsideImage,
    OrderedBox,
    Rule,
    Tool,
    ToolCall,
    ToolContext,
    ToolSet,
    extract_answer,
    parse_choice,
    parse_integers,
    strip_code_fence,
    tool_call_text,
)

ZOOM = Tool(
    "zoom",
    "zoom into a box",
    (
        Arg("bbox_2d", "ints", "box x1, y1, x2, y2 in pixels", low=0, high=(640, 480, 640, 480), length=4),
        Arg("label", "text", "what you look for", max_length=20, default=""),
        Arg("scale", "float", "magnification", 1.0, 4.0, default=2),
    ),
)
TOOLS = ToolSet(
    [
        Tool("swap", "exchange two tiles", (Arg("a", "int", "", 1, 4), Arg("b", "int", "", 1, 4))),
        Tool("mode", "set a mode", (Arg("mode", "choice", choices=("fast", "slow")),)),
        Tool("type", "type text", (Arg("text", "text", "the text", max_length=10),)),
        Tool(
            "adjust",
            "tone sliders",
            tuple(Arg(name, "float", "", -100, 100, default=0.0) for name in ("exposure", "contrast", "saturation")),
        ),
        ZOOM,
    ],
    answer=AnswerFormat("choice", "done when finished", options=("done",)),
)


def call(name: str, **arguments: object) -> str:
    return tool_call_text(name, dict(arguments))


def test_parse_tool_call_with_think() -> None:
    text = '<think>swap them</think><tool_call>{"name": "swap", "arguments": {"a": 1, "b": 3.0}}</tool_call>'
    parsed = TOOLS.parse(text)
    assert parsed == ToolCall("swap", {"a": 1, "b": 3})
    assert isinstance(parsed.arguments["b"], int)


def test_floats_come_back_as_floats_and_defaults_fill_in() -> None:
    parsed = TOOLS.parse(call("adjust", contrast=20))
    assert parsed == ToolCall("adjust", {"exposure": 0.0, "contrast": 20.0, "saturation": 0.0})
    assert all(isinstance(v, float) for v in parsed.arguments.values())


def test_list_argument_with_per_item_bounds() -> None:
    parsed = TOOLS.parse(call("zoom", bbox_2d=[10, 20, 630.0, 470]))
    assert parsed == ToolCall("zoom", {"bbox_2d": [10, 20, 630, 470], "label": "", "scale": 2.0})
    with pytest.raises(ActionError, match=r"item 1 of argument 'bbox_2d' of zoom must be in \[0, 480\], got 500"):
        TOOLS.parse(call("zoom", bbox_2d=[0, 500, 10, 10]))
    with pytest.raises(ActionError, match="exactly 4 numbers, got 3"):
        TOOLS.parse(call("zoom", bbox_2d=[0, 0, 10]))
    with pytest.raises(ActionError, match="must be a list of 4 numbers"):
        TOOLS.parse(call("zoom", bbox_2d="0,0,10,10"))


def test_free_text_argument_has_a_cap() -> None:
    assert TOOLS.parse(call("type", text="hello")) == ToolCall("type", {"text": "hello"})
    with pytest.raises(ActionError, match="is 11 characters long; the limit is 10"):
        TOOLS.parse(call("type", text="hello world"))
    with pytest.raises(ActionError, match="must be a string"):
        TOOLS.parse(call("type", text=5))


def test_default_lists_are_not_shared_between_calls() -> None:
    tools = ToolSet([Tool("box", "", (Arg("b", "ints", "", 0, 9, length=2, default=[1, 2]),))])
    first = tools.parse(call("box"))
    assert isinstance(first, ToolCall)
    first.arguments["b"].append(99)
    assert tools.parse(call("box")) == ToolCall("box", {"b": [1, 2]})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x", "kind": "number"}, "kind must be one of"),
        ({"name": "x y", "kind": "int"}, "identifier"),
        ({"name": "x", "kind": "choice"}, "non-empty tuple"),
        ({"name": "x", "kind": "int", "choices": ("a",)}, "only choice"),
        ({"name": "x", "kind": "text"}, "max_length"),
        ({"name": "x", "kind": "ints", "low": 0, "high": 1}, "length in 1..256"),
        ({"name": "x", "kind": "ints", "length": 4, "low": (0, 0), "high": 1}, "per-item bounds need 4"),
        ({"name": "x", "kind": "int", "low": 5, "high": 1}, "low <= high"),
        ({"name": "x", "kind": "float", "low": 0, "high": float("inf")}, "finite"),
        ({"name": "x", "kind": "int", "low": 0.5, "high": 2}, "integer bounds"),
        ({"name": "x", "kind": "int", "low": 0, "high": 3, "default": 7}, "invalid default"),
        ({"name": "x", "kind": "int", "length": 3}, "only list arguments"),
    ],
)
def test_declarations_are_checked_when_made(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Arg(**kwargs)


def test_tool_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="twice"):
        Tool("t", "", (Arg("a", "int", "", 0, 1), Arg("a", "int", "", 0, 1)))
    with pytest.raises(ValueError, match="tool names"):
        Tool("bad name", "")
    with pytest.raises(ValueError, match="unique"):
        ToolSet([Tool("t", ""), Tool("t", "")])
    with pytest.raises(ValueError, match="at least one tool or an answer"):
        ToolSet([])


def test_schemas_are_valid_json_schema_and_match_the_parser() -> None:
    for schema in TOOLS.schemas():
        assert schema["type"] == "function"
        parameters = schema["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(parameters)
        validator = jsonschema.Draft202012Validator(parameters)
        example = json.loads(example_call(schema).removeprefix("<tool_call>").removesuffix("</tool_call>"))
        validator.validate(example["arguments"])
        assert isinstance(TOOLS.parse(example_call(schema)), ToolCall)
    zoom = ZOOM.json_schema()["function"]["parameters"]
    assert zoom["required"] == ["bbox_2d"]
    assert zoom["properties"]["bbox_2d"]["prefixItems"][1] == {"type": "integer", "minimum": 0, "maximum": 480}
    assert zoom["properties"]["scale"]["default"] == 2.0
    validator = jsonschema.Draft202012Validator(zoom)
    assert not validator.is_valid({"bbox_2d": [0, 500, 1, 1]})
    assert not validator.is_valid({"bbox_2d": [0, 0, 1, 1], "extra": 1})


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
        ('<tool_call>{"name": "adjust", "arguments": {"exposure": NaN}}</tool_call>', "finite"),
        ('<tool_call>{"name": "adjust", "arguments": {"exposure": Infinity}}</tool_call>', "finite"),
        ('<tool_call>{"name": "mode", "arguments": {"mode": "warp"}}</tool_call>', "must be one of"),
        ("<tool_call>{}</tool_call><tool_call>{}</tool_call>", "one tool call per turn"),
        ("<tool_call>{}</tool_call><answer>x</answer>", "not both"),
        ('<tool_call>{"name": "swap"', "unclosed <tool_call>"),
        ("<answer>half", "unclosed <answer>"),
        ("<answer>finished</answer>", "answer with one of done"),
    ],
)
def test_errors_are_readable(text: str, message: str) -> None:
    with pytest.raises(ActionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TOOLS.parse(text)


def test_answer_formats() -> None:
    assert parse_choice(" (b). ", ("A", "B")) == "B"
    assert parse_choice("Done", ("done",)) == "done"
    with pytest.raises(ActionError, match="one of A, B"):
        parse_choice("AB", ("A", "B"))
    assert parse_integers("2 1\n3,4", 4, 1, 4) == [2, 1, 3, 4]
    with pytest.raises(ActionError, match="exactly 4 integers"):
        parse_integers("1 2 3", 4, 1, 4)
    with pytest.raises(ActionError, match="only integers"):
        parse_integers("1 2 x 4", 4, 1, 4)
    assert strip_code_fence("```svg\n<svg/>\n```", "svg") == "<svg/>\n"
    assert strip_code_fence("no fence", "svg") == "no fence"
    grid = AnswerFormat("integers", "the grid", count=4, low=1, high=4, rows=2)
    assert grid.example() == "<answer>1 2\n3 4</answer>"
    assert ToolSet(answer=grid).parse(grid.example()) == Answer("1 2\n3 4", [1, 2, 3, 4])
    code = ToolSet(answer=AnswerFormat("code", "an SVG", language="svg"))
    assert code.parse("<svg/>") == Answer("<svg/>", "<svg/>")
    assert code.parse("<think>hm</think>```svg\n<svg/>\n```").value == "<svg/>\n"
    with pytest.raises(ValueError):
        AnswerFormat("integers", "bad", count=3, low=1, high=4, rows=2)
    for fmt in (grid, AnswerFormat("choice", "x", options=("A", "B")), AnswerFormat("text", "x", max_length=5)):
        jsonschema.Draft202012Validator.check_schema(fmt.json_schema())
        value = ToolSet(answer=fmt).parse(fmt.example())
        assert isinstance(value, Answer)
        jsonschema.validate(value.value, fmt.json_schema())


def test_answer_without_answer_format_or_tools() -> None:
    only_tools = ToolSet([Tool("t", "")])
    with pytest.raises(ActionError, match="takes no <answer>"):
        only_tools.parse("<answer>x</answer>")
    only_answer = ToolSet(answer=AnswerFormat("text", "x"))
    with pytest.raises(ActionError, match="has no tools"):
        only_answer.parse('<tool_call>{"name": "t"}</tool_call>')
    assert extract_answer("<answer>1</answer> then <answer>2</answer>") == "2"


def test_prompt_is_built_from_the_spec_alone() -> None:
    spec = PromptSpec(
        task="Do the thing.",
        tools=tuple(TOOLS.schemas()),
        answer=TOOLS.answer.to_dict() if TOOLS.answer else None,
        image_frame=(640, 480),
        max_turns=5,
    )
    prompt = build_prompt(spec)
    assert prompt.startswith("Do the thing.")
    assert "Images are 640x480 px. You have 5 turns." in prompt
    assert "swap(a: integer in [1, 4], b: integer in [1, 4]): exchange two tiles" in prompt
    assert 'mode: one of "fast", "slow"' in prompt
    assert "exposure: number in [-100, 100] (optional, default 0.0)" in prompt
    assert "bbox_2d: list of 4: [integer in [0, 640], integer in [0, 480]" in prompt
    assert "text: text of at most 10 characters" in prompt
    assert "<answer>done</answer>" in prompt
    assert json.loads(json.dumps(spec.to_dict()))["image_frame"] == [640, 480]
    assert signature(ZOOM.json_schema()).startswith("zoom(bbox_2d: list of 4:")
    assert describe_value(
        {"type": "array", "minItems": 2, "items": {"type": "number", "minimum": 0, "maximum": 1}}
    ) == ("list of 2 numbers, each in [0, 1]")


def test_to_charset_keeps_text_inside_the_space() -> None:
    text = "ok \u2603 snow \x00 and 漢字"
    cleaned = to_charset(text)
    assert set(cleaned) <= set(CHARSET)
    assert cleaned.startswith("ok ? snow ? and ??")
    assert len(to_charset("x" * 100, max_length=20)) == 20


# -- contract v3: constraints, lists of any length, nested lists, custom examples -------------------------
BOXED = Tool(
    "crop",
    "crop a box of an image",
    (
        Arg("bbox_2d", "ints", "x1, y1, x2, y2", 0, 4096, length=4),
        Arg("image", "int", "which image", 1, 64, default=1),
    ),
    constraints=(OrderedBox("bbox_2d"), BoxInsideImage("bbox_2d", "image")),
    example_arguments={"bbox_2d": [10, 10, 60, 40]},
)
WAYPOINTS = Arg("path", "floats", "points to visit", 0.0, (512.0, 384.0), min_items=1, max_items=3, item_length=2)


def test_a_box_is_checked_against_the_image_it_names() -> None:
    tools = ToolSet([BOXED])
    context = ToolContext(((640, 480), (100, 50)))
    assert tools.parse(call("crop", bbox_2d=[0, 0, 640, 480]), context).arguments == {
        "bbox_2d": [0, 0, 640, 480],
        "image": 1,
    }
    cases = {
        call("crop", bbox_2d=[500, 10, 20, 30]): "bbox_2d of crop must have x1 < x2 and y1 < y2, got [500, 10, 20, 30]",
        call(
            "crop", bbox_2d=[0, 0, 101, 50], image=2
        ): "must lie inside image 2 (100x50 px: x in [0, 100], y in [0, 50])",
        call("crop", bbox_2d=[0, 0, 10, 10], image=3): "there is no image 3; this episode has shown images 1 to 2",
    }
    for text, message in cases.items():
        with pytest.raises(ActionError, match=re.escape(message)):
            tools.parse(text, context)
    # without a context (no images known) only the context-free rule applies
    assert tools.parse(call("crop", bbox_2d=[0, 0, 4000, 10])).name == "crop"
    assert tools.has_constraints and not TOOLS.has_constraints


def test_constraints_and_the_example_reach_the_schema_and_the_prompt() -> None:
    schema = BOXED.json_schema()["function"]
    assert schema["description"] == (
        "crop a box of an image Rules: bbox_2d is [x1, y1, x2, y2] with x1 < x2 and y1 < y2; "
        "bbox_2d lies inside the image image names, in its pixels."
    )
    assert schema["parameters"]["examples"] == [{"bbox_2d": [10, 10, 60, 40]}]
    jsonschema.Draft202012Validator.check_schema(schema["parameters"])
    assert (
        example_call(BOXED.json_schema())
        == '<tool_call>{"name": "crop", "arguments": {"bbox_2d": [10, 10, 60, 40]}}</tool_call>'
    )
    assert BOXED.example() == example_call(BOXED.json_schema())


def test_declarations_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="the example call is not valid"):
        Tool("crop", "", BOXED.args, constraints=(OrderedBox("bbox_2d"),), example_arguments={"bbox_2d": [5, 5, 1, 1]})
    with pytest.raises(ValueError, match=r"reads undeclared argument\(s\) \['box'\]"):
        Tool("crop", "", BOXED.args, constraints=(OrderedBox("box"),))
    with pytest.raises(ValueError, match="constraints are Constraint instances"):
        Tool("crop", "", BOXED.args, constraints=(lambda a, c: None,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"fixed length or min_items\.\.max_items, not both"):
        Arg("p", "ints", "", 0, 1, length=2, max_items=3)
    with pytest.raises(ValueError, match="one bound for all items"):
        Arg("p", "ints", "", 0, (1, 2), min_items=1, max_items=3)
    with pytest.raises(ValueError, match="only list arguments take"):
        Arg("p", "int", "", 0, 1, item_length=2)


def test_variable_length_lists_of_points() -> None:
    move = ToolSet([Tool("move_to", "move along waypoints", (WAYPOINTS,))])
    parsed = move.parse(call("move_to", path=[[10, 20], [500.5, 384]]))
    assert parsed.arguments == {"path": [[10.0, 20.0], [500.5, 384.0]]}
    cases = {
        call("move_to", path=[]): "must hold 1 to 3 lists of 2 numbers, got 0",
        call("move_to", path=[[1, 1]] * 4): "must hold 1 to 3 lists of 2 numbers, got 4",
        call("move_to", path=[[1, 1, 1]]): "item 0 of argument 'path' of move_to must be a list of 2 numbers",
        call(
            "move_to", path=[[1, 1], [1, 400]]
        ): "item 1[1] of argument 'path' of move_to must be in [0.0, 384.0], got 400",
        call("move_to", path=[1, 2]): "item 0 of argument 'path' of move_to must be a list of 2 numbers, got '1'",
    }
    for text, message in cases.items():
        with pytest.raises(ActionError, match=re.escape(message)):
            move.parse(text)
    schema = WAYPOINTS.json_schema()
    assert schema["minItems"] == 1 and schema["maxItems"] == 3 and schema["items"]["prefixItems"][1]["maximum"] == 384.0
    jsonschema.validate([[1.0, 2.0]], schema)
    assert describe_value(schema).startswith(
        "list of 1 to 3 items, each a list of 2: [number in [0, 512], number in [0, 384]]"
    )
    flat = Arg("xs", "ints", "", 0, 9, min_items=2, max_items=5)
    assert describe_value(flat.json_schema()) == "list of 2 to 5 integers, each in [0, 9]"
    assert flat.example() == [0, 0] and WAYPOINTS.example() == [[0.0, 0.0]]


def _wide_enough(arguments: Mapping[str, Any], context: ToolContext) -> str | None:
    x1, _, x2, _ = arguments["bbox_2d"]
    return None if x2 - x1 > 30 else f"a box must be wider than 30 px, got {x2 - x1}"


def test_a_rule_from_a_function_pickles_and_reports_its_problem() -> None:
    tool = Tool("crop", "", BOXED.args, constraints=(Rule(_wide_enough, "boxes are wider than 30 px", ("bbox_2d",)),))
    tools = pickle.loads(pickle.dumps(ToolSet([tool])))
    with pytest.raises(ActionError, match="crop: a box must be wider than 30 px, got 10"):
        tools.parse(call("crop", bbox_2d=[0, 0, 10, 10]))
    assert "Rules: boxes are wider than 30 px." in tool.json_schema()["function"]["description"]
