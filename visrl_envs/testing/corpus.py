"""Hostile actions for the contract checks, derived from what each env declares.

- Text: :func:`malformed_text_actions` builds garbage around the env's own tool table and answer
  format (its tool names, argument kinds and ranges), and says for each string whether the
  declared grammar must refuse it. A free-text answer accepts ``<answer>%%%</answer>``; a choice
  answer must not: so "must be refused" is decided by the env's :class:`ToolSet`, not by a list.
- Numeric: :func:`malformed_numeric_actions` derives, from the action space itself, values that
  are outside it (wrong shape, NaN, below ``low`` or above ``high`` of a ``Box``, a ``Discrete``'s
  ``start - 1``...), so a 3-d ``Box`` is never handed ``[0.5] * 3`` as garbage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from visrl_envs.core.errors import ActionError
from visrl_envs.core.tools import Arg, ToolSet

#: Structural garbage: wrong or missing tags, bad JSON, bombs. Tool names are filled in per env.
_STRUCTURAL = [
    "",
    " ",
    "<tool_call>",
    "<tool_call>{}</tool_call>",
    "<tool_call>not json</tool_call>",
    '<tool_call>{"name": 3}</tool_call>',
    '<tool_call>{"name": "no_such_tool_here", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "{tool}", "arguments": []}</tool_call><tool_call>{"name": "{tool}"}</tool_call>',
    '<tool_call>{"name": "{tool}", "arguments": 7}</tool_call>',
    '<tool_call>{"name": "{tool}", "arguments": {"no_such_argument": 1}}</tool_call>',
    "<tool_call>" + "[" * 5000 + "</tool_call>",
    '<tool_call>{"name": "{tool}", "arguments": {"a": ' + "7" * 5000 + "}}</tool_call>",
    "<answer>",
    "<think>unclosed",
    "<answer>done</answer><tool_call>{}</tool_call>",
    "<tool_call>{}</tool_call><answer>x</answer>",
    "\ud800\udfff surrogate soup \u202e",
    "A" * 70000,
]

#: Answer contents that no choice, integers or code answer takes (a free-text answer may).
_ANSWER_CONTENTS = [
    "%%%",
    "\x00\x01\x02",
    "9" * 10000,
    "1 " * 5000,
    "<svg",
    "<svg xmlns='http://www.w3.org/2000/svg'><rect",
    "<svg><g><g></svg>",
    "<!DOCTYPE svg [<!ENTITY x 'y'>]><svg>&x;</svg>",
    "hello",
]

_BAD_VALUES: list[Any] = [None, "1", True, 1e999, float("nan"), [], {}, -(10**20), 10**20, "x" * 5000]


@dataclass(frozen=True)
class HostileText:
    """One hostile text action and whether the env's declared grammar must refuse it."""

    text: str
    must_fail: bool


def _arg_garbage(arg: Arg) -> list[Any]:
    """Values of the wrong type or outside the range of ``arg``."""
    out = list(_BAD_VALUES)
    cast = int if arg.kind in ("int", "ints") else float
    low, high = cast(arg.lows[0]) if arg.lows else 0, cast(arg.highs[0]) if arg.highs else 0
    if arg.kind in ("int", "float"):
        out += [low - 1, high + 1, [low]]
        if arg.kind == "int":
            out.append(low + 0.5)
    elif arg.kind == "choice":
        out += ["".join(arg.choices) + "?", arg.choices[0].upper() + "!", list(arg.choices)]
    elif arg.kind == "text":
        out += [7, ["text"], "y" * (arg.max_length + 1)]
    else:
        fewest, most = arg.count_range
        item = [low] * arg.item_length if arg.item_length else low
        out += [[item] * (most + 1), [item] * max(0, fewest - 1), [[item]] * fewest, "[1, 2]", [None] * fewest]
        out.append([[high + 1] * arg.item_length] * fewest if arg.item_length else [high + 1] * fewest)
    return out


def _tool_garbage(tools: ToolSet) -> list[str]:
    out: list[str] = []
    for tool in tools.tools:
        required = {a.name: a.example() for a in tool.args if a.required}
        for arg in tool.args:
            for bad in _arg_garbage(arg):
                arguments = {**required, arg.name: bad}
                try:
                    payload = json.dumps({"name": tool.name, "arguments": arguments}, allow_nan=True)
                except (TypeError, ValueError):
                    continue
                out.append(f"<tool_call>{payload}</tool_call>")
        if required:
            out.append(f'<tool_call>{{"name": "{tool.name}", "arguments": {{}}}}</tool_call>')
    return out


