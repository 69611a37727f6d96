"""Seeded procedural SVG targets, from a few flat shapes (difficulty 0) to dozens of shapes with
paths, strokes, gradients, nested transformed groups and text (difficulty 3).

Every target lives in the fixed frame ``viewBox="0 0 256 256"``. Difficulty 0 places its shapes on
the 16 x 16 cell grid with colours from :data:`PALETTE`, exactly the vocabulary of the numeric
interface, so it can be reproduced primitive by primitive. :func:`task_palette` gives the numeric
interface the target's own colours at every difficulty.
"""

from __future__ import annotations

import re

import numpy as np

CANVAS = 256
GRID = 16
CELL = CANVAS // GRID
PALETTE = (
    "#000000", "#ffffff", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4",
    "#46f0f0", "#f032e6", "#bcf60c", "#008080", "#9a6324", "#800000", "#808000", "#000075",
)  # fmt: skip
SHAPES = ("rect", "ellipse", "triangle")
WORDS = ("SVG", "RL", "42", "go", "ok", "hi", "A", "xy", "VIS", "7")

_COUNTS = {0: (1, 3), 1: (3, 6), 2: (6, 15), 3: (15, 40)}


def svg_document(body: str) -> str:
    """Wrap drawing elements in the canonical root element."""
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CANVAS} {CANVAS}">{body}</svg>'


def primitive_svg(shape: int, x0: int, y0: int, x1: int, y1: int, fill: str) -> str:
    """SVG of one numeric-interface primitive: ``shape`` in :data:`SHAPES`, corner cells in 0..15
    (inclusive cell span), ``fill`` a ``#rrggbb`` colour."""
    left, right = min(x0, x1) * CELL, (max(x0, x1) + 1) * CELL
    top, bottom = min(y0, y1) * CELL, (max(y0, y1) + 1) * CELL
    if SHAPES[shape] == "rect":
        return f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="{fill}"/>'
    if SHAPES[shape] == "ellipse":
        cx, cy, rx, ry = (left + right) / 2, (top + bottom) / 2, (right - left) / 2, (bottom - top) / 2
        return f'<ellipse cx="{cx:g}" cy="{cy:g}" rx="{rx:g}" ry="{ry:g}" fill="{fill}"/>'
    return f'<polygon points="{(left + right) / 2:g},{top} {right},{bottom} {left},{bottom}" fill="{fill}"/>'


class _Builder:
    def __init__(self, rng: np.random.Generator, difficulty: int) -> None:
        self.rng = rng
        self.difficulty = difficulty
        self.defs: list[str] = []

    def colour(self) -> str:
        if self.difficulty <= 1 or self.rng.random() < 0.5:
            return PALETTE[int(self.rng.integers(2, len(PALETTE)))]
        r, g, b = (int(v) for v in self.rng.integers(0, 256, size=3))
        return f"#{r:02x}{g:02x}{b:02x}"

    def num(self, low: float, high: float) -> str:
        return f"{self.rng.uniform(low, high):.1f}"

    def paint(self) -> str:
        rng = self.rng
        if self.difficulty >= 2 and rng.random() < 0.25:
            gid = f"g{len(self.defs)}"
            stops = "".join(f'<stop offset="{o}" stop-color="{self.colour()}"/>' for o in ("0", "1"))
            if self.difficulty >= 3 and rng.random() < 0.5:
                self.defs.append(f'<radialGradient id="{gid}">{stops}</radialGradient>')
            else:
                x2, y2 = ("1", "0") if rng.random() < 0.5 else ("0", "1")
                self.defs.append(
                    f'<linearGradient id="{gid}" x1="0" y1="0" x2="{x2}" y2="{y2}">{stops}</linearGradient>'
                )
            return f"url(#{gid})"
        return self.colour()

    def style(self) -> str:
        rng = self.rng
        attrs = f'fill="{self.paint()}"'
        if self.difficulty >= 1 and rng.random() < 0.35:
            attrs += f' stroke="{self.colour()}" stroke-width="{rng.integers(1, 7)}"'
            if self.difficulty >= 2 and rng.random() < 0.3:
                attrs += f' stroke-dasharray="{rng.integers(2, 9)} {rng.integers(2, 9)}"'
        if self.difficulty >= 1 and rng.random() < 0.25:
            attrs += f' opacity="{rng.uniform(0.4, 0.9):.2f}"'
        return attrs

    def grid_shape(self) -> str:
        rng = self.rng
        x0, x1 = sorted(int(v) for v in rng.integers(0, GRID, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, GRID, size=2))
        return primitive_svg(int(rng.integers(0, 2)), x0, y0, x1, y1, PALETTE[int(rng.integers(2, len(PALETTE)))])

    def shape(self) -> str:
        rng = self.rng
        kinds = ["rect", "ellipse", "polygon", "line"]
        if self.difficulty >= 2:
            kinds += ["path", "path", "group"]
        if self.difficulty >= 3:
            kinds += ["text", "polyline", "arc"]
        kind = kinds[int(rng.integers(len(kinds)))]
        n = self.num
        if kind == "rect":
            rx = f' rx="{n(0, 20)}"' if rng.random() < 0.3 else ""
            return (
                f'<rect x="{n(0, 200)}" y="{n(0, 200)}" width="{n(10, 120)}" height="{n(10, 120)}"{rx} {self.style()}/>'
            )
        if kind == "ellipse":
            return f'<ellipse cx="{n(20, 236)}" cy="{n(20, 236)}" rx="{n(6, 70)}" ry="{n(6, 70)}" {self.style()}/>'
        if kind == "polygon":
            pts = " ".join(f"{n(0, 256)},{n(0, 256)}" for _ in range(int(rng.integers(3, 7))))
            return f'<polygon points="{pts}" {self.style()}/>'
        if kind == "line":
            return (
                f'<line x1="{n(0, 256)}" y1="{n(0, 256)}" x2="{n(0, 256)}" y2="{n(0, 256)}" '
                f'stroke="{self.colour()}" stroke-width="{rng.integers(2, 9)}" stroke-linecap="round"/>'
            )
        if kind == "path":
            d = f"M{n(0, 256)} {n(0, 256)}"
            for _ in range(int(rng.integers(1, 4))):
                if rng.random() < 0.5:
                    d += f" Q{n(0, 256)} {n(0, 256)} {n(0, 256)} {n(0, 256)}"
                else:
                    d += f" C{n(0, 256)} {n(0, 256)} {n(0, 256)} {n(0, 256)} {n(0, 256)} {n(0, 256)}"
            return f'<path d="{d} Z" {self.style()}/>'
        if kind == "arc":
            r = n(10, 60)
            return f'<path d="M{n(40, 216)} {n(40, 216)} a{r} {r} 0 1 0 {n(-60, 60)} {n(-60, 60)}" {self.style()}/>'
        if kind == "polyline":
            pts = " ".join(f"{n(0, 256)},{n(0, 256)}" for _ in range(int(rng.integers(3, 6))))
            return (
                f'<polyline points="{pts}" fill="none" stroke="{self.colour()}" stroke-width="{rng.integers(2, 6)}"/>'
            )
        if kind == "text":
            word = WORDS[int(rng.integers(len(WORDS)))]
            return (
                f'<text x="{n(10, 180)}" y="{n(40, 240)}" font-family="DejaVu Sans" font-size="{n(18, 48)}" '
                f'fill="{self.colour()}">{word}</text>'
            )
        # group: a few shapes under a transform (nested at difficulty 3)
        transform = self.rng.choice(
            [f"translate({n(-40, 40)} {n(-40, 40)})", f"rotate({n(-45, 45)} 128 128)", f"scale({n(0.6, 1.2)})"]
        )
        inner = "".join(
            self.shape() if self.difficulty >= 3 and rng.random() < 0.3 else self.simple()
            for _ in range(int(rng.integers(2, 4)))
        )
        return f'<g transform="{transform}">{inner}</g>'

    def simple(self) -> str:
        n = self.num
        if self.rng.random() < 0.5:
            return f'<rect x="{n(0, 200)}" y="{n(0, 200)}" width="{n(10, 80)}" height="{n(10, 80)}" {self.style()}/>'
        return f'<circle cx="{n(20, 236)}" cy="{n(20, 236)}" r="{n(6, 50)}" {self.style()}/>'


