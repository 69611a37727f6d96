"""The numeric interface's canvas: primitives drawn incrementally with cairo, in-process.

Each primitive is drawn onto a persistent cairo surface (one primitive per step, never a redraw of
the picture) exactly as :func:`~visrl_envs.envs.svg.generator.primitive_svg` describes it, so
:meth:`PrimitiveCanvas.svg` is an SVG program of the same picture.
"""

from __future__ import annotations

import math
from typing import Any

import cairocffi
import numpy as np

from visrl_envs.envs.svg.generator import CANVAS, CELL, PALETTE, SHAPES, primitive_svg, svg_document


class PrimitiveCanvas:
    """A white ``size`` x ``size`` raster of the 256-unit frame, plus the primitives drawn on it;
    a primitive's colour is an index into ``palette`` (``#rrggbb`` strings)."""

    def __init__(self, size: int, palette: list[str] | None = None) -> None:
        self.size = size
        self._set_palette(palette or list(PALETTE))
        self.primitives: list[tuple[int, int, int, int, int, int]] = []
        self.code_length = len(svg_document(""))
        self._surface: Any = None
        self._ctx: Any = None
        self._reset_surface()

    def set_palette(self, palette: list[str]) -> None:
        """Draw with ``palette`` from now on (only on an empty canvas: drawn colours would change meaning)."""
        if self.primitives:
            raise RuntimeError("the palette of a canvas with primitives on it cannot change")
        self._set_palette(palette)

    def _set_palette(self, palette: list[str]) -> None:
        self.palette = list(palette)
        self._rgb = [tuple(int(h[i : i + 2], 16) / 255 for i in (1, 3, 5)) for h in self.palette]

    def _reset_surface(self) -> None:
        self._surface = cairocffi.ImageSurface(cairocffi.FORMAT_RGB24, self.size, self.size)
        self._ctx = cairocffi.Context(self._surface)
        self._ctx.set_source_rgb(1, 1, 1)
        self._ctx.paint()
        self._ctx.scale(self.size / CANVAS, self.size / CANVAS)

    def clear(self, palette: list[str] | None = None) -> None:
        """Start afresh (with a new ``palette`` if given)."""
        if palette is not None:
            self._set_palette(palette)
        self.primitives = []
        self.code_length = len(svg_document(""))
        self._reset_surface()

    def draw(self, shape: int, x0: int, y0: int, x1: int, y1: int, colour: int) -> None:
        """Add one primitive (see :func:`primitive_svg` for the meaning of the integers)."""
        self.primitives.append((shape, x0, y0, x1, y1, colour))
        self.code_length += len(primitive_svg(shape, x0, y0, x1, y1, self.palette[colour]))
        self._draw(shape, x0, y0, x1, y1, colour)

    def _draw(self, shape: int, x0: int, y0: int, x1: int, y1: int, colour: int) -> None:
        ctx = self._ctx
        left, right = min(x0, x1) * CELL, (max(x0, x1) + 1) * CELL
        top, bottom = min(y0, y1) * CELL, (max(y0, y1) + 1) * CELL
        ctx.set_source_rgb(*self._rgb[colour])
        kind = SHAPES[shape]
        if kind == "rect":
            ctx.rectangle(left, top, right - left, bottom - top)
        elif kind == "ellipse":
            ctx.save()
            ctx.translate((left + right) / 2, (top + bottom) / 2)
            ctx.scale((right - left) / 2, (bottom - top) / 2)
            ctx.arc(0, 0, 1, 0, 2 * math.pi)
            ctx.restore()
        else:
            ctx.move_to((left + right) / 2, top)
            ctx.line_to(right, bottom)
            ctx.line_to(left, bottom)
            ctx.close_path()
        ctx.fill()

    def copy(self) -> PrimitiveCanvas:
        """An independent canvas with the same pixels and primitives (no redraw)."""
        other = PrimitiveCanvas(self.size, self.palette)
        other.primitives = list(self.primitives)
        other.code_length = self.code_length
        self._surface.flush()
        painter = cairocffi.Context(other._surface)
        painter.set_source_surface(self._surface)
        painter.paint()
        return other

    def array(self) -> np.ndarray:
        """The canvas as a fresh uint8 ``(size, size, 3)`` RGB array."""
        self._surface.flush()
        stride = self._surface.get_stride()
        bgrx = np.frombuffer(self._surface.get_data(), dtype=np.uint8).reshape(self.size, stride // 4, 4)
        return np.ascontiguousarray(bgrx[:, : self.size, 2::-1])

    def svg(self) -> str:
        """An SVG program drawing the same picture."""
        return svg_document("".join(self.primitive_svg(p) for p in self.primitives))

    def primitive_svg(self, primitive: tuple[int, ...]) -> str:
        """The SVG of one primitive with this canvas's palette."""
        shape, x0, y0, x1, y1, colour = primitive
        return primitive_svg(shape, x0, y0, x1, y1, self.palette[colour])

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size, "palette": self.palette, "primitives": list(self.primitives)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.size = state["size"]
        self._set_palette(state["palette"])
        self.primitives = []
        self.code_length = len(svg_document(""))
        self._reset_surface()
        for p in state["primitives"]:
            self.draw(*p)
