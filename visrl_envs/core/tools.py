"""Tools and answers as data, and the text grammar that parses agent output onto them.

A family declares once what an agent may send: its tools (:class:`Tool` with typed, ranged
:class:`Arg`\\ s) and its answer (:class:`AnswerFormat`). From that one declaration come

- the JSON function schemas a chat template takes (``tools=[{"type": "function", "function":
  {...}}]``, the Qwen2.5-VL / OpenAI form): :meth:`ToolSet.schemas`;
- the parser and validator of agent text: :meth:`ToolSet.parse`;
- the human-readable prompt (built from the schemas by :func:`visrl_envs.core.prompt.build_prompt`).

The numeric interface is not derived from this table (a swap of two tiles is ``Discrete`` over
pairs, an SVG program is a primitive to draw): each family maps its numeric action onto the same
typed action the parser returns, the conformance suite checks that the text an agent would write
for a numeric action gives the same state and reward, and :mod:`visrl_envs.core.numeric` validates
numeric actions per space kind.

A tool also declares the rules across its arguments (:class:`Constraint`: a box has x1 < x2 and
y1 < y2, and lies inside the image it refers to) and, optionally, the example call the prompt shows.
Rules that depend on the episode (the sizes of the images shown so far) read a :class:`ToolContext`
the env passes to the parser.

Grammar (the convention of UI-R1, DeepEyes, Chain-of-Focus and Jigsaw-R1): an optional
``<think>...</think>``, then either one ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
or one ``<answer>...</answer>``. Code-writing envs also take bare code. Anything else is an
:class:`ActionError` whose message tells the model what to fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from visrl_envs.core.errors import ActionError
from visrl_envs.core.text import quote

ArgKind = Literal["int", "float", "choice", "text", "ints", "floats"]
_KINDS = ("int", "float", "choice", "text", "ints", "floats")
#: Longest free-text argument any tool may declare.
MAX_TEXT_ARG = 4096


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"  # unpickles as this module's REQUIRED: identity checks survive pickling


#: The default of an argument that must be given.
REQUIRED: Any = _Required()


def _bounds(value: float | Sequence[float], length: int) -> tuple[float, ...]:
    if isinstance(value, int | float):
        return (float(value),) * max(length, 1)
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Arg:
    """One tool argument. Kinds:

    - ``"int"`` / ``"float"``: a number in ``[low, high]`` (floats come back as ``float``);
    - ``"choice"``: one of ``choices`` (strings);
    - ``"text"``: free text of at most ``max_length`` characters;
    - ``"ints"`` / ``"floats"``: a list of numbers: exactly ``length`` of them, or between
      ``min_items`` and ``max_items`` (``length=0``); ``low``/``high`` are one bound for every item,
      or one per item of a fixed-length list (a ``bbox_2d`` of 4 ints bounded by width and height).
      With ``item_length=k`` (k >= 2) each item is itself a list of k numbers (waypoints
      ``[[x, y], ...]``), and per-item bounds are per position inside an item.

    ``default`` makes the argument optional. The declaration is checked when it is made.
    """

    name: str
    kind: ArgKind
    description: str = ""
    low: float | tuple[float, ...] = 0
    high: float | tuple[float, ...] = 0
    choices: tuple[str, ...] = ()
    length: int = 0
    max_length: int = 0
    default: Any = REQUIRED
    min_items: int = 0
    max_items: int = 0
    item_length: int = 0

    def __post_init__(self) -> None:
        where = f"Arg {self.name!r}"
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"{where}: the name must be an identifier")
        if self.kind not in _KINDS:
            raise ValueError(f"{where}: kind must be one of {_KINDS}, got {self.kind!r}")
        if self.kind == "choice" and (not self.choices or not all(isinstance(c, str) for c in self.choices)):
            raise ValueError(f"{where}: a choice needs a non-empty tuple of strings")
        if self.kind != "choice" and self.choices:
            raise ValueError(f"{where}: only choice arguments take choices")
        if self.kind == "text" and not 1 <= self.max_length <= MAX_TEXT_ARG:
            raise ValueError(f"{where}: text needs max_length in 1..{MAX_TEXT_ARG}")
        if self.kind in ("ints", "floats"):
            if self.length and (self.min_items or self.max_items):
                raise ValueError(f"{where}: a list has a fixed length or min_items..max_items, not both")
            if self.length and not 1 <= self.length <= 256:
                raise ValueError(f"{where}: a list needs length in 1..256")
            if not self.length and not 1 <= self.min_items <= self.max_items <= 256:
                raise ValueError(f"{where}: a list needs length in 1..256, or 1 <= min_items <= max_items <= 256")
            if self.item_length and not 2 <= self.item_length <= 16:
                raise ValueError(f"{where}: item_length is 0 (items are numbers) or 2..16 (items are lists)")
            for bound in (self.low, self.high):
                if not isinstance(bound, int | float) and len(tuple(bound)) != self._bound_count:
                    raise ValueError(
                        f"{where}: per-item bounds need {self._bound_count} values"
                        if self._bound_count
                        else f"{where}: a variable-length list of numbers takes one bound for all items"
                    )
        elif self.length or self.min_items or self.max_items or self.item_length:
            raise ValueError(f"{where}: only list arguments take a length, min_items, max_items or item_length")
        if self.kind in ("int", "float", "ints", "floats"):
            if self.kind in ("int", "float") and not isinstance(self.low, int | float):
                raise ValueError(f"{where}: scalar bounds expected")
            lows, highs = self.lows, self.highs
            if not all(math.isfinite(v) for v in lows + highs) or any(
                lo > hi for lo, hi in zip(lows, highs, strict=True)
            ):
                raise ValueError(f"{where}: bounds must be finite with low <= high")
            if self.kind in ("int", "ints") and not all(float(v).is_integer() for v in lows + highs):
                raise ValueError(f"{where}: integer arguments need integer bounds")
        if not self.required:
            try:
                object.__setattr__(self, "default", self.validate(self.default, "the declaration"))
            except ActionError as err:
                raise ValueError(f"{where}: invalid default ({err})") from None

    # -- declaration helpers -------------------------------------------------------------------
    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def _bound_count(self) -> int:
        """How many values per-item bounds have: the item's length, or a fixed list's (0: scalar only)."""
        return self.item_length or self.length

    @property
    def lows(self) -> tuple[float, ...]:
        return _bounds(self.low, self._bound_count)

    @property
    def highs(self) -> tuple[float, ...]:
        return _bounds(self.high, self._bound_count)

    @property
    def count_range(self) -> tuple[int, int]:
        """The fewest and most items of a list argument."""
        return (self.length, self.length) if self.length else (self.min_items, self.max_items)

    def _item_schema(self, index: int) -> dict[str, Any]:
        integer = self.kind in ("int", "ints")
        cast = int if integer else float
        return {
            "type": "integer" if integer else "number",
            "minimum": cast(self.lows[index]),
            "maximum": cast(self.highs[index]),
        }

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of this argument's value."""
        schema: dict[str, Any]
        if self.kind in ("int", "float"):
            schema = self._item_schema(0)
        elif self.kind == "choice":
            schema = {"type": "string", "enum": list(self.choices)}
        elif self.kind == "text":
            schema = {"type": "string", "maxLength": self.max_length}
        else:
            fewest, most = self.count_range
            schema = {"type": "array", "minItems": fewest, "maxItems": most}
            scalar_bounds = isinstance(self.low, int | float) and isinstance(self.high, int | float)
            if self.item_length:
                item: dict[str, Any] = {"type": "array", "minItems": self.item_length, "maxItems": self.item_length}
                if scalar_bounds:
                    item["items"] = self._item_schema(0)
                else:
                    item["prefixItems"] = [self._item_schema(i) for i in range(self.item_length)]
                    item["items"] = False
                schema["items"] = item
            elif scalar_bounds:
                schema["items"] = self._item_schema(0)
            else:
                schema["prefixItems"] = [self._item_schema(i) for i in range(self.length)]
                schema["items"] = False
        if self.description:
            schema["description"] = self.description
        if not self.required:
            schema["default"] = self.default
        return schema

    def example(self) -> Any:
        """A valid value (the default, else the lowest)."""
        if not self.required:
            return self.default
        if self.kind == "choice":
            return self.choices[0]
        if self.kind == "text":
            return "text"
        cast = int if self.kind in ("int", "ints") else float
        if self.kind in ("int", "float"):
            return cast(self.lows[0])
        if self.item_length:
            return [[cast(v) for v in self.lows] for _ in range(self.count_range[0])]
        return [cast(v) for v in _bounds(self.low, self.count_range[0])]

    # -- validation ----------------------------------------------------------------------------
    def validate(self, value: Any, tool: str) -> Any:
        """``value`` checked and converted (ints as ``int``, floats as ``float``); raises
        :class:`ActionError` with a message for the agent."""
        where = f"argument {self.name!r} of {tool}"
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ActionError(f"{where} must be one of {list(self.choices)}, got {_shown(value)}")
            return value
        if self.kind == "text":
            if not isinstance(value, str):
                raise ActionError(f"{where} must be a string, got {_shown(value)}")
            if len(value) > self.max_length:
                raise ActionError(f"{where} is {len(value)} characters long; the limit is {self.max_length}")
            return value
        if self.kind in ("int", "float"):
            return self._number(value, 0, where)
        fewest, most = self.count_range
        what = f"lists of {self.item_length} numbers" if self.item_length else "numbers"
        count = str(fewest) if fewest == most else f"{fewest} to {most}"
        if not isinstance(value, list):
            raise ActionError(f"{where} must be a list of {count} {what}, got {_shown(value)}")
        if not fewest <= len(value) <= most:
            exactly = "exactly " if fewest == most else ""
            raise ActionError(f"{where} must hold {exactly}{count} {what}, got {len(value)}")
        if not self.item_length:
            return [self._number(v, i if self.length else 0, f"item {i} of {where}") for i, v in enumerate(value)]
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, list) or len(item) != self.item_length:
                raise ActionError(
                    f"item {i} of {where} must be a list of {self.item_length} numbers, got {_shown(item)}"
                )
            items.append([self._number(v, j, f"item {i}[{j}] of {where}") for j, v in enumerate(item)])
        return items

    def _number(self, value: Any, index: int, where: str) -> int | float:
        integer = self.kind in ("int", "ints")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ActionError(f"{where} must be a number, got {_shown(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ActionError(f"{where} must be a finite number")
        if integer:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ActionError(f"{where} must be an integer, got {value}")
                value = int(value)
        else:
            value = float(value)
        low, high = self.lows[index], self.highs[index]
        if not low <= value <= high:
            shown = (int(low), int(high)) if integer else (low, high)
            raise ActionError(f"{where} must be in [{shown[0]}, {shown[1]}], got {value}")
        return value


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return quote(text, 40)


@dataclass(frozen=True)
class ToolContext:
    """What the episode tells the parser beyond the tool table: the (width, height) of every image
    shown so far, image 1 first (a box is checked against the image it refers to). ``extra`` holds a
    family's own facts for its constraints."""

    image_sizes: tuple[tuple[int, int], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def image_size(self, index: int | None = None) -> tuple[int, int] | None:
        """The (width, height) of image ``index`` (from 1; ``None``: the latest), or ``None`` when
        the context knows no images. Raises :class:`ActionError` for an image that was not shown."""
        if not self.image_sizes:
            return None
        if index is None:
            return self.image_sizes[-1]
        if not 1 <= index <= len(self.image_sizes):
            shown = "image 1" if len(self.image_sizes) == 1 else f"images 1 to {len(self.image_sizes)}"
            raise ActionError(f"there is no image {index}; this episode has shown {shown}")
        return self.image_sizes[index - 1]


class Constraint:
    """A rule across a tool's arguments, declared with the tool and checked after each argument is
    valid on its own. Subclasses set :attr:`description` (said in the tool's description for the
    prompt), name the arguments they read in :meth:`arguments`, and raise :class:`ActionError` in
    :meth:`check`. A rule that needs the episode (``context``) does nothing when the context knows
    nothing (at declaration, when the custom example is checked). Subclasses are picklable classes
    (the tool table travels with the env), not closures."""

    description: str = ""

    def arguments(self) -> tuple[str, ...]:
        return ()

    def check(self, arguments: Mapping[str, Any], context: ToolContext, tool: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class OrderedBox(Constraint):
    """``arg`` is a box ``[x1, y1, x2, y2]`` with ``x1 < x2`` and ``y1 < y2``."""

    arg: str

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{self.arg} is [x1, y1, x2, y2] with x1 < x2 and y1 < y2"

    def arguments(self) -> tuple[str, ...]:
        return (self.arg,)

    def check(self, arguments: Mapping[str, Any], context: ToolContext, tool: str) -> None:
        x1, y1, x2, y2 = arguments[self.arg]
        if not (x1 < x2 and y1 < y2):
            raise ActionError(f"{self.arg} of {tool} must have x1 < x2 and y1 < y2, got {list(arguments[self.arg])}")


@dataclass(frozen=True)
class BoxInsideImage(Constraint):
    """``arg``'s box lies inside the image it refers to: image number ``image_arg`` (an argument
    counting from 1) or, without one, the latest image; in that image's pixels."""

    arg: str
    image_arg: str | None = None

    @property
    def description(self) -> str:  # type: ignore[override]
        which = f"the image {self.image_arg} names" if self.image_arg else "the latest image"
        return f"{self.arg} lies inside {which}, in its pixels"

    def arguments(self) -> tuple[str, ...]:
        return (self.arg,) if self.image_arg is None else (self.arg, self.image_arg)

    def check(self, arguments: Mapping[str, Any], context: ToolContext, tool: str) -> None:
        index = None if self.image_arg is None else arguments[self.image_arg]
        size = context.image_size(index)
        if size is None:
            return
        width, height = size
        x1, y1, x2, y2 = arguments[self.arg]
        if not (0 <= x1 <= width and 0 <= x2 <= width and 0 <= y1 <= height and 0 <= y2 <= height):
            which = "the latest image" if index is None else f"image {index}"
            raise ActionError(
                f"{self.arg} of {tool} must lie inside {which} ({width}x{height} px: x in [0, {width}], "
                f"y in [0, {height}]), got {list(arguments[self.arg])}"
            )


@dataclass(frozen=True)
class Rule(Constraint):
    """A constraint from a module-level function ``check(arguments, context) -> problem or None``
    (the problem is the message for the agent) and its description."""

    function: Callable[[Mapping[str, Any], ToolContext], str | None]
    text: str
    reads: tuple[str, ...] = ()

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.text

    def arguments(self) -> tuple[str, ...]:
        return self.reads

    def check(self, arguments: Mapping[str, Any], context: ToolContext, tool: str) -> None:
        problem = self.function(arguments, context)
        if problem:
            raise ActionError(f"{tool}: {problem}")


@dataclass(frozen=True)
class Tool:
    """A tool the agent may call: its name, a one-line description, its arguments, the rules across
    them (:class:`Constraint`) and optionally the arguments of the example call the prompt shows
    (checked when declared; by default the required arguments at their lowest values)."""

    name: str
    description: str
    args: tuple[Arg, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    example_arguments: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "a").isalnum():
            raise ValueError(f"tool names are letters, digits and '_', got {self.name!r}")
        names = [a.name for a in self.args]
        if len(set(names)) != len(names):
            raise ValueError(f"tool {self.name!r} declares an argument twice")
        for rule in self.constraints:
            if not isinstance(rule, Constraint):
                raise ValueError(f"tool {self.name!r}: constraints are Constraint instances, got {rule!r}")
            unknown = set(rule.arguments()) - set(names)
            if unknown:
                raise ValueError(
                    f"tool {self.name!r}: constraint {rule!r} reads undeclared argument(s) {sorted(unknown)}"
                )
        if self.example_arguments is not None:
            try:
                self.validate(dict(self.example_arguments), ToolContext())
            except ActionError as err:
                raise ValueError(f"tool {self.name!r}: the example call is not valid ({err})") from None

    def validate(self, arguments: Mapping[str, Any], context: ToolContext) -> dict[str, Any]:
        """The call's arguments checked and completed with defaults, then its constraints checked;
        raises :class:`ActionError` with a message for the agent."""
        unknown = set(arguments) - {a.name for a in self.args}
        if unknown:
            raise ActionError(f"{self.name} has no argument(s) {sorted(quote(u, 20) for u in unknown)}")
        values: dict[str, Any] = {}
        for arg in self.args:
            if arg.name in arguments:
                values[arg.name] = arg.validate(arguments[arg.name], self.name)
            elif arg.required:
                raise ActionError(f"{self.name} needs argument {arg.name!r} ({json.dumps(arg.json_schema())})")
            else:
                values[arg.name] = json.loads(json.dumps(arg.default)) if isinstance(arg.default, list) else arg.default
        for rule in self.constraints:
            rule.check(values, context, self.name)
        return values

    def json_schema(self) -> dict[str, Any]:
        """The function schema chat templates take (``tools=[...]``); constraints are said in the
        description, the custom example is the parameters' ``examples``."""
        description = self.description
        if self.constraints:
            description += " Rules: " + "; ".join(rule.description for rule in self.constraints) + "."
        parameters: dict[str, Any] = {
            "type": "object",
            "properties": {a.name: a.json_schema() for a in self.args},
            "required": [a.name for a in self.args if a.required],
            "additionalProperties": False,
        }
        if self.example_arguments is not None:
            parameters["examples"] = [dict(self.example_arguments)]
        return {
            "type": "function",
            "function": {"name": self.name, "description": description, "parameters": parameters},
        }

    def example(self) -> str:
        """The text of a valid call: the declared example, else the required arguments only."""
        if self.example_arguments is not None:
            return tool_call_text(self.name, dict(self.example_arguments))
        return tool_call_text(self.name, {a.name: a.example() for a in self.args if a.required})


@dataclass(frozen=True)
class ToolCall:
    """A validated call of one declared tool (optional arguments filled with their defaults)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


AnswerKind = Literal["text", "choice", "integers", "code"]


@dataclass(frozen=True)
class AnswerFormat:
    """What an ``<answer>`` holds, as data. Kinds:

    - ``"choice"``: one of ``options`` (``("A", "B", ...)`` or words like ``("done",)``), matched
      case-insensitively, with brackets and a final full stop ignored (``(b).`` means ``B``);
    - ``"integers"``: exactly ``count`` integers in ``[low, high]`` separated by spaces, commas,
      semicolons or newlines, shown in ``rows`` rows in the example;
    - ``"code"``: a program in ``language``; it may also be sent bare or in a fenced block;
    - ``"text"``: free text of at most ``max_length`` characters.
    """

    kind: AnswerKind
    description: str
    options: tuple[str, ...] = ()
    count: int = 0
    low: int = 0
    high: int = 0
    rows: int = 1
    language: str = ""
    max_length: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in ("text", "choice", "integers", "code"):
            raise ValueError(f"answer kind must be text, choice, integers or code, got {self.kind!r}")
        if self.kind == "choice" and not self.options:
            raise ValueError("a choice answer needs options")
        if self.kind == "integers" and (self.count < 1 or self.low > self.high or self.count % max(self.rows, 1)):
            raise ValueError("an integers answer needs count >= 1 (a multiple of rows) and low <= high")
        if self.kind == "code" and not self.language:
            raise ValueError("a code answer names its language")

    @property
    def bare_allowed(self) -> bool:
        """Whether text without ``<answer>`` tags counts as the answer (code only)."""
        return self.kind == "code"

    def parse(self, content: str) -> Any:
        """The answer's value: the canonical option, a list of ints, the code, or the text."""
        if self.kind == "choice":
            return parse_choice(content, self.options)
        if self.kind == "integers":
            return parse_integers(content, self.count, self.low, self.high)
        if self.kind == "code":
            return strip_code_fence(content, self.language)
        if len(content) > self.max_length:
            raise ActionError(f"the answer is {len(content)} characters long; the limit is {self.max_length}")
        return content

    def example(self) -> str:
        """An answer in the right format (not necessarily the right answer)."""
        if self.kind == "choice":
            body = self.options[0]
        elif self.kind == "integers":
            values = [self.low + i % (self.high - self.low + 1) for i in range(self.count)]
            per_row = self.count // self.rows
            body = "\n".join(
                " ".join(str(v) for v in values[r * per_row : (r + 1) * per_row]) for r in range(self.rows)
            )
        elif self.kind == "code":
            body = f"...your {self.language} code..."
        else:
            body = "..."
        return answer_text(body)

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the answer's parsed value."""
        if self.kind == "choice":
            return {"type": "string", "enum": list(self.options)}
        if self.kind == "integers":
            item = {"type": "integer", "minimum": self.low, "maximum": self.high}
            return {"type": "array", "items": item, "minItems": self.count, "maxItems": self.count}
        if self.kind == "code":
            return {"type": "string", "contentMediaType": f"text/x-{self.language}"}
        return {"type": "string", "maxLength": self.max_length}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "example": self.example(),
            "schema": self.json_schema(),
            "bare_allowed": self.bare_allowed,
        }


def parse_choice(content: str, options: Sequence[str]) -> str:
    """The option ``content`` names: case-insensitive, ignoring surrounding brackets, spaces and a
    full stop (``"(b)."`` -> ``"B"``); raises :class:`ActionError` listing the options."""
    cleaned = content.strip().rstrip(".").strip().strip("()[]").strip().lower()
    for option in options:
        if cleaned == option.lower():
            return option
    raise ActionError(f"answer with one of {', '.join(options)}; got {quote(content, 40)}")


def parse_integers(content: str, count: int, low: int, high: int) -> list[int]:
    """Exactly ``count`` integers in ``[low, high]`` separated by spaces, commas, semicolons or
    newlines (backticks ignored)."""
    cleaned = content
    for ch in "`,;\n":
        cleaned = cleaned.replace(ch, " ")
    tokens = cleaned.split()
    if not all(t.lstrip("-").isdigit() and len(t) <= 6 for t in tokens):
        raise ActionError(f"the answer must hold only integers in {low}..{high}; got {quote(content, 40)}")
    values = [int(t) for t in tokens]
    if len(values) != count or not all(low <= v <= high for v in values):
        raise ActionError(f"the answer must hold exactly {count} integers in {low}..{high}, got {len(values)}")
    return values


def strip_code_fence(content: str, language: str = "") -> str:
    """The code inside the first fenced block of ``content`` (dropping a language tag line), or
    ``content`` itself when it has no complete fence."""
    fence = content.find("```")
    fence_end = content.find("```", fence + 3) if fence >= 0 else -1
    if fence_end < 0:
        return content
    body = content[fence + 3 : fence_end]
    first_line, newline, rest = body.partition("\n")
    tag = first_line.strip().lower()
    if newline and (tag == language.lower() or (tag.isalnum() and len(tag) <= 12) or not tag):
        return rest
    return body


@dataclass(frozen=True)
class Answer:
    """An ``<answer>`` (or a bare code reply): its stripped text and the value parsed from it."""

    text: str
    value: Any = None


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
    """The tools and the answer format of one env, and the parser of agent text onto them."""

    def __init__(self, tools: Sequence[Tool] = (), answer: AnswerFormat | None = None) -> None:
        self.tools = tuple(tools)
        self.by_name = {t.name: t for t in self.tools}
        if len(self.by_name) != len(self.tools):
            raise ValueError("tool names must be unique")
        if not self.tools and answer is None:
            raise ValueError("an env needs at least one tool or an answer format")
        self.answer = answer
        #: Whether some tool has constraints (the env then passes its :class:`ToolContext` to parse).
        self.has_constraints = any(t.constraints for t in self.tools)

    def schemas(self) -> list[dict[str, Any]]:
        """The JSON function schemas of the tools (``tools=`` of a chat template)."""
        return [t.json_schema() for t in self.tools]

    def parse(self, text: Any, context: ToolContext | None = None) -> ParsedAction:
        """Parse one turn of agent text; raise :class:`ActionError` with a readable message.
        ``context`` (the episode's images) is what tool constraints that depend on it read."""
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
            return self._parse_call(calls[0], context or ToolContext())
        if answers:
            return self._parse_answer(answers[-1].strip())
        if unclosed_call:
            raise ActionError("unclosed <tool_call>: end it with </tool_call>")
        if unclosed_answer and not (self.answer and self.answer.bare_allowed):
            raise ActionError("unclosed <answer>: end it with </answer>")
        if self.answer is not None and self.answer.bare_allowed:
            return self._parse_answer(body.replace("<answer>", "").strip())
        expected = " or ".join(
            (["<tool_call>{...}</tool_call>"] if self.tools else []) + (["<answer>...</answer>"] if self.answer else [])
        )
        raise ActionError(f"no {expected} found in {quote(text)}")

    def _parse_answer(self, content: str) -> Answer:
        if self.answer is None:
            raise ActionError(f"this task takes no <answer>; call a tool ({', '.join(self.by_name)})")
        return Answer(content, self.answer.parse(content))

    def _parse_call(self, payload: str, context: ToolContext) -> ToolCall:
        if not self.tools:
            raise ActionError("this task has no tools; reply with <answer>...</answer>")
        try:
            call = json.loads(payload)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, huge integers, deep nesting
            msg = err.msg if isinstance(err, json.JSONDecodeError) else "too large or nested too deeply"
            raise ActionError(f"tool call is not valid JSON ({msg}): {quote(payload)}") from None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ActionError('a tool call is a JSON object {"name": ..., "arguments": {...}}')
        tool = self.by_name.get(call["name"])
        if tool is None:
            raise ActionError(f"unknown tool {quote(call['name'], 40)}; tools: {', '.join(self.by_name)}")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, dict):
            raise ActionError(f"'arguments' of {tool.name} must be a JSON object")
        return ToolCall(tool.name, tool.validate(arguments, context))