def generate_svg(rng: np.random.Generator, difficulty: int) -> str:
    """A random target SVG of the given difficulty (0..3), drawn only from ``rng``."""
    low, high = _COUNTS[difficulty]
    builder = _Builder(rng, difficulty)
    count = int(rng.integers(low, high + 1))
    body = "".join(builder.grid_shape() if difficulty == 0 else builder.shape() for _ in range(count))
    if difficulty >= 2 and rng.random() < 0.4:
        body = f'<rect width="256" height="256" fill="{builder.colour()}" opacity="0.3"/>' + body
    defs = f"<defs>{''.join(builder.defs)}</defs>" if builder.defs else ""
    return svg_document(defs + body)


_HEX = re.compile(r"#[0-9a-fA-F]{6}\b")


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def task_palette(code: str | None, image: np.ndarray, size: int = len(PALETTE), distinct: float = 24.0) -> list[str]:
    """The numeric interface's colours for one target, so that drawing with the target's colours is
    possible at every difficulty: the ``#rrggbb`` colours of the target's code by frequency, then the
    dominant colours of its image (median-cut, each covering >= 2 % of it), then :data:`PALETTE`;
    colours closer than ``distinct``
    (RGB distance) to an earlier one are skipped. Always ``size`` colours."""
    from PIL import Image

    candidates = sorted(set(_HEX.findall(code or "")), key=lambda c: (-(code or "").count(c), c))
    # colour shares need no detail: a 32 px nearest-neighbour thumbnail keeps exact colours (no blends)
    # and makes the median cut ~50x cheaper than at 256 px
    thumbnail = Image.fromarray(image).resize((32, 32), Image.Resampling.NEAREST)
    quantized = thumbnail.quantize(colors=size, method=Image.Quantize.MEDIANCUT)
    counts: list[tuple[int, int]] = sorted(quantized.getcolors() or [], reverse=True)  # type: ignore[arg-type]
    flat = quantized.getpalette() or []
    enough = 0.02 * 32 * 32  # anti-aliasing blends cover less
    candidates += [f"#{flat[3 * i]:02x}{flat[3 * i + 1]:02x}{flat[3 * i + 2]:02x}" for n, i in counts if n >= enough]
    candidates += list(PALETTE)
    chosen: list[str] = []
    chosen_rgb: list[tuple[int, int, int]] = []
    limit = distinct * distinct
    for colour in candidates:
        r, g, b = _rgb(colour)
        if all((r - r2) ** 2 + (g - g2) ** 2 + (b - b2) ** 2 >= limit for r2, g2, b2 in chosen_rgb):
            chosen.append(colour.lower())
            chosen_rgb.append((r, g, b))
            if len(chosen) == size:
                break
    return chosen
