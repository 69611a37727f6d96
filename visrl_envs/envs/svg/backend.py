"""The SVG renderer backend: untrusted SVG in a sandboxed worker, trusted SVG in-process.

Agent-written and user-supplied SVG is rendered by :class:`SvgRasterizer` in a
:class:`~visrl_envs.core.sandbox.SandboxWorker` that runs :mod:`visrl_envs.envs.svg.raster`
(checks, then cairosvg). Our own procedural targets are trusted and drawn in-process (no IPC). Errors
follow the renderer protocol of :mod:`visrl_envs.core.feedback`: the SVG's fault is a
:class:`~visrl_envs.core.feedback.ProgramError`, a dead or hung worker a
:class:`~visrl_envs.core.errors.BackendCrash` (blame is settled by a retry on a fresh worker), a
worker that cannot start a :class:`~visrl_envs.core.errors.BackendError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from visrl_envs.core.errors import BackendCrash, BackendError
from visrl_envs.core.feedback import ProgramError
from visrl_envs.core.sandbox import (
    SandboxCallError,
    SandboxCrash,
    SandboxLimits,
    SandboxTimeout,
    SandboxUnavailable,
    SandboxWorker,
)
from visrl_envs.envs.svg.raster import MAX_SVG_BYTES, output_frame, render_trusted

BACKEND_NAME = "svg renderer"
_RASTER = "visrl_envs.envs.svg.raster"


class SvgRasterizer:
    """The SVG :class:`~visrl_envs.core.feedback.Renderer`: untrusted SVG in a persistent sandboxed
    worker, our own SVG in-process. Owned by the env through a backend handle."""

    def __init__(self, timeout_s: float = 10.0, memory_bytes: int = 1 << 30) -> None:
        self.worker = SandboxWorker(
            SandboxLimits(memory_bytes=memory_bytes, timeout_s=timeout_s),
            preload=(
                _RASTER,
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

    @staticmethod
    def _encode(svg: str | bytes) -> bytes:
        data = svg.encode("utf-8", errors="replace") if isinstance(svg, str) else bytes(svg)
        if len(data) > MAX_SVG_BYTES:
            raise ProgramError(f"the SVG has {len(data)} bytes; the limit is {MAX_SVG_BYTES}")
        return data

    def _call(self, function: str, *args: Any) -> Any:
        try:
            return self.worker.call(function, *args)
        except (SandboxTimeout, SandboxCrash) as err:
            raise BackendCrash(f"the SVG renderer {_lower_first(str(err))}", BACKEND_NAME) from None
        except SandboxUnavailable as err:
            raise BackendError(f"the SVG renderer cannot run: {err}", BACKEND_NAME) from None

    def render(self, svg: str | bytes, size: int | tuple[int, int]) -> np.ndarray:
        """Render untrusted ``svg`` at ``size`` (a side, or ``(width, height)``). Raises
        :class:`ProgramError` when the SVG is at fault (refused, unparsable, unrenderable),
        :class:`BackendCrash` when the worker died or hung on it, :class:`BackendError` when no
        worker can run."""
        data = self._encode(svg)
        width, height = output_frame(size)
        try:
            raw = self._call(f"{_RASTER}:rasterize", data, (width, height))
        except SandboxCallError as err:
            raise ProgramError(_explain(err)) from None
        return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy()

    def render_batch(
        self, programs: Sequence[str | bytes], size: int | tuple[int, int]
    ) -> list[np.ndarray | Exception]:
        """Render several untrusted programs in one worker round trip."""
        out: list[np.ndarray | Exception] = []
        data: list[bytes] = []
        slots: list[int] = []
        for program in programs:
            try:
                data.append(self._encode(program))
                slots.append(len(out))
                out.append(ProgramError("pending"))
            except ProgramError as err:
                out.append(err)
        if not data:
            return out
        width, height = output_frame(size)
        try:
            blob, errors = self._call(f"{_RASTER}:rasterize_batch", data, (width, height))
        except SandboxCallError as err:  # the batch function itself failed (e.g. out of memory)
            raise BackendCrash(f"the SVG renderer failed a batch: {err}", BACKEND_NAME) from None
        frame = width * height * 3
        images = np.frombuffer(blob, dtype=np.uint8).reshape(len(data), height, width, 3)
        for k, (slot, error) in enumerate(zip(slots, errors, strict=True)):
            out[slot] = ProgramError(_explain(SandboxCallError(*error))) if error else images[k].copy()
        assert len(blob) == frame * len(data)
        return out

    def render_trusted(self, svg: str, size: int | tuple[int, int]) -> np.ndarray:
        """Render SVG we generated ourselves, in this process (no sandbox round trip)."""
        return render_trusted(svg, size)

    def kill(self) -> None:
        """Kill the worker as a crash would (fault tests); the next render finds it dead."""
        self.worker.kill()

    def hang(self) -> None:
        """Make the next render hang in the worker until its timeout fires (fault tests)."""
        self.worker.hang()

    def close(self) -> None:
        self.worker.close()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _explain(err: SandboxCallError) -> str:
    if err.kind == "SvgInputError":
        return err.message
    if err.kind == "PermissionError":
        return f"the SVG tried to reach outside the sandbox: {err.message}"
    if err.kind == "MemoryError":
        return "rendering the SVG ran out of memory"
    return f"cairosvg could not render the SVG ({err.kind}: {err.message[:300]})"


__all__ = ["BACKEND_NAME", "SvgRasterizer"]