def _refused(tools: ToolSet, text: str) -> bool:
    try:
        tools.parse(text)
    except ActionError:
        return True
    return False


def malformed_text_actions(tools: ToolSet, n: int = 200, seed: int = 0) -> list[HostileText]:
    """``n`` hostile text actions for an env with this tool table: structural garbage, each tool's
    arguments of wrong types and ranges, hostile answer contents, then seeded random mutations of
    those. ``must_fail`` is whether ``tools.parse`` refuses the text (an env may refuse more: a
    program that does not render, a constraint of the episode)."""
    name = tools.tools[0].name if tools.tools else "no_tools"
    corpus = [t.replace("{tool}", name) for t in _STRUCTURAL]
    corpus += _tool_garbage(tools)
    corpus += [f"<answer>{c}</answer>" for c in _ANSWER_CONTENTS] + _ANSWER_CONTENTS
    rng = np.random.default_rng(seed)
    alphabet = list("<>{}[]\"':,/\\ \n\tabcxyz0123456789-.\x00é漢")
    base = list(corpus)
    while len(corpus) < n:
        kind = int(rng.integers(4))
        noise = "".join(rng.choice(alphabet, size=int(rng.integers(0, 200))))
        if kind == 0:
            corpus.append(noise)
        elif kind == 1:
            corpus.append(f"<tool_call>{noise}</tool_call>")
        elif kind == 2:
            corpus.append(f"<answer>{noise.replace('<', '').replace('>', '')}?!</answer>")
        else:
            text = base[int(rng.integers(len(base)))]
            cut = int(rng.integers(0, len(text) + 1))
            corpus.append(text[:cut] + noise + "#" * (1 + cut % 3) if text else noise + "#")
    return [HostileText(text, _refused(tools, text)) for text in corpus[:n]]


def malformed_numeric_actions(space: spaces.Space) -> list[tuple[str, Any]]:
    """Values outside ``space`` with a short description each, derived from the space (a
    ``Discrete``, ``MultiDiscrete`` or ``Box``): none of them is a valid action of it."""
    out: list[tuple[str, Any]] = [("None", None), ("a string", "3"), ("an object", object())]
    if isinstance(space, spaces.Discrete):
        start, n = int(space.start), int(space.n)
        out += [
            ("start - 1", start - 1),
            ("start + n", start + n),
            ("a huge integer", 10**9),
            ("a fraction", start + 0.5),
            ("NaN", np.nan),
            ("a bool", True),
            ("a nested list", [[start]]),
            ("a 2x2 array", np.zeros((2, 2), dtype=np.int64)),
            ("two integers", [start, start]),
        ]
    elif isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec).reshape(-1)
        starts = np.broadcast_to(np.asarray(space.start), space.nvec.shape).reshape(-1)
        ok = starts.copy()
        too_high, too_low = ok.copy(), ok.copy()
        too_high[0] = starts[0] + nvec[0]
        too_low[-1] = starts[-1] - 1
        out += [
            ("one item too many", np.concatenate([ok, ok[:1]])),
            ("one item too few", ok[:-1] if ok.size > 1 else np.zeros(0, dtype=np.int64)),
            ("first item at start + n", too_high),
            ("last item below start", too_low),
            ("fractions", ok.astype(np.float64) + 0.5),
            ("NaN", np.full(ok.shape, np.nan)),
            ("a bool", True),
            ("nested", [ok.tolist(), ok.tolist()]),
        ]
    elif isinstance(space, spaces.Box):
        low = np.broadcast_to(space.low, space.shape).astype(np.float64)
        high = np.broadcast_to(space.high, space.shape).astype(np.float64)
        middle = np.where(np.isfinite(low) & np.isfinite(high), (low + high) / 2, np.where(np.isfinite(low), low, 0.0))
        size = int(np.prod(space.shape))
        out += [
            ("one value too many", np.zeros(size + 1)),
            ("a bool", True),
            ("NaN", np.full(space.shape, np.nan)),
            ("inf", np.full(space.shape, np.inf)),
            ("strings", np.full(space.shape, "a")),
        ]
        if np.isfinite(low).any():
            below = middle.copy()
            below[np.isfinite(low)] = low[np.isfinite(low)] - 1
            out.append(("below low", below.astype(np.float64)))
        if np.isfinite(high).any():
            above = middle.copy()
            above[np.isfinite(high)] = high[np.isfinite(high)] + 1
            out.append(("above high", above.astype(np.float64)))
    else:
        raise TypeError(f"numeric action spaces are Discrete, MultiDiscrete or Box; got {space}")
    return out
