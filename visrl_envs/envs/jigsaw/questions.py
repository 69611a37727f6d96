"""Single-turn jigsaw questions (Jigsaw-R1): the full permutation, or the relation of two tiles."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from visrl_envs.core import checks
from visrl_envs.core.base import Outcome
from visrl_envs.core.tools import Answer, AnswerFormat, ToolSet, answer_text
from visrl_envs.envs.jigsaw.base import JigsawEnv, grid_string


class JigsawQuestionEnv(JigsawEnv):
    """Single-turn question on a shuffled board (Jigsaw-R1); reward ``1.0 acc + 0.5 fmt``."""

    format_bonus: ClassVar[float] = 0.5

    def __init__(self, *, max_attempts: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_attempts = checks.integer("max_attempts", max_attempts, 1, 100)

    @property
    def horizon(self) -> int:
        return self.max_attempts

    def _new_task(self, rng: np.random.Generator) -> None:
        self.board = self._draw_board(rng)
        self._shuffle(self.board, rng, allow_identity=True)
        self._accuracy = 0.0
        self._exact = False
        self._new_question(rng)
        self.show(self._board_image, copy=False)

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
      newlines; 1-based, row-major), parsed as Jigsaw-R1's ``process_jigsaw_string`` does (the
      ``"integers"`` answer format of :mod:`visrl_envs.core.tools`).
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
    ``scoring``, ``max_attempts`` plus those of :class:`JigsawSwapEnv` (except ``swaps``); here
    ``difficulty`` 0..3 stands for levels 0, 2, 3, 6 (2x1, 2x2, 3x3, masked 4x4 with low-texture photos),
    Jigsaw-R1's curriculum starting at 2x1.

    ## Anchors
    Jigsaw-R1 (zifuwanggg/Jigsaw-R1 ``utils/prompt.py``, ``utils/reward.py``).

    ## Version History
    - v1: images come from a large disjoint pool per split (procedural scenes and every packaged
      photo, heavily augmented).
    - v0: initial release (9 train and 4 test photos).
    """

    def __init__(self, *, scoring: str = "fraction", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scoring = checks.choice("scoring", scoring, ("fraction", "exact", "connections"))
        self.tools = self._toolset(*self.grid)
        n = self.n_tiles
        self._set_spaces(
            (self.size, self.size, 3),
            spaces.Dict({"image": self._image_space()}),
            spaces.MultiDiscrete(np.full(n, n, dtype=np.int64)),
        )

    def _toolset(self, rows: int, cols: int) -> ToolSet:
        n = rows * cols
        answer = AnswerFormat(
            "integers",
            f"the original position of each tile as a {rows}x{cols} grid of numbers 1..{n}",
            count=n,
            low=1,
            high=n,
            rows=rows,
        )
        return ToolSet(answer=answer)

    def _new_question(self, rng: np.random.Generator) -> None:
        assert self.board is not None
        self.tools = self._toolset(self.board.rows, self.board.cols)  # the grid may be flipped

    def _task_text(self) -> str:
        b = self.board
        assert b is not None
        return (
            f"{self._grid_description()}\nFor each tile, determine its position in the original image. If the tile "
            "currently at position X belongs at position Y, place Y at position X."
        )

    def _parse_text(self, text: Any) -> list[int]:
        action = self.tools.parse(text)
        assert isinstance(action, Answer)
        return [v - 1 for v in action.value]

    def _decode_numeric(self, action: Any) -> list[int]:
        return list(super()._decode_numeric(action))

    def _apply(self, answer: list[int], backend_result: Any) -> Outcome:
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

    def _action_text(self, action: list[int]) -> str:
        assert self.board is not None
        return answer_text(grid_string(self.board.rows, self.board.cols, [v + 1 for v in action]))

    def oracle_numeric(self) -> np.ndarray:
        assert self.board is not None
        return self.board.perm.copy()

    def null_text(self) -> str:
        """The identity answer: every tile is where it belongs."""
        return self._action_text(list(range(self.n_tiles)))

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


#: The index in :data:`DIRECTIONS` of each direction's opposite.
OPPOSITE = {0: 1, 1: 0, 2: 3, 3: 2, 4: 7, 7: 4, 5: 6, 6: 5}


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
    - text: ``<answer>C</answer>`` (one letter; ``(c).`` counts as ``C``: the ``"choice"`` answer
      format of :mod:`visrl_envs.core.tools`).
    - numeric: ``Discrete(2)`` (1-D) or ``Discrete(8)``: where the tile at the lower-numbered of the
      two queried positions sat relative to the tile at the higher-numbered one, in the fixed order
      of :data:`DIRECTIONS` (left, right, above, below, upper left, upper right, lower left, lower
      right; 1-D grids use the first two for one row and "above"/"below" for one column). The same
      question as the text's "k relative to l", encoded without the query's order: with k and l in
      random order, the answer was the parity of the arrangement and the order, which no CNN learns
      (a supervised one stayed at 49% test accuracy on 2x1 boards).

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
    - v1: images come from a large disjoint pool per split (procedural scenes and every packaged
      photo, heavily augmented); the numeric answer is given for the ordered pair of positions.
    - v0: initial release (9 train and 4 test photos).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        rows, cols = self.grid
        self.one_dimensional = rows == 1 or cols == 1
        self.n_choices = 2 if self.one_dimensional else 8
        letters = tuple(chr(65 + i) for i in range(self.n_choices))
        self.tools = ToolSet(answer=AnswerFormat("choice", "the letter of the right choice", options=letters))
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

    def _task_text(self) -> str:
        k, l = self.pair[0] + 1, self.pair[1] + 1  # noqa: E741 - Jigsaw-R1's names
        choices = "\n".join(
            f"({chr(65 + i)}) {DIRECTIONS[d].format(k=k, l=l)}" for i, d in enumerate(self.letters_order)
        )
        return (
            f"{self._grid_description()}\nFor the tiles currently at positions {k} and {l}, determine their relative "
            f"position in the original image.\nSelect the correct answer from the following {len(self.letters_order)} "
            f"choices:\n{choices}"
        )

    def _parse_text(self, text: Any) -> int:
        action = self.tools.parse(text)
        assert isinstance(action, Answer)
        direction = self.letters_order[ord(action.value) - 65]
        return self._choice_directions().index(direction)

    def _apply(self, choice: int, backend_result: Any) -> Outcome:
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

    def _decode_numeric(self, action: Any) -> int:
        """Numeric choice (ordered positions) -> the typed choice (``k`` relative to ``l``)."""
        choice = super()._decode_numeric(action)
        return self._flip(choice) if self.pair[0] > self.pair[1] else choice

    def _flip(self, choice: int) -> int:
        """The choice of the opposite direction (left <-> right, upper left <-> lower right, ...)."""
        directions = self._choice_directions()
        return directions.index(OPPOSITE[directions[choice]])

    def oracle_numeric(self) -> int:
        choice = self._choice_directions().index(self.truth)
        return self._flip(choice) if self.pair[0] > self.pair[1] else choice

    def null_text(self) -> str:
        """Always the first choice, (A)."""
        return answer_text("A")

    def oracle_text(self) -> str:
        return self.numeric_to_text(self.oracle_numeric())
