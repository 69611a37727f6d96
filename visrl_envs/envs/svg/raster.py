"""SVG checks and rasterisation, as run inside the sandbox worker (DESIGN.md section 4).

This module is what the worker imports: it depends on cairosvg, defusedxml and numpy only. Before
cairosvg sees a document, :func:`check_svg` refuses what is hostile or absurd: more than 256 KiB,
gzip, DTDs and entities, depth > 64, > 20,000 elements or > 50,000 after ``<use>`` expansion,
references outside the document, root sizes above 16384 and coordinates beyond 1e6 (cairo crashes on
``r="1e38"``). cairosvg then runs with ``unsafe=False``, no ``url_fetcher`` and a forced output size.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np

MAX_SVG_BYTES = 256 * 1024
MAX_DEPTH = 64
MAX_ELEMENTS = 20_000
#: Cap on elements after expanding ``<use>`` references (cairosvg's own cap is 100,000 at draw time).
MAX_EXPANDED = 50_000
#: Cap on the decompressed size of a gzipped (``.svgz``) user file.
MAX_GUNZIPPED = 4 * MAX_SVG_BYTES
#: Largest root ``width``/``height`` accepted (the output size is forced anyway).
MAX_DIMENSION = 16384
#: Largest magnitude of a number in a geometry attribute: cairo crashes (SIGSEGV) on coordinates
#: like ``r="1e38"``; no picture in a 256-unit frame needs more than this.
MAX_COORDINATE = 1e6
#: Attributes whose numbers are coordinates or lengths (checked against :data:`MAX_COORDINATE`).
GEOMETRY_ATTRIBUTES = frozenset(
    [
        "x",
        "y",
        "width",
        "height",
        "cx",
        "cy",
        "r",
        "rx",
        "ry",
        "x1",
        "y1",
        "x2",
        "y2",
        "fx",
        "fy",
        "dx",
        "dy",
        "d",
        "points",
        "transform",
        "viewBox",
        "stroke-width",
        "stroke-dasharray",
        "stroke-dashoffset",
        "font-size",
        "offset",
        "style",
        "gradientTransform",
        "patternTransform",
    ]
)
_XLINK = "{http://www.w3.org/1999/xlink}href"
_URL = re.compile(r"url\(\s*['\"]?([^'\")]*)", re.IGNORECASE)
_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class SvgInputError(ValueError):
    """The SVG is refused before rendering (size, depth, fan-out, DTD, encoding)."""


def gunzip_bounded(data: bytes, limit: int = MAX_GUNZIPPED) -> bytes:
    """Decompress gzip ``data`` but refuse anything that inflates past ``limit`` bytes (gzip bombs)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as err:
        raise SvgInputError(f"corrupt gzip data: {err}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise SvgInputError(f"gzipped SVG inflates past {limit} bytes")
    return out


def check_svg(data: bytes) -> None:
    """Refuse hostile or oversized SVG before cairosvg parses it (raises :class:`SvgInputError`)."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    if not data.strip():
        raise SvgInputError("the SVG is empty")
    if len(data) > MAX_SVG_BYTES:
        raise SvgInputError(f"the SVG has {len(data)} bytes; the limit is {MAX_SVG_BYTES}")
    if data[:2] == b"\x1f\x8b":
        raise SvgInputError("gzip-compressed input is not accepted here")
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise SvgInputError(f"DTDs and XML entities are not allowed ({type(err).__name__})") from None
    except ParseError as err:
        raise SvgInputError(f"not well-formed XML: {err}") from None
    except RecursionError:
        raise SvgInputError(f"nesting deeper than {MAX_DEPTH} levels") from None
    if not root.tag.endswith("svg"):
        raise SvgInputError(f"the root element must be <svg>, got <{root.tag.split('}')[-1]}>")
    for dimension in ("width", "height"):
        match = _NUMBER.match(root.attrib.get(dimension, ""))
        if match and abs(float(match.group(1))) > MAX_DIMENSION:
            raise SvgInputError(f"root width/height above {MAX_DIMENSION} are not accepted")
    ids: dict[str, Any] = {}
    count = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise SvgInputError(f"nesting deeper than {MAX_DEPTH} levels")
        if count > MAX_ELEMENTS:
            raise SvgInputError(f"more than {MAX_ELEMENTS} elements")
        if "id" in node.attrib:
            ids[node.attrib["id"]] = node
        _check_references(node)
        _check_magnitudes(node)
        stack.extend((child, depth + 1) for child in node)
    try:
        expanded = _expanded_size(root, ids)
    except RecursionError:
        raise SvgInputError("<use> references chain too deeply") from None
    if expanded > MAX_EXPANDED:
        raise SvgInputError(f"<use> references expand to more than {MAX_EXPANDED} elements")


def _local(reference: str) -> bool:
    ref = reference.strip().lower()
    return ref.startswith("#") or ref.startswith("data:") or ref == ""


def _check_references(node: Any) -> None:
    """Refuse anything that points outside the document: only ``#fragment`` and ``data:`` URLs."""
    for name, value in node.attrib.items():
        if name in ("href", _XLINK) and not _local(value):
            raise SvgInputError(f"external reference {value[:60]!r} is not allowed; embed images as data: URLs")
        for url in _URL.findall(value):
            if not _local(url):
                raise SvgInputError(f"external reference {url[:60]!r} is not allowed")
    if node.tag.endswith("style") and node.text:
        if "@import" in node.text.lower():
            raise SvgInputError("external reference (@import) is not allowed in <style>")
        for url in _URL.findall(node.text):
            if not _local(url):
                raise SvgInputError(f"external reference {url[:60]!r} is not allowed")


def _check_magnitudes(node: Any) -> None:
    """Refuse coordinates and lengths beyond :data:`MAX_COORDINATE` (they crash cairo)."""
    for name, value in node.attrib.items():
        if name.split("}")[-1] in GEOMETRY_ATTRIBUTES:
            for number in _ANY_NUMBER.findall(value):
                if abs(float(number)) > MAX_COORDINATE:
                    raise SvgInputError(
                        f"the number {number[:20]} in {name.split('}')[-1]}= is out of range (at most {MAX_COORDINATE:g})"
                    )


def _expanded_size(root: Any, ids: dict[str, Any]) -> int:
    """Number of elements drawn once every ``<use>`` is expanded (memoised; cycles count as huge)."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            return MAX_EXPANDED + 1
        active.add(key)
        total = 1
        if node.tag.endswith("use"):
            ref = node.attrib.get("href") or node.attrib.get(_XLINK) or ""
            target = ids.get(ref[1:]) if ref.startswith("#") else None
            if target is not None:
                total += size(target)
        for child in node:
            total += size(child)
            if total > MAX_EXPANDED:
                break
        active.discard(key)
        memo[key] = min(total, MAX_EXPANDED + 1)
        return memo[key]

    return size(root)


def output_frame(size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an output size given as a side (a square) or as (width, height)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def render_svg_bytes(data: bytes, size: int | tuple[int, int]) -> np.ndarray:
    """Render checked SVG bytes to an opaque uint8 ``(height, width, 3)`` image on white (in this
    process); ``size`` is a side (a square) or ``(width, height)``."""
    import cairosvg.parser
    import cairosvg.surface

    width, height = output_frame(size)
    tree = cairosvg.parser.Tree(bytestring=data, unsafe=False)
    surface = cairosvg.surface.PNGSurface(
        tree, None, 96, output_width=width, output_height=height, background_color="white"
    )
    surface.cairo.flush()
    stride = surface.cairo.get_stride()
    bgra = np.frombuffer(surface.cairo.get_data(), dtype=np.uint8).reshape(height, stride // 4, 4)
    rgb = np.ascontiguousarray(bgra[:, :width, 2::-1])
    surface.finish()
    return rgb


def rasterize(data: bytes, size: int | tuple[int, int]) -> bytes:
    """Worker entry point: check, then render; returns the raw RGB bytes."""
    check_svg(data)
    return render_svg_bytes(data, size).tobytes()


def rasterize_batch(programs: list[bytes], size: int | tuple[int, int]) -> tuple[bytes, list[tuple[str, str] | None]]:
    """Worker entry point for a batch: the RGB bytes of every image back to back (zeros where a
    program failed) and, per program, ``None`` or the ``(type name, message)`` of its error."""
    width, height = output_frame(size)
    blank = bytes(width * height * 3)
    blobs: list[bytes] = []
    errors: list[tuple[str, str] | None] = []
    for data in programs:
        try:
            blobs.append(rasterize(data, size))
            errors.append(None)
        except Exception as err:  # each program's own failure; the batch goes on
            blobs.append(blank)
            errors.append((type(err).__name__, str(err)[:2000]))
    return b"".join(blobs), errors


def render_trusted(svg: str, size: int | tuple[int, int]) -> np.ndarray:
    """Render SVG we generated ourselves, in-process (no sandbox round trip)."""
    return render_svg_bytes(svg.encode(), size)
