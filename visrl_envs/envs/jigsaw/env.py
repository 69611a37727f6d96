"""Jigsaw puzzles on real photos: interactive swapping (AGILE) and static questions (Jigsaw-R1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from visrl_envs.core.base import ActionMode, Outcome, Split, VisualEnv
from visrl_envs.core.files import PathList
from visrl_envs.core.images import draw_text_boxes
from visrl_envs.core.tools import ActionError, Answer, Arg, Tool, ToolCall, ToolSet, answer_text, tool_call_text
from visrl_envs.envs.jigsaw.board import TileBoard, solving_swaps
from visrl_envs.envs.jigsaw.photos import PhotoPool, augment, builtin_pool, user_pool


@dataclass(frozen=True)
class Rung:
    """One level of the jigsaw ladder: grid (rows, cols), tile-border mask ratio, low-texture share."""

    grid: tuple[int, int]
    mask_ratio: float = 0.0
    low_texture: float = 0.0


#: The ladder of the issue and Jigsaw-R1's curriculum: 2x1 -> 3x1 -> 2x2 -> 3x3 -> 4x4, then border
#: masking, then low-texture photos. 1-D grids are flipped (1x2, 1x3) with probability 1/2 (Jigsaw-R1).
LADDER = (
    Rung((2, 1)),
    Rung((3, 1)),
    Rung((2, 2)),
    Rung((3, 3)),
    Rung((4, 4)),
    Rung((4, 4), mask_ratio=0.1),
    Rung((4, 4), mask_ratio=0.1, low_texture=0.3),
)
#: The ladder level each common ``difficulty`` 0..3 stands for.
DIFFICULTY_LEVELS = {0: 0, 1: 2, 2: 3, 3: 6}
DEFAULT_SIZE = {"text": 336, "numeric": 84}


def grid_string(rows: int, cols: int, values: Sequence[int] | None = None) -> str:
    """Rows of space-separated indices (1-based positions by default), as Jigsaw-R1 prints grids."""
    values = list(range(1, rows * cols + 1)) if values is None else list(values)
    return "\n".join(" ".join(str(v) for v in values[r * cols : (r + 1) * cols]) for r in range(rows))


class JigsawEnv(VisualEnv):
    """Shared machinery of the jigsaw envs: photos, grid, board, overlays. See the subclasses."""

    family: ClassVar[str] = "jigsaw"

    def __init__(
        self,
        action_mode: ActionMode = "text",
        difficulty: int = 0,
        split: Split = "train",
        render_mode: str | None = None,
        *,
        size: int | None = None,
        grid: tuple[int, int] | None = None,
        images: PathList | None = None,
        mask_ratio: float | None = None,
        labels: bool = False,
        grid_lines: bool = False,
        level: int | None = None,
    ) -> None:
        super().__init__(action_mode, difficulty, split, render_mode)
        self.size = int(size or DEFAULT_SIZE[action_mode])
        if level is not None and not 0 <= level < len(LADDER):
            raise ValueError(f"level must be in 0..{len(LADDER) - 1}, got {level}")
        self.level = DIFFICULTY_LEVELS[self.difficulty] if level is None else int(level)
        rung = LADDER[self.level]
        if grid is not None:
            rows, cols = int(grid[0]), int(grid[1])
            if rows < 1 or cols < 1 or rows * cols < 2 or rows * cols > 64:
                raise ValueError(f"grid must have 2 to 64 tiles, got {grid}")
        else:
            rows, cols = rung.grid
        self.grid: tuple[int, int] = (rows, cols)
        self.flip_orientation = grid is None and rows != cols
        for r, c in {(rows, cols), (cols, rows)} if self.flip_orientation else {(rows, cols)}:
            if self.size % r or self.size % c:
                raise ValueError(f"size {self.size} is not divisible by the {r}x{c} grid")
        self.n_tiles = rows * cols
        self.mask_ratio = float(mask_ratio if mask_ratio is not None else rung.mask_ratio)
        self.low_texture_share = rung.low_texture
        if not 0 <= self.mask_ratio < 0.5:
            raise ValueError("mask_ratio must be in [0, 0.5)")
        self.labels = bool(labels)
        self.grid_lines = bool(grid_lines)
        self._user_images = images
        self.board: TileBoard | None = None
        self.rows, self.cols = rows, cols
        self._overlay: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_pool", None)  # photos reload lazily (and are cached per process)
        return state

    # -- task ----------------------------------------------------------------------------------
    @cached_property
    def _pool(self) -> PhotoPool:
        return user_pool(self._user_images) if self._user_images is not None else builtin_pool(self.split)

    def _draw_board(self, rng: np.random.Generator) -> TileBoard:
        rows, cols = self.grid
        if self.flip_orientation and rng.random() < 0.5:
            rows, cols = cols, rows
        self.rows, self.cols = rows, cols
        pool = self._pool
        use_low = bool(pool.low_texture) and rng.random() < self.low_texture_share
        photos = pool.low_texture if use_low else pool.regular
        photo = photos[int(rng.integers(len(photos)))]
        board = TileBoard(augment(photo, self.size, rng), rows, cols, self.mask_ratio)
        self._overlay = self._make_overlay(board) if (self.labels or self.grid_lines) else None
        return board

    def _shuffle(self, board: TileBoard, rng: np.random.Generator, allow_identity: bool = False) -> None:
        """A uniformly random permutation; the swap puzzle excludes the already-solved identity, the
        questions keep it (else a 2-tile board would give the answer away)."""
        perm = rng.permutation(board.n)
        while not allow_identity and np.array_equal(perm, np.arange(board.n)):
            perm = rng.permutation(board.n)
        board.set_permutation(perm)

    def _make_overlay(self, board: TileBoard) -> tuple[np.ndarray, np.ndarray]:
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        mask_canvas = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        if self.grid_lines:
            for r in range(1, board.rows):
                canvas[r * board.tile_h - 1 : r * board.tile_h + 1] = (255, 255, 255)
                mask_canvas[r * board.tile_h - 1 : r * board.tile_h + 1] = 0
            for c in range(1, board.cols):
                canvas[:, c * board.tile_w - 1 : c * board.tile_w + 1] = (255, 255, 255)
                mask_canvas[:, c * board.tile_w - 1 : c * board.tile_w + 1] = 0
        if self.labels:
            text_size = max(8, min(board.tile_h, board.tile_w) // 5)
            labels = [(board.position_box(p)[0] + 3, board.position_box(p)[1] + 3, str(p + 1)) for p in range(board.n)]
            marks = draw_text_boxes(np.full_like(canvas, 255), labels, text_size)
            changed = np.any(marks != 255, axis=2)
            canvas[changed] = marks[changed]
            mask_canvas[changed] = 0
        mask = np.all(mask_canvas == 0, axis=2)
        return mask, canvas

    def _board_image(self) -> np.ndarray:
        assert self.board is not None
        image = self.board.image.copy()
        if self._overlay is not None:
            mask, canvas = self._overlay
            image[mask] = canvas[mask]
        return image

    def _grid_description(self) -> str:
        assert self.board is not None
        b = self.board
        ends = ("left", "right") if b.rows == 1 else ("top", "bottom") if b.cols == 1 else ("top-left", "bottom-right")
        masked = " The borders of each tile have been masked out." if self.mask_ratio > 0 else ""
        return (
            f"The {self.size}x{self.size} px image is divided into {b.rows}x{b.cols} tiles ({b.rows} row(s) x {b.cols}"
            f" column(s), {b.tile_w}x{b.tile_h} px each) that have been shuffled.{masked} Positions are numbered from 1 ({ends[0]}) to {b.n} ({ends[1]}),"
            f" row by row:\n```\n{grid_string(b.rows, b.cols)}\n```"
        )

    # -- shared hooks ---------------------------------------------------------------------------
    def _text_image(self) -> np.ndarray:
        return self._board_image()

    def _render_frame(self) -> np.ndarray:
        return self._board_image()

    def _image_space(self) -> spaces.Box:
        return spaces.Box(0, 255, (self.size, self.size, 3), dtype=np.uint8)

    def oracle_text(self) -> str:
        """The text action an all-knowing agent sends now (for scripted baselines and tests)."""
        raise NotImplementedError

    def oracle_numeric(self) -> Any:
        """The numeric action an all-knowing agent sends now."""
        raise NotImplementedError


class JigsawSwapEnv(JigsawEnv):
    """Restore a shuffled photo by swapping tiles, one swap per turn (AGILE's interactive jigsaw).

    ## Description
    A photo (scikit-image/scikit-learn/matplotlib samples, or ``images=``) is augmented (random crop,
    mirror, colour jitter), cut into an m x n grid and shuffled (never the identity). Each turn the
    agent exchanges two tiles and sees the new board.

    ## Action Space
    - text: ``<tool_call>{"name": "swap", "arguments": {"a": i, "b": j}}</tool_call>`` with positions
      1..m*n (row-major, 1 = top-left), or ``<answer>done</answer>`` to stop.
    - numeric: ``Discrete(N(N-1)/2)`` over unordered position pairs (``swaps="any"``) or
      ``Discrete(m(n-1)+n(m-1))`` over adjacent pairs, horizontal first (``swaps="adjacent"``).
      ``pairs[k]`` on the env gives the 0-based positions of action ``k``.

    ## Observation Space
    - text: ``{"image": uint8 (S, S, 3) board, "text": str}``; the first text states the grid, the
      position numbering and the tools, later ones the swap just made.
    - numeric: ``{"image": uint8 (S, S, 3)}``. ``S`` = ``size`` (336 text, 84 numeric by default).

    ## Rewards
    Per step ``r = (in_place_t - in_place_{t-1}) / N - 0.01 + 1.0 * [solved at t]``, with terms
    ``progress``, ``step`` and ``solve``. A malformed action gets ``format = -0.1`` instead.
    ``info["score"]`` = tiles in place / N; ``info["success"]`` = solved.

    ## Starting State
    A uniformly random non-identity permutation; minimum swaps to solve = N - #cycles.

    ## Episode End
    Terminated when solved or on ``<answer>done</answer>``; truncated after ``2 * N`` steps.

    ## Arguments
    ``level`` 0..6 walks the ladder 2x1 -> 3x1 -> 2x2 -> 3x3 -> 4x4 -> 4x4 with tile borders masked
    (10%) -> the same with 30% low-texture photos (:data:`LADDER`); ``difficulty`` 0..3 stands for
    levels 0, 2, 3, 6. 1-D grids are flipped to 1 x n with probability 1/2. ``grid=(m, n)`` and
    ``mask_ratio`` override the level's. ``swaps``: ``"any"`` or ``"adjacent"``. ``size``, ``images``,
    ``labels`` (draw position numbers), ``grid_lines``, plus the common ones.

    Chance: a random swapper solves 2x1 in one step; on larger grids the random agent's score stays
    near the expected fraction in place of a random permutation, 1/N.

    ## Anchors
    AGILE (arXiv 2510.01304, yuzeng0-0/AGILE): one exchange per turn, image returned each turn,
    R = 0.8 acc + 0.2 fmt + t there; Jigsaw-R1 (zifuwanggg/Jigsaw-R1) for the grid, numbering and the
    m x n orientation flip; the classic SB3 ``puzzle_gym`` for adjacent swaps (its non-square decoding
    bug is avoided: pairs are listed explicitly).

    ## Version History
    - v0: initial release.
    """

    step_cost: ClassVar[float] = 0.01
    solve_bonus: ClassVar[float] = 1.0

    def __init__(
        self,
        action_mode: ActionMode = "text",
        difficulty: int = 0,
        split: Split = "train",
        render_mode: str | None = None,
        *,
        swaps: str = "any",
        **kwargs: Any,
    ) -> None:
        super().__init__(action_mode, difficulty, split, render_mode, **kwargs)
        if swaps not in ("any", "adjacent"):
            raise ValueError(f"swaps must be 'any' or 'adjacent', got {swaps!r}")
        self.swaps = swaps
        n = self.n_tiles
        self.tools = ToolSet(
            [
                Tool(
                    "swap",
                    "exchange the tiles at two positions",
                    (Arg("a", "int", f"position a (1..{n})", 1, n), Arg("b", "int", f"position b (1..{n})", 1, n)),
                )
            ],
            answer_hint="<answer>done</answer> when the image is restored",
        )
        # Adjacent pairs must not depend on the episode's orientation: an explicit list per layout.
        self._all_pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
        self._set_spaces(
            (self.size, self.size, 3),
            spaces.Dict({"image": self._image_space()}),
            spaces.Discrete(len(self._all_pairs) if swaps == "any" else self._n_adjacent()),
        )

    def _n_adjacent(self) -> int:
        m, n = self.grid
        return m * (n - 1) + n * (m - 1)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """0-based position pairs indexed by the numeric action (for the current board layout)."""
        if self.swaps == "any":
            return self._all_pairs
        assert self.board is not None
        return self.board.adjacent_pairs()

    @property
    def horizon(self) -> int:
        return 2 * self.n_tiles

    def _new_task(self, rng: np.random.Generator) -> None:
        self.board = self._draw_board(rng)
        self._shuffle(self.board, rng)

    def _prompt(self) -> str:
        only = " Only tiles that share an edge can be swapped." if self.swaps == "adjacent" else ""
        return (
            f"{self._grid_description()}\nRestore the original image by swapping tiles, one swap per turn; "
            f"you have {self.horizon} turns.{only}\n{self.tools.prompt()}"
        )

    def _decode_numeric(self, action: Any) -> ToolCall:
        try:
            k = int(action)
        except (TypeError, ValueError):
            raise ActionError(f"numeric action must be an integer, got {action!r}") from None
        if not 0 <= k < self.numeric_action_space.n:  # type: ignore[attr-defined]
            raise ActionError(f"numeric action must be in [0, {self.numeric_action_space.n}), got {k}")  # type: ignore[attr-defined]
        a, b = self.pairs[k]
        return ToolCall("swap", {"a": a + 1, "b": b + 1})

    def _apply(self, action: ToolCall | Answer) -> Outcome:
        assert self.board is not None
        if isinstance(action, Answer):
            if action.text.strip().lower() != "done":
                raise ActionError("the only answer is <answer>done</answer>; swap tiles with the swap tool")
            state = "solved" if self.board.solved else "not solved"
            return Outcome({}, terminated=True, feedback=f"Stopped; the puzzle is {state}.")
        a, b = action.arguments["a"] - 1, action.arguments["b"] - 1
        if a == b:
            raise ActionError(f"swap needs two different positions, got {a + 1} twice")
        if self.swaps == "adjacent" and (min(a, b), max(a, b)) not in self.board.adjacent_pairs():
            raise ActionError(f"positions {a + 1} and {b + 1} do not share an edge")
        delta = self.board.swap(a, b)
        terms = {"progress": delta / self.board.n, "step": -self.step_cost}
        if self.board.solved:
            terms["solve"] = self.solve_bonus
        return Outcome(
            terms, terminated=self.board.solved, feedback=f"Swapped the tiles at positions {a + 1} and {b + 1}."
        )

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        return {"image": self._board_image()}

    def _action_text(self, action: ToolCall) -> str:
        return tool_call_text(action.name, action.arguments)

    def _score(self) -> float:
        assert self.board is not None
        return self.board.in_place / self.board.n

    def _success(self) -> bool:
        return self.board is not None and self.board.solved

    def oracle_swap(self) -> tuple[int, int] | None:
        """The next swap of a shortest solution (any swaps), or a greedy adjacent swap that moves the
        first misplaced position's tile one step home (adjacent swaps; not always shortest)."""
        assert self.board is not None
        perm = self.board.perm
        if self.swaps == "any":
            swaps = solving_swaps(perm)
            return swaps[0] if swaps else None
        wrong = np.flatnonzero(perm != np.arange(self.board.n))
        if len(wrong) == 0:
            return None
        target = int(wrong[0])
        at = int(np.flatnonzero(perm == target)[0])
        cols = self.board.cols
        if at % cols != target % cols and at // cols != target // cols:
            step = 1 if target % cols > at % cols else -1  # move along the lower row first
        elif at // cols == target // cols:
            step = -1
        else:
            step = -cols
        return (min(at, at + step), max(at, at + step))

    def oracle_text(self) -> str:
        swap = self.oracle_swap()
        if swap is None:
            return answer_text("done")
        return tool_call_text("swap", {"a": swap[0] + 1, "b": swap[1] + 1})

    def oracle_numeric(self) -> int:
        swap = self.oracle_swap()
        if swap is None:
            return 0
        return self.pairs.index((min(swap), max(swap)))


class JigsawQuestionEnv(JigsawEnv):
    """Single-turn question on a shuffled board (Jigsaw-R1); reward ``1.0 acc + 0.5 fmt``."""

    format_bonus: ClassVar[float] = 0.5

    def __init__(
        self,
        action_mode: ActionMode = "text",
        difficulty: int = 0,
        split: Split = "train",
        render_mode: str | None = None,
        *,
        max_attempts: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(action_mode, difficulty, split, render_mode, **kwargs)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = int(max_attempts)

    @property
    def horizon(self) -> int:
        return self.max_attempts

    def _new_task(self, rng: np.random.Generator) -> None:
        self.board = self._draw_board(rng)
        self._shuffle(self.board, rng, allow_identity=True)
        self._accuracy = 0.0
        self._exact = False
        self._new_question(rng)

    def _new_question(self, rng: np.random.Generator) -> None:
        """Draw the question-specific parts (after the board)."""

    def _score(self) -> float:
        return self._accuracy

    def _success(self) -> bool:
        return self._exact


class JigsawFullEnv(JigsawQuestionEnv):
    """Answer where every tile of a shuffled photo belongs (Jigsaw-R1 "full" question).

    ## Description
    One turn: the agent sees the shuffled board and writes, for every position X, the original
    position Y of the tile now at X, as an m x n grid of numbers.

    ## Action Space
    - text: ``<answer>2 1\\n3 4</answer>`` (numbers separated by spaces, commas, semicolons or
      newlines; 1-based, row-major), parsed as Jigsaw-R1's ``process_jigsaw_string`` does.
    - numeric: ``MultiDiscrete([N] * N)``, 0-based original index per position.

    ## Observation Space
    As :class:`JigsawSwapEnv`.

    ## Rewards
    ``r = 1.0 * acc + 0.5 * fmt`` (Jigsaw-R1), terms ``accuracy`` and ``format``: ``acc`` is the fraction
    of positions right (``scoring="fraction"``), 1 for an exact match only (``"exact"``), or the
    fraction of the ``2mn - m - n`` internal adjacencies right (``"connections"``). A malformed answer
    gets ``format = -0.1`` and no accuracy. ``info["score"]`` = acc; ``info["success"]`` = exact match.

    Chance levels: exact match 1/N!, expected fraction correct 1/N.

    ## Starting State
    A uniformly random permutation (the identity included, as those chance levels assume).

    ## Episode End
    Terminated by the first well-formed answer; malformed answers cost ``-0.1`` each and may be
    retried until ``max_attempts`` (3) turns, then the episode is truncated.

    ## Arguments
    ``scoring``, ``max_attempts`` plus those of :class:`JigsawSwapEnv` (except ``swaps``).

    ## Anchors
    Jigsaw-R1 (zifuwanggg/Jigsaw-R1 ``utils/prompt.py``, ``utils/reward.py``).

    ## Version History
    - v0: initial release.
    """

    def __init__(
        self,
        action_mode: ActionMode = "text",
        difficulty: int = 0,
        split: Split = "train",
        render_mode: str | None = None,
        *,
        scoring: str = "fraction",
        **kwargs: Any,
    ) -> None:
        super().__init__(action_mode, difficulty, split, render_mode, **kwargs)
        if scoring not in ("fraction", "exact", "connections"):
            raise ValueError(f"scoring must be 'fraction', 'exact' or 'connections', got {scoring!r}")
        self.scoring = scoring
        self.tools = ToolSet(
            [], answer_hint=f"the original position of each tile as a {self.grid[0]}x{self.grid[1]} grid"
        )
        n = self.n_tiles
        self._set_spaces(
            (self.size, self.size, 3),
            spaces.Dict({"image": self._image_space()}),
            spaces.MultiDiscrete(np.full(n, n, dtype=np.int64)),
        )

    def _prompt(self) -> str:
        b = self.board
        assert b is not None
        return (
            f"{self._grid_description()}\nFor each tile, determine its position in the original image. If the tile "
            f"currently at position X belongs at position Y, place Y at position X. Answer with the position "
            f"indices arranged in a {b.rows}x{b.cols} grid inside <answer>...</answer>."
        )

    def _parse_text(self, text: str) -> list[int]:
        action = self.tools.parse(text)
        assert isinstance(action, Answer)
        cleaned = action.text
        for ch in "`,;\n":
            cleaned = cleaned.replace(ch, " ")
        tokens = cleaned.split()
        n = self.n_tiles
        if not all(t.isdigit() and len(t) <= 4 for t in tokens):
            raise ActionError(f"the answer must hold only position numbers 1..{n}")
        values = [int(t) for t in tokens]
        if len(values) != n or not all(1 <= v <= n for v in values):
            raise ActionError(f"the answer must hold exactly {n} numbers in 1..{n}, got {len(values)}")
        return [v - 1 for v in values]

    def _decode_numeric(self, action: Any) -> list[int]:
        values = np.asarray(action).reshape(-1)
        if values.shape != (self.n_tiles,) or values.dtype.kind not in "iu":
            raise ActionError(f"numeric action must be {self.n_tiles} integers")
        if values.min() < 0 or values.max() >= self.n_tiles:
            raise ActionError(f"numeric action values must be in [0, {self.n_tiles})")
        return [int(v) for v in values]

    def _apply(self, answer: list[int]) -> Outcome:
        assert self.board is not None
        truth = self.board.perm
        predicted = np.asarray(answer)
        exact = bool(np.array_equal(predicted, truth))
        if self.scoring == "fraction":
            acc = float(np.mean(predicted == truth))
        elif self.scoring == "exact":
            acc = float(exact)
        else:
            acc = connection_accuracy(predicted, truth, self.board.rows, self.board.cols)
        self._accuracy, self._exact = acc, exact
        return Outcome({"accuracy": acc, "format": self.format_bonus}, terminated=True, feedback=f"Accuracy {acc:.3f}.")

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        return {"image": self._board_image()}

    def _action_text(self, action: list[int]) -> str:
        assert self.board is not None
        return answer_text(grid_string(self.board.rows, self.board.cols, [v + 1 for v in action]))

    def oracle_numeric(self) -> np.ndarray:
        assert self.board is not None
        return self.board.perm.copy()

    def oracle_text(self) -> str:
        return self._action_text([int(v) for v in self.oracle_numeric()])


def connection_accuracy(predicted: np.ndarray, truth: np.ndarray, rows: int, cols: int) -> float:
    """Jigsaw-R1's ``score_jigsaw_connections`` (forward format): for each of the ``2mn - m - n``
    neighbouring position pairs (p, q) of the answer grid, look up where the values ``predicted[p]`` and
    ``predicted[q]`` stand in ``truth``; the pair counts when those places are neighbours in the same
    direction. 1 for the exact answer."""
    total = 2 * rows * cols - rows - cols
    if total == 0:
        return 0.0
    where = np.empty(len(truth), dtype=np.int64)
    where[np.asarray(truth)] = np.arange(len(truth))
    correct = 0
    for r in range(rows):
        for c in range(cols):
            p = r * cols + c
            for q, (dr, dc) in ((p + 1, (0, 1)), (p + cols, (1, 0))):
                if (dc and c + 1 >= cols) or (dr and r + 1 >= rows):
                    continue
                g1, g2 = int(where[predicted[p]]), int(where[predicted[q]])
                correct += (g2 // cols - g1 // cols, g2 % cols - g1 % cols) == (dr, dc)
    return correct / total


DIRECTIONS = (
    "{k} is directly to the left of {l}",
    "{k} is directly to the right of {l}",
    "{k} is directly above {l}",
    "{k} is directly below {l}",
    "{k} is on the upper left of {l}",
    "{k} is on the upper right of {l}",
    "{k} is on the lower left of {l}",
    "{k} is on the lower right of {l}",
)


def relative_direction(home_k: int, home_l: int, cols: int) -> int:
    """Index into :data:`DIRECTIONS` of where tile ``k`` sits relative to tile ``l`` at home."""
    dr = home_k // cols - home_l // cols
    dc = home_k % cols - home_l % cols
    table = {(0, -1): 0, (0, 1): 1, (-1, 0): 2, (1, 0): 3, (-1, -1): 4, (-1, 1): 5, (1, -1): 6, (1, 1): 7}
    return table[(int(np.sign(dr)), int(np.sign(dc)))]


class JigsawPairEnv(JigsawQuestionEnv):
    """Say where one tile sat relative to another in the original photo (Jigsaw-R1 "pair" question).

    ## Description
    One turn: for the tiles now at positions k and l, pick their original relative position from
    lettered choices: 2 in a 1-D grid (left/right or above/below), 8 in a 2-D grid (with diagonals),
    shuffled per episode as in Jigsaw-R1.

    ## Action Space
    - text: ``<answer>C</answer>`` (one letter).
    - numeric: ``Discrete(2)`` (1-D) or ``Discrete(8)``: the direction in the fixed order of
      :data:`DIRECTIONS` (left, right, above, below, upper left, upper right, lower left, lower right;
      1-D grids use the first two for one row and "above"/"below" for one column).

    ## Observation Space
    - text: as :class:`JigsawSwapEnv`; the text names k, l and the choices.
    - numeric: ``{"image": uint8 (S, S, 3), "query": float32 (2N,)}``: one-hot k then one-hot l.

    ## Rewards
    ``r = 1.0 * correct + 0.5 * fmt`` (terms ``accuracy``, ``format``); a malformed answer gets
    ``format = -0.1``. Chance: 1/2 (1-D), 1/8 (2-D).

    ## Starting State
    A uniformly random permutation (identity included) and a random pair of positions k != l.

    ## Episode End
    As :class:`JigsawFullEnv`: the first well-formed answer terminates; ``max_attempts`` (3)
    malformed ones truncate.

    ## Arguments
    As :class:`JigsawFullEnv` (no ``scoring``). With the default grids, difficulty 0 is 1-D.

    ## Anchors
    Jigsaw-R1 ``generate_question_string_pair``.

    ## Version History
    - v0: initial release.
    """

    def __init__(
        self,
        action_mode: ActionMode = "text",
        difficulty: int = 0,
        split: Split = "train",
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(action_mode, difficulty, split, render_mode, **kwargs)
        rows, cols = self.grid
        self.one_dimensional = rows == 1 or cols == 1
        self.n_choices = 2 if self.one_dimensional else 8
        self.tools = ToolSet([], answer_hint="the letter of the right choice")
        n = self.n_tiles
        self._set_spaces(
            (self.size, self.size, 3),
            spaces.Dict({"image": self._image_space(), "query": spaces.Box(0.0, 1.0, (2 * n,), dtype=np.float32)}),
            spaces.Discrete(self.n_choices),
        )

    def _choice_directions(self) -> list[int]:
        """Direction indices (into DIRECTIONS) available on this board, in canonical order."""
        assert self.board is not None
        if self.board.rows == 1:
            return [0, 1]
        if self.board.cols == 1:
            return [2, 3]
        return list(range(8))

    def _new_question(self, rng: np.random.Generator) -> None:
        assert self.board is not None
        first, second = (int(v) for v in rng.choice(self.board.n, size=2, replace=False))
        self.pair = (first, second)
        self.truth = relative_direction(int(self.board.perm[first]), int(self.board.perm[second]), self.board.cols)
        self.letters_order = [int(d) for d in rng.permutation(self._choice_directions())]

    def _prompt(self) -> str:
        k, l = self.pair[0] + 1, self.pair[1] + 1  # noqa: E741 - Jigsaw-R1's names
        choices = "\n".join(
            f"({chr(65 + i)}) {DIRECTIONS[d].format(k=k, l=l)}" for i, d in enumerate(self.letters_order)
        )
        return (
            f"{self._grid_description()}\nFor the tiles currently at positions {k} and {l}, determine their relative "
            f"position in the original image.\nSelect the correct answer from the following {len(self.letters_order)} "
            f"choices:\n{choices}\nAnswer with a single letter inside <answer>...</answer>."
        )

    def _parse_text(self, text: str) -> int:
        action = self.tools.parse(text)
        assert isinstance(action, Answer)
        letters = "".join(chr(65 + i) for i in range(len(self.letters_order)))
        content = action.text.strip().strip("().").strip().upper()
        if len(content) != 1 or content not in letters:
            raise ActionError(f"answer with one letter out of {', '.join(letters)}")
        direction = self.letters_order[ord(content) - 65]
        return self._choice_directions().index(direction)

    def _decode_numeric(self, action: Any) -> int:
        try:
            k = int(action)
        except (TypeError, ValueError):
            raise ActionError(f"numeric action must be an integer, got {action!r}") from None
        if not 0 <= k < self.n_choices:
            raise ActionError(f"numeric action must be in [0, {self.n_choices})")
        return k

    def _apply(self, choice: int) -> Outcome:
        correct = self._choice_directions()[choice] == self.truth
        self._accuracy, self._exact = float(correct), correct
        return Outcome(
            {"accuracy": float(correct), "format": self.format_bonus},
            terminated=True,
            feedback="Correct." if correct else "Wrong.",
        )

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        n = self.n_tiles
        query = np.zeros(2 * n, dtype=np.float32)
        query[self.pair[0]] = 1.0
        query[n + self.pair[1]] = 1.0
        return {"image": self._board_image(), "query": query}

    def _action_text(self, choice: int) -> str:
        return answer_text(chr(65 + self.letters_order.index(self._choice_directions()[choice])))

    def oracle_numeric(self) -> int:
        return self._choice_directions().index(self.truth)

    def oracle_text(self) -> str:
        return self._action_text(self.oracle_numeric())
