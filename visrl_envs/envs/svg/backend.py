"""SVG rasterisation backend: untrusted SVG in a sandboxed worker, trusted primitives in-process.

Agent-written and user-supplied SVG is rendered by :class:`SvgRasterizer` in a
:class:`~visrl_envs.core.sandbox.SandboxWorker` (DESIGN.md section 4): cairosvg with its default
``unsafe=False`` (external references become empty images; XML entities and DTDs are refused), no
``url_fetcher``, the output size forced, input bytes, nesting depth, element count and ``<use>``
fan-out checked before cairosvg sees the document. Our own procedural targets and the numeric
interface's primitives are trusted and drawn in-process (no IPC on the hot path).
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np

from visrl_envs.core.sandbox import (
    SandboxCallError,
    SandboxCrash,
    SandboxLimits,
    SandboxTimeout,
    SandboxUnavailable,
    SandboxWorker,
)

MAX_SVG_BYTES = 256 * 1024
MAX_DEPTH = 64
MAX_ELEMENTS = 20_000
#: Cap on elements after expanding ``<use>`` references (cairosvg's own cap is 100,000 at draw time).
MAX_EXPANDED = 50_000
#: Cap on the decompressed size of a gzipped (``.svgz``) user file.
MAX_GUNZIPPED = 4 * MAX_SVG_BYTES
#: Largest root ``width``/``height`` accepted (the output size is forced anyway).
MAX_DIMENSION = 16384
_XLINK = "{http://www.w3.org/1999/xlink}href"
_URL = re.compile(r"url\(\s*['\"]?([^'\")]*)", re.IGNORECASE)
_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)", re.IGNORECASE)


class SvgInputError(ValueError):
    """The SVG is refused before rendering (size, depth, fan-out, DTD, encoding)."""


class SvgRenderError(RuntimeError):
    """Raised in the env process: the agent's SVG cannot be rendered (message for the agent)."""


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


def render_svg_bytes(data: bytes, size: int) -> np.ndarray:
    """Render checked SVG bytes to an opaque uint8 ``(size, size, 3)`` image on white (in this process)."""
    import cairosvg.parser
    import cairosvg.surface

    tree = cairosvg.parser.Tree(bytestring=data, unsafe=False)
    surface = cairosvg.surface.PNGSurface(
        tree, None, 96, output_width=size, output_height=size, background_color="white"
    )
    surface.cairo.flush()
    stride = surface.cairo.get_stride()
    bgra = np.frombuffer(surface.cairo.get_data(), dtype=np.uint8).reshape(size, stride // 4, 4)
    rgb = np.ascontiguousarray(bgra[:, :size, 2::-1])
    surface.finish()
    return rgb


def rasterize(data: bytes, size: int) -> bytes:
    """Worker entry point: check, then render; returns the raw RGB bytes."""
    check_svg(data)
    return render_svg_bytes(data, size).tobytes()


def render_trusted(svg: str, size: int) -> np.ndarray:
    """Render SVG we generated ourselves, in-process (no sandbox round trip)."""
    return render_svg_bytes(svg.encode(), size)


class SvgRasterizer:
    """Renders untrusted SVG in a persistent sandboxed worker; owned and closed by the env."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.worker = SandboxWorker(
            limits or SandboxLimits(memory_bytes=1 << 30, timeout_s=10.0),
            preload=(
                "visrl_envs.envs.svg.backend",
                "cairosvg",
                "cairosvg.parser",
                "cairosvg.surface",
                "PIL.Image",
                "PIL.PngImagePlugin",
                "PIL.JpegImagePlugin",
                "PIL.GifImagePlugin",
                "urllib.request",
            ),
        )

    def render(self, svg: str | bytes, size: int) -> np.ndarray:
        """Render ``svg`` at ``size`` px.

        Raises :class:`SvgRenderError` when the SVG is at fault (refused, unparsable, unrenderable) and
        :class:`~visrl_envs.core.sandbox.SandboxError` subclasses (timeout, crash, unavailable) when the
        worker failed; the env reports the latter as ``env_error``.
        """
        data = svg.encode("utf-8", errors="replace") if isinstance(svg, str) else bytes(svg)
        if len(data) > MAX_SVG_BYTES:
            raise SvgRenderError(f"the SVG has {len(data)} bytes; the limit is {MAX_SVG_BYTES}")
        try:
            raw = self.worker.call("visrl_envs.envs.svg.backend:rasterize", data, size)
        except SandboxCallError as err:
            raise SvgRenderError(_explain(err)) from None
        return np.frombuffer(raw, dtype=np.uint8).reshape(size, size, 3).copy()

    def close(self) -> None:
        self.worker.close()


def _explain(err: SandboxCallError) -> str:
    if err.kind == "SvgInputError":
        return err.message
    if err.kind == "PermissionError":
        return f"the SVG tried to reach outside the sandbox: {err.message}"
    if err.kind == "MemoryError":
        return "rendering the SVG ran out of memory"
    return f"cairosvg could not render the SVG ({err.kind}: {err.message[:300]})"


__all__ = [
    "MAX_SVG_BYTES",
    "SandboxCrash",
    "SandboxTimeout",
    "SandboxUnavailable",
    "SvgInputError",
    "SvgRasterizer",
    "SvgRenderError",
    "check_svg",
    "gunzip_bounded",
    "render_trusted",
]
