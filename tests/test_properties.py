"""Property-based checks (hypothesis) of the parsers and the jigsaw board."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from visrl_envs.core.tools import ActionError, Answer, Arg, Tool, ToolCall, ToolSet, tag_blocks
from visrl_envs.envs.jigsaw.board import TileBoard, minimum_swaps, solving_swaps
from visrl_envs.envs.svg.env import extract_svg

TOOLS = ToolSet([Tool("swap", "", (Arg("a", "int", "", 1, 9), Arg("b", "int", "", 1, 9)))])
PIECES = ["<tool_call>", "</tool_call>", "<answer>", "</answer>", "<think>", "</think>", "<svg", "</svg>", "```",
          '{"name": "swap", "arguments": {"a": 1, "b": 2}}', "{", "}", "x", " ", "\n", "é"]  # fmt: skip
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_parser_returns_an_action_or_a_readable_error(text: str) -> None:
    try:
        parsed = TOOLS.parse(text)
    except ActionError as err:
        assert str(err)
    else:
        assert isinstance(parsed, ToolCall | Answer)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_tag_blocks_matches_the_lazy_regex(text: str) -> None:
    blocks, unclosed = tag_blocks(text, "answer")
    assert blocks == re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if unclosed:
        assert "<answer>" in text


@settings(max_examples=300, deadline=None)
@given(texts)
def test_extract_svg_never_crashes(text: str) -> None:
    try:
        code = extract_svg(text)
    except ActionError:
        return
    assert code.lower().startswith("<svg") and code.endswith(">")


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(6))), st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=12))
def test_board_stays_a_permutation_and_counts_right(perm: list[int], swaps: list[tuple[int, int]]) -> None:
    image = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    board = TileBoard(image, 2, 3)
    board.set_permutation(np.array(perm))
    for a, b in swaps:
        before = board.in_place
        delta = board.swap(a, b)
        assert board.in_place == before + delta
        assert sorted(board.perm.tolist()) == list(range(6))
        assert board.in_place == int(np.sum(board.perm == np.arange(6)))
    for a, b in solving_swaps(board.perm):
        board.swap(a, b)
    assert board.solved and np.array_equal(board.image, TileBoard(image, 2, 3).image)


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(7))))
def test_solving_swaps_are_minimal(perm: list[int]) -> None:
    assert len(solving_swaps(np.array(perm))) == minimum_swaps(np.array(perm))
