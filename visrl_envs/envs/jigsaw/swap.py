"""Interactive jigsaw: restore a photo one swap per turn (AGILE)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from visrl_envs.core import checks
from visrl_envs.core.base import Outcome
from visrl_envs.core.tools import (
    ActionError,
    Answer,
    AnswerFormat,
    Arg,
    Tool,
    ToolCall,
    ToolSet,
    answer_text,
    tool_call_text,
)
from visrl_envs.envs.jigsaw.base import JigsawEnv
from visrl_envs.envs.jigsaw.board import solving_swaps


class JigsawSwapEnv(JigsawEnv):
    """Restore a shuffled photo by swapping tiles, one swap per turn (AGILE's interactive jigsaw).

    ## Description
    An image (a procedural scene drawn from the task seed, or a packaged photo of the split heavily
    augmented; or ``images=``) is cut into an m x n grid and shuffled (never the identity). Each turn
    the agent exchanges two tiles and sees the new board. Train and test images never coincide.

    ## Action Space
    - text: ``<tool_call>{"name": "swap", "arguments": {"a": i, "b": j}}</tool_call>`` with positions
      1..m*n (row-major, 1 = top-left), or ``<answer>done</answer>`` to stop.
    - numeric: ``Discrete(N(N-1)/2)`` over unordered position pairs (``swaps="any"``) or
      ``Discrete(m(n-1)+n(m-1))`` over adjacent pairs, horizontal first (``swaps="adjacent"``).
      ``pairs[k]`` on the env gives the 0-based positions of action ``k``.

    ## Observation Space
    - text: ``{"images": (uint8 (S, S, 3) board,), "text": str}``: the board after reset and after
      every swap (no image after a malformed action); the first text states the grid, the position
      numbering and the tools (``prompt_spec()`` has them apart), later ones the swap just made.
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
    levels 2, 3, 4, 6 (2x2, 3x3, 4x4, masked 4x4 with low-texture photos): the first two rungs test
    nothing here (on 2x1 random scores 1.0, on 3x1 0.76; on 2x2 0.44 against the oracle's 1.0). 1-D
    grids are flipped to 1 x n with probability 1/2. ``grid=(m, n)`` and ``mask_ratio`` override the
    level's. ``swaps``: ``"any"`` or ``"adjacent"``. ``size``; ``image_source``: ``"mixed"`` (packaged
    photos of the split, heavily augmented, in 30% of episodes, seeded procedural scenes otherwise:
    :mod:`visrl_envs.core.imagery`), ``"photos"`` or ``"scenes"``; ``images`` (files or directories
    used by both splits instead, checked when the env is built); ``labels`` (draw position numbers),
    ``grid_lines``, plus the common ones.

    Chance (random swaps, test split, 300 episodes): 0.44 on 2x2, 0.11 on 3x3; the expected fraction in
    place of a random permutation is 1/N.

    ## Anchors
    AGILE (arXiv 2510.01304, yuzeng0-0/AGILE): one exchange per turn, image returned each turn,
    R = 0.8 acc + 0.2 fmt + t there; Jigsaw-R1 (zifuwanggg/Jigsaw-R1) for the grid, numbering and the
    m x n orientation flip; the classic SB3 ``puzzle_gym`` for adjacent swaps (its non-square decoding
    bug is avoided: pairs are listed explicitly).

    ## Version History
    - v1: the ladder starts at 2x2; images come from a large disjoint pool per split (procedural
      scenes and every packaged photo, heavily augmented).
    - v0: initial release (2x1 first rung; 9 train and 4 test photos).
    """

    step_cost: ClassVar[float] = 0.01
    solve_bonus: ClassVar[float] = 1.0
    #: The puzzle starts at 2x2: on 2x1 there is one possible swap (random scores 1.0) and on 3x1 a
    #: random swapper still scores 0.76; on 2x2 it scores 0.44 against the oracle's 1.0.
    difficulty_levels: ClassVar[dict[int, int]] = {0: 2, 1: 3, 2: 4, 3: 6}

    def __init__(self, *, swaps: str = "any", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.swaps = checks.choice("swaps", swaps, ("any", "adjacent"))
        self._selected: int | None = None  # tile picked by a first click in `visrl play`
        n = self.n_tiles
        self.tools = ToolSet(
            [
                Tool(
                    "swap",
                    "exchange the tiles at two positions",
                    (Arg("a", "int", f"position a (1..{n})", 1, n), Arg("b", "int", f"position b (1..{n})", 1, n)),
                )
            ],
            AnswerFormat("choice", "done, when the image is restored (or to give up)", options=("done",)),
        )
        # Any-swaps: all unordered pairs. Adjacent swaps: the board's own list each episode (its length,
        # m(n-1) + n(m-1), is the same for the m x n and n x m layouts of the orientation flip).
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
        self._selected = None
        self.show(self._board_image, copy=False)

    def _task_text(self) -> str:
        only = " Only tiles that share an edge can be swapped." if self.swaps == "adjacent" else ""
        return f"{self._grid_description()}\nRestore the original image by swapping tiles, one swap per turn.{only}"

    def _decode_numeric(self, action: Any) -> ToolCall:
        k = super()._decode_numeric(action)
        a, b = self.pairs[k]
        return ToolCall("swap", {"a": a + 1, "b": b + 1})

    def _apply(self, action: ToolCall | Answer, backend_result: Any) -> Outcome:
        assert self.board is not None
        if isinstance(action, Answer):
            state = "solved" if self.board.solved else "not solved"
            return Outcome({}, terminated=True, feedback=f"Stopped; the puzzle is {state}.")
        a, b = action.arguments["a"] - 1, action.arguments["b"] - 1
        if a == b:
            raise ActionError(f"swap needs two different positions, got {a + 1} twice")
        if self.swaps == "adjacent" and (min(a, b), max(a, b)) not in self.board.adjacent_pairs():
            raise ActionError(f"positions {a + 1} and {b + 1} do not share an edge")
        delta = self.board.swap(a, b)
        self.show(self._board_image, copy=False)
        terms = {"progress": delta / self.board.n, "step": -self.step_cost}
        if self.board.solved:
            terms["solve"] = self.solve_bonus
        feedback = f"Swapped the tiles at positions {a + 1} and {b + 1}." if self.action_mode == "text" else ""
        return Outcome(terms, terminated=self.board.solved, feedback=feedback)

    def _score(self) -> float:
        assert self.board is not None
        return self.board.in_place / self.board.n

    def _success(self) -> bool:
        return self.board is not None and self.board.solved

    def _render_frame(self) -> np.ndarray:
        frame = self._board_image()
        selected = self._selected
        if selected is not None and self.board is not None:
            x0, y0, x1, y1 = self.board.position_box(selected)
            frame[y0 : y0 + 3, x0:x1] = frame[y1 - 3 : y1, x0:x1] = (255, 215, 0)
            frame[y0:y1, x0 : x0 + 3] = frame[y0:y1, x1 - 3 : x1] = (255, 215, 0)
        return frame

    # -- human play (visrl play) ---------------------------------------------------------------
    def click_action(self, x: int, y: int) -> str | None:
        """A click at pixel ``(x, y)`` of the rendered board: the first selects a tile (highlighted),
        the second returns the swap as text (clicking the selected tile again unselects it)."""
        assert self.board is not None
        b = self.board
        if not (0 <= x < self.size and 0 <= y < self.size):
            return None
        pos = (y // b.tile_h) * b.cols + x // b.tile_w
        selected, self._selected = self._selected, None
        if selected is None:
            self._selected = pos
            return None
        if selected == pos:
            return None
        return tool_call_text("swap", {"a": selected + 1, "b": pos + 1})

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

    def null_text(self) -> str:
        return answer_text("done")

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
