"""Shared machinery of the jigsaw envs: the difficulty ladder, photos, board, overlays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from visrl_envs.core import checks
from visrl_envs.core.base import VisualEnv
from visrl_envs.core.files import PathList
from visrl_envs.core.imagery import ImagePool
from visrl_envs.core.images import draw_text_boxes
from visrl_envs.envs.jigsaw.board import TileBoard


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
#: The ladder level each common ``difficulty`` 0..3 stands for (the question envs; the swap puzzle
#: starts at 2x2, see :class:`~visrl_envs.envs.jigsaw.swap.JigsawSwapEnv`).
DIFFICULTY_LEVELS = {0: 0, 1: 2, 2: 3, 3: 6}
DEFAULT_SIZE = {"text": 336, "numeric": 84}


def grid_string(rows: int, cols: int, values: Sequence[int] | None = None) -> str:
    """Rows of space-separated indices (1-based positions by default), as Jigsaw-R1 prints grids."""
    values = list(range(1, rows * cols + 1)) if values is None else list(values)
    return "\n".join(" ".join(str(v) for v in values[r * cols : (r + 1) * cols]) for r in range(rows))


class JigsawEnv(VisualEnv):
    """Shared machinery of the jigsaw envs: photos, grid, board, overlays. See the subclasses."""

    family: ClassVar[str] = "jigsaw"
    #: Ladder level of each ``difficulty``.
    difficulty_levels: ClassVar[dict[int, int]] = DIFFICULTY_LEVELS

    def __init__(
        self,
        *,
        size: int | None = None,
        grid: tuple[int, int] | None = None,
        images: PathList | None = None,
        image_source: str = "mixed",
        mask_ratio: float | None = None,
        labels: bool = False,
        grid_lines: bool = False,
        level: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.size = checks.image_side("size", DEFAULT_SIZE[self.action_mode] if size is None else size)
        level = self.difficulty_levels[self.difficulty] if level is None else level
        self.level = checks.integer("level", level, 0, len(LADDER) - 1)
        rung = LADDER[self.level]
        if grid is not None:
            if not isinstance(grid, tuple | list) or len(grid) != 2:
                raise TypeError(f"grid must be a (rows, cols) pair, got {grid!r}")
            rows, cols = checks.integer("grid rows", grid[0], 1, 64), checks.integer("grid cols", grid[1], 1, 64)
            if not 2 <= rows * cols <= 64:
                raise ValueError(f"grid must have 2 to 64 tiles, got {rows}x{cols}")
        else:
            rows, cols = rung.grid
        self.grid: tuple[int, int] = (rows, cols)
        self.flip_orientation = grid is None and rows != cols
        for r, c in {(rows, cols), (cols, rows)} if self.flip_orientation else {(rows, cols)}:
            if self.size % r or self.size % c:
                raise ValueError(f"size {self.size} is not divisible by the {r}x{c} grid")
        self.n_tiles = rows * cols
        ratio = rung.mask_ratio if mask_ratio is None else mask_ratio
        self.mask_ratio = checks.number("mask_ratio", ratio, 0.0, 0.5, open_high=True)
        self.low_texture_share = rung.low_texture
        self.labels = checks.flag("labels", labels)
        self.grid_lines = checks.flag("grid_lines", grid_lines)
        self._pool = ImagePool(self.split, images, image_source)
        self.board: TileBoard | None = None
        self.rows, self.cols = rows, cols
        self._overlay: tuple[np.ndarray, np.ndarray] | None = None

    def interface_twin_kwargs(self) -> dict[str, Any]:
        return {"size": self.size}

    # -- task ----------------------------------------------------------------------------------
    def _draw_board(self, rng: np.random.Generator) -> TileBoard:
        rows, cols = self.grid
        if self.flip_orientation and rng.random() < 0.5:
            rows, cols = cols, rows
        self.rows, self.cols = rows, cols
        board = TileBoard(self._pool.draw(rng, self.size, self.low_texture_share), rows, cols, self.mask_ratio)
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
            f"The image is divided into {b.rows}x{b.cols} tiles ({b.rows} row(s) x {b.cols}"
            f" column(s), {b.tile_w}x{b.tile_h} px each) that have been shuffled.{masked} Positions are numbered from 1 ({ends[0]}) to {b.n} ({ends[1]}),"
            f" row by row:\n```\n{grid_string(b.rows, b.cols)}\n```"
        )

    # -- shared hooks ---------------------------------------------------------------------------
    def _render_frame(self) -> np.ndarray:
        return self._board_image()

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        return {"image": self._board_image()}

    def _image_space(self) -> spaces.Box:
        return spaces.Box(0, 255, (self.size, self.size, 3), dtype=np.uint8)
