"""The jigsaw backend: a square image cut into an m x n grid of tiles and a permutation of them.

``board.perm[pos]`` is the home index of the tile now at position ``pos`` (row-major, 0-based); the
board is solved when ``perm`` is the identity. The board image is updated in place on every swap,
so a step costs two tile copies, not a redraw.
"""

from __future__ import annotations

import numpy as np


class TileBoard:
    """Tiles of one image on an ``rows x cols`` grid, with ``swap`` and the rendered board image."""

    def __init__(self, image: np.ndarray, rows: int, cols: int, mask_ratio: float = 0.0) -> None:
        size_y, size_x = image.shape[:2]
        if size_y % rows or size_x % cols:
            raise ValueError(f"image {size_x}x{size_y} is not divisible into a {rows}x{cols} grid")
        self.rows, self.cols = rows, cols
        self.n = rows * cols
        self.tile_h, self.tile_w = size_y // rows, size_x // cols
        tiles = (
            image.reshape(rows, self.tile_h, cols, self.tile_w, 3)
            .swapaxes(1, 2)
            .reshape(self.n, self.tile_h, self.tile_w, 3)
        )
        self.tiles = tiles.copy()
        if mask_ratio > 0:
            by, bx = max(1, round(self.tile_h * mask_ratio / 2)), max(1, round(self.tile_w * mask_ratio / 2))
            self.tiles[:, :by], self.tiles[:, -by:] = 0, 0
            self.tiles[:, :, :bx], self.tiles[:, :, -bx:] = 0, 0
        self.perm = np.arange(self.n)
        self.image = np.empty_like(image)
        self._slices = [
            (slice(r * self.tile_h, (r + 1) * self.tile_h), slice(c * self.tile_w, (c + 1) * self.tile_w))
            for r in range(rows)
            for c in range(cols)
        ]
        self.in_place = self.n
        self.set_permutation(self.perm)
        self._adjacent = self._adjacent_pairs()

    def set_permutation(self, perm: np.ndarray) -> None:
        self.perm = np.asarray(perm, dtype=np.int64).copy()
        for pos, tile in enumerate(self.perm):
            self.image[self._slices[pos]] = self.tiles[tile]
        self.in_place = int(np.count_nonzero(self.perm == np.arange(self.n)))

    def swap(self, a: int, b: int) -> int:
        """Exchange the tiles at positions ``a`` and ``b``; return the change in tiles in place."""
        perm = self.perm
        ta, tb = int(perm[a]), int(perm[b])
        before = (ta == a) + (tb == b)
        perm[a], perm[b] = tb, ta
        self.image[self._slices[a]] = self.tiles[tb]
        self.image[self._slices[b]] = self.tiles[ta]
        delta = (tb == a) + (ta == b) - before
        self.in_place += delta
        return delta

    @property
    def solved(self) -> bool:
        return self.in_place == self.n

    def position_box(self, pos: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` pixel box of a position."""
        ys, xs = self._slices[pos]
        return xs.start, ys.start, xs.stop, ys.stop

    def adjacent_pairs(self) -> list[tuple[int, int]]:
        """Horizontally then vertically adjacent position pairs (``m(n-1) + n(m-1)`` of them)."""
        return self._adjacent

    def _adjacent_pairs(self) -> list[tuple[int, int]]:
        horizontal = [
            (r * self.cols + c, r * self.cols + c + 1) for r in range(self.rows) for c in range(self.cols - 1)
        ]
        vertical = [
            (r * self.cols + c, (r + 1) * self.cols + c) for r in range(self.rows - 1) for c in range(self.cols)
        ]
        return horizontal + vertical


def minimum_swaps(perm: np.ndarray) -> int:
    """Fewest exchanges that sort ``perm``: ``n`` minus its number of cycles."""
    seen = np.zeros(len(perm), dtype=bool)
    cycles = 0
    for start in range(len(perm)):
        if not seen[start]:
            cycles += 1
            pos = start
            while not seen[pos]:
                seen[pos] = True
                pos = int(perm[pos])
    return len(perm) - cycles


def solving_swaps(perm: np.ndarray) -> list[tuple[int, int]]:
    """A shortest list of swaps that sorts ``perm`` (each places at least one tile home)."""
    perm = np.array(perm)
    swaps = []
    for pos in range(len(perm)):
        while perm[pos] != pos:
            home = int(perm[pos])
            swaps.append((pos, home))
            perm[pos], perm[home] = perm[home], perm[pos]
    return swaps
