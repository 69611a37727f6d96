"""SVG code with rendering feedback (RLRF, StarVector, VAGEN's SVG env)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from visrl_envs.core.base import ActionMode, BackendError, Outcome, Split, VisualEnv
from visrl_envs.core.files import PathList, collect_files
from visrl_envs.core.images import as_uint8_rgb, fit_square, resize, side_by_side
from visrl_envs.core.rewards import METRIC_SIZE, SimilarityWeights, TargetSimilarity, length_score
from visrl_envs.core.sandbox import SandboxError, SandboxLimits
from visrl_envs.core.tools import ActionError, ToolSet, answer_text, extract_answer
from visrl_envs.envs.svg.backend import MAX_SVG_BYTES, SvgRasterizer, SvgRenderError, gunzip_bounded, render_trusted
from visrl_envs.envs.svg.canvas import PrimitiveCanvas
from visrl_envs.envs.svg.generator import CANVAS, CELL, GRID, PALETTE, SHAPES, generate_svg, primitive_svg, svg_document

DEFAULT_SIZE = {"text": 256, "numeric": 64}
#: Grey gap between the target (left) and the render (right) in the text observation's image.
PANEL_GAP = 4
PRIMITIVE_BUDGET = {0: 8, 1: 16, 2: 24, 3: 32}
_NVEC = (len(SHAPES), GRID, GRID, GRID, GRID, len(PALETTE))
TARGET_SUFFIXES = {".svg", ".svgz", ".png", ".jpg", ".jpeg", ".bmp", ".webp"}

RewardFn = Callable[[np.ndarray, np.ndarray], float]


def extract_svg(text: str) -> str:
    """The SVG program in agent text: inside ``<answer>`` if present, inside a code fence if present,
    from the first ``<svg`` to the last ``</svg>``."""
    if not isinstance(text, str):
        raise ActionError(f"the action must be a string of SVG code, got {type(text).__name__}")
    content = extract_answer(text)
    content = text if content is None else content
    fence = content.find("```")
    fence_end = content.find("```", fence + 3) if fence >= 0 else -1
    if fence_end >= 0:  # a fenced block, with or without a language tag
        content = content[fence + 3 : fence_end]
        first_line, _, rest = content.partition("\n")
        if first_line.strip().lower() in ("svg", "xml", "html"):
            content = rest
    # linear scans (a greedy regex from every "<svg" is quadratic on hostile text)
    lower = content.lower()
    start = lower.find("<svg")
    while start >= 0 and start + 4 < len(lower) and not (lower[start + 4].isspace() or lower[start + 4] in ">/"):
        start = lower.find("<svg", start + 4)
    end = lower.rfind("</svg")
    close = lower.find(">", end) if end >= 0 else -1
    if start < 0 or close < 0 or close < start:
        raise ActionError("no <svg>...</svg> element found; reply with the SVG inside <answer>...</answer>")
    return content[start : close + 1]


class SvgRenderEnv(VisualEnv):
    """Write SVG code that reproduces a target image, refining it from rendering feedback.

    ## Description
    The target is the raster of a hidden SVG (or of a user's SVG/PNG file) at ``size`` x ``size`` px on
    opaque white, in the frame ``viewBox="0 0 256 256"``. Procedural targets go from 1-3 flat shapes
    on a 16 x 16 cell grid (difficulty 0) through strokes, polygons and opacity (1), paths, gradients
    and transformed groups (2), to 15-40 shapes with radial gradients, nested groups and text (3).

    ## Action Space
    - text: SVG code, in ``<answer>...</answer>`` or bare (a fenced block works too). It is rendered
      by cairosvg in a sandboxed worker (no files, no network, no entities; at most 256 KiB, depth 64,
      20,000 elements, 50,000 after ``<use>`` expansion; 10 s).
    - numeric: ``MultiDiscrete([3, 16, 16, 16, 16, 16])`` = (shape: rect/ellipse/triangle, x0, y0, x1,
      y1 as grid cells spanned inclusively, colour index into the 16-colour palette). Each step draws
      one primitive on the canvas incrementally.

    ## Observation Space
    - text: ``{"image": uint8 (S, 2S + 4, 3), "text": str}``: the image holds the target (left) beside
      the render of the last valid SVG (right; blank at first), as RLRF and VAGEN show it; the text
      holds the instructions first, then each turn's scores or error.
    - numeric: ``{"target": uint8 (S, S, 3), "canvas": uint8 (S, S, 3)}``. ``S`` = ``size``
      (256 text, 64 numeric by default; any S >= 64).

    ## Rewards
    ``similarity = 0.3 * pixel + 0.4 * ssim + 0.3 * edge``, computed on render and target box-averaged to
    ``metric_size`` (128) px when larger: ``pixel = 1 - RMSE`` (RGB in [0, 1]), ``ssim`` = grayscale SSIM
    (7x7 window, scikit-image's value) clipped to [0, 1], ``edge`` = IoU of Canny edge maps (sigma 1,
    thresholds 0.1/0.2) dilated by 1 px. ``quality = (1 - w_len) * similarity + w_len * length_score(len(code), len(reference))``
    with ``w_len = 0.1`` (0 when the target has no reference code); ``length_score`` is 1 up to the
    reference length and falls linearly to 0 at twice it. The reward of a step is the gain in quality,
    term by term (``similarity``, ``length``, ``custom``), so the return of an episode is the quality
    of its last valid picture. An SVG that cannot be rendered gets ``format = -0.1`` and leaves the
    picture as it was (the validity gate). ``reward_fn(render, target) -> float`` adds
    ``reward_fn_weight * value`` as ``custom`` (``reward_fn_mode="add"``) or replaces ``similarity`` in
    the quality (``"replace"``), e.g. for DreamSim/DINO on the user's GPU.
    ``info["score"]`` = similarity; ``info["success"]`` = similarity >= ``success_threshold`` (0.99).
    Floors (benchmarks/BASELINES.md): an empty SVG scores ~0.52 at difficulties 0-1 and ~0.30 at 3
    (the white background matches), about what one random primitive per turn scores; pixel and
    SSIM terms punish a wrong shape more than no shape, so raise ``weights.edge`` or add a
    ``reward_fn`` if a policy learns to draw little.

    ## Starting State
    A white canvas and a target drawn from the task seed.

    ## Episode End
    Terminated on success; truncated after ``max_turns`` (text, 5) or ``max_primitives`` (numeric,
    8/16/24/32 by difficulty) steps, or on a renderer failure (``info["env_error"]``).

    ## Arguments
    ``size``, ``max_turns``, ``max_primitives``, ``targets`` (SVG/SVGZ/PNG/JPEG files or directories; used by
    both splits, whose task seeds still differ; non-square rasters are letterboxed on white),
    ``weights`` (:class:`SimilarityWeights`), ``metric_size`` (``None`` scores at full size), ``length_weight``, ``reward_fn``, ``reward_fn_mode``,
    ``reward_fn_weight``, ``success_threshold``, ``render_timeout_s``, plus the common ones.

    ## Anchors
    RLRF (arXiv 2505.20793): R = recon + semantic + code-length terms, rendered with cairosvg;
    StarVector (CVPR 2025): cairosvg on white at a fixed square size, MSE/SSIM/DINO metrics;
    VAGEN's SVG env: multi-turn, the render shown back each turn, Canny-IoU structural term.
    CPU-only by default: model-based terms (DINO, DreamSim, CLIP) plug in through ``reward_fn``.

    ## Version History
    - v0: initial release.
    """

    family: ClassVar[str] = "svg"

    def __init__(
        self,
        action_mode: ActionMode = "text",
        difficulty: int = 0,
        split: Split = "train",
        render_mode: str | None = None,
        *,
        size: int | None = None,
        max_turns: int = 5,
        max_primitives: int | None = None,
        targets: PathList | None = None,
        weights: SimilarityWeights | None = None,
        length_weight: float = 0.1,
        reward_fn: RewardFn | None = None,
        reward_fn_mode: str = "add",
        reward_fn_weight: float = 1.0,
        success_threshold: float = 0.99,
        render_timeout_s: float = 10.0,
        metric_size: int | None = METRIC_SIZE,
    ) -> None:
        super().__init__(action_mode, difficulty, split, render_mode)
        self.size = int(size or DEFAULT_SIZE[action_mode])
        if self.size < 64:
            raise ValueError("size must be at least 64 px")
        if max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        if reward_fn_mode not in ("add", "replace"):
            raise ValueError("reward_fn_mode must be 'add' or 'replace'")
        if not 0 <= length_weight < 1:
            raise ValueError("length_weight must be in [0, 1)")
        self.max_turns = int(max_turns)
        self.max_primitives = int(max_primitives or PRIMITIVE_BUDGET[self.difficulty])
        self.weights = weights or SimilarityWeights()
        self.weights.normalised()
        self.length_weight = float(length_weight)
        self.reward_fn = reward_fn
        self.reward_fn_mode = reward_fn_mode
        self.reward_fn_weight = float(reward_fn_weight)
        self.success_threshold = float(success_threshold)
        self.render_timeout_s = float(render_timeout_s)
        self.metric_size = metric_size
        self._target_files = collect_files(targets, TARGET_SUFFIXES, "target") if targets is not None else None
        self._file_cache: dict[int, tuple[np.ndarray, str | None]] = {}
        self._rasterizer: SvgRasterizer | None = None
        self.tools = ToolSet([], answer_hint="the complete SVG program")
        image = spaces.Box(0, 255, (self.size, self.size, 3), dtype=np.uint8)
        self._set_spaces(
            (self.size, 2 * self.size + PANEL_GAP, 3),
            spaces.Dict({"target": image, "canvas": image}),
            spaces.MultiDiscrete(list(_NVEC)),
        )
        self.target: np.ndarray | None = None
        self.target_code: str | None = None
        self.canvas = PrimitiveCanvas(self.size)
        self.render_image = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        self._code = ""
        self.metrics: dict[str, float] = {}
        self._parts: dict[str, float] = {}

    # -- backend ---------------------------------------------------------------------------------
    @property
    def rasterizer(self) -> SvgRasterizer:
        if self._rasterizer is None:
            self._rasterizer = SvgRasterizer(SandboxLimits(memory_bytes=1 << 30, timeout_s=self.render_timeout_s))
        return self._rasterizer

    def _close_backends(self) -> None:
        if self._rasterizer is not None:
            self._rasterizer.close()

    # -- task ------------------------------------------------------------------------------------
    @property
    def horizon(self) -> int:
        return self.max_turns if self.action_mode == "text" else self.max_primitives

    def _new_task(self, rng: np.random.Generator) -> None:
        if self._target_files is None:
            self.target_code = generate_svg(rng, self.difficulty)
            self.target = render_trusted(self.target_code, self.size)
        else:
            self.target, self.target_code = self._load_target(int(rng.integers(len(self._target_files))))
        self._similarity = TargetSimilarity(self.target, self.weights, self.metric_size)
        self.canvas.clear()
        self.render_image = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        self._code = ""
        self.metrics = {"pixel": 0.0, "ssim": 0.0, "edge": 0.0, "similarity": 0.0}
        self._parts = {}

    def _load_target(self, index: int) -> tuple[np.ndarray, str | None]:
        if index not in self._file_cache:
            assert self._target_files is not None
            path = self._target_files[index]
            data = path.read_bytes()
            if path.suffix.lower() in (".svg", ".svgz"):
                if data[:2] == b"\x1f\x8b":
                    data = gunzip_bounded(data)
                try:
                    image = self.rasterizer.render(data, self.size)
                except (SvgRenderError, SandboxError) as err:
                    raise ValueError(f"target {path} cannot be rendered: {err}") from None
                code: str | None = data.decode("utf-8", errors="replace")
            else:
                from PIL import Image

                with Image.open(path) as im:
                    im.draft("RGB", (self.size, self.size))
                    image = fit_square(as_uint8_rgb(im.convert("RGBA")), self.size)
                code = None
            self._file_cache[index] = (image, code)
        return self._file_cache[index]

    def _prompt(self) -> str:
        n = self.horizon
        return (
            f"Write SVG code that reproduces the target image ({self.size}x{self.size} px, the left panel of the image; "
            "the right panel shows your current render, blank at first). Your SVG is rendered with "
            f'cairosvg at {self.size}x{self.size} px on an opaque white background; use viewBox="0 0 {CANVAS} {CANVAS}". '
            "External files, URLs, scripts and XML entities are not loaded. Reply with the complete SVG inside "
            f"<answer>...</answer>. After each try you see your render and its similarity to the target (pixel, SSIM, "
            f"edge; 1.0 = identical). You have {n} tr{'y' if n == 1 else 'ies'}; a similarity of "
            f"{self.success_threshold:g} ends the episode."
        )

    # -- actions ---------------------------------------------------------------------------------
    def _parse_text(self, text: str) -> str:
        code = extract_svg(text)
        if len(code.encode("utf-8", errors="replace")) > MAX_SVG_BYTES:
            raise ActionError(f"the SVG is longer than {MAX_SVG_BYTES} bytes")
        return code

    def _decode_numeric(self, action: Any) -> tuple[int, ...]:
        """(shape, x0, y0, x1, y1, colour), validated against the MultiDiscrete space."""
        decoded = self._numeric_integers(action)
        assert isinstance(decoded, tuple)
        return decoded

    def _apply(self, action: str | tuple[int, ...]) -> Outcome:
        if isinstance(action, str):
            try:
                image = self.rasterizer.render(action, self.size)
            except SvgRenderError as err:
                raise ActionError(f"SVG not rendered: {err}") from None
            except SandboxError as err:
                raise BackendError(f"SVG renderer failed: {err}") from err
            self._code = action
            code_length = len(action)
        else:
            self.canvas.draw(*action)
            image = self.canvas.array()
            code_length = self.canvas.code_length
        self.render_image = image
        terms = self._update_quality(image, code_length)
        success = self._success()
        if self.action_mode == "numeric":  # no text to write on the numeric hot path
            return Outcome(terms, terminated=success)
        m = self.metrics
        feedback = (
            f"Your SVG rendered (right panel; the target is on the left). Similarity {m['similarity']:.3f} (pixel {m['pixel']:.3f}, "
            f"SSIM {m['ssim']:.3f}, edge {m['edge']:.3f})." + (" Target reached." if success else "")
        )
        return Outcome(terms, terminated=success, feedback=feedback)

    def _update_quality(self, image: np.ndarray, code_length: int) -> dict[str, float]:
        assert self.target is not None
        self.metrics = self._similarity.terms(image)
        similarity = self.metrics["similarity"]
        parts: dict[str, float] = {}
        custom = float(self.reward_fn(image, self.target)) if self.reward_fn is not None else None
        if custom is not None and self.reward_fn_mode == "replace":
            similarity = custom
        w_len = self.length_weight if self.target_code else 0.0
        parts["similarity"] = (1 - w_len) * similarity
        if w_len:
            parts["length"] = w_len * length_score(code_length, len(self.target_code or ""))
        if custom is not None and self.reward_fn_mode == "add":
            parts["custom"] = self.reward_fn_weight * custom
        gains = {k: v - self._parts.get(k, 0.0) for k, v in parts.items()}
        self._parts = parts
        return gains

    @property
    def code(self) -> str:
        """The SVG program of the current picture (the last valid text answer, or the canvas)."""
        return self.canvas.svg() if self.action_mode == "numeric" else self._code

    # -- observation -----------------------------------------------------------------------------
    def _text_image(self) -> np.ndarray:
        assert self.target is not None
        return side_by_side([self.target, self.render_image], gap=PANEL_GAP)

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        assert self.target is not None
        return {"target": self.target.copy(), "canvas": self.render_image.copy()}

    def _score(self) -> float:
        return float(self.metrics.get("similarity", 0.0))

    def _success(self) -> bool:
        return self._score() >= self.success_threshold

    def _info(self, terms: dict[str, float], action_error: str | None, env_error: str | None) -> dict[str, Any]:
        info = super()._info(terms, action_error, env_error)
        info["metrics"] = dict(self.metrics)
        return info

    def _render_frame(self) -> np.ndarray:
        assert self.target is not None
        return side_by_side([self.target, self.render_image], gap=PANEL_GAP)

    def _action_text(self, action: tuple[int, ...]) -> str:
        """A primitive as text: the current canvas program with the primitive added."""
        body = "".join(primitive_svg(*p) for p in [*self.canvas.primitives, action])
        return answer_text(svg_document(body))

    def primitive_plan(self) -> list[tuple[int, ...]] | None:
        """The target as numeric primitives when it is made only of grid primitives (difficulty 0)."""
        if self.target_code is None:
            return None
        body = re.sub(r"^<svg[^>]*>|</svg>$", "", self.target_code)
        plan: list[tuple[int, ...]] = []
        for element in re.findall(r"<[^>]*>", body):
            attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', element))
            if attrs.get("fill") not in PALETTE:
                return None
            colour = PALETTE.index(attrs["fill"])
            try:
                if element.startswith("<rect ") and set(attrs) == {"x", "y", "width", "height", "fill"}:
                    x, y, w, h = (float(attrs[k]) for k in ("x", "y", "width", "height"))
                    shape = 0
                elif element.startswith("<ellipse ") and set(attrs) == {"cx", "cy", "rx", "ry", "fill"}:
                    cx, cy, rx, ry = (float(attrs[k]) for k in ("cx", "cy", "rx", "ry"))
                    x, y, w, h, shape = cx - rx, cy - ry, 2 * rx, 2 * ry, 1
                else:
                    return None
            except ValueError:
                return None
            cells = [x / CELL, y / CELL, (x + w) / CELL - 1, (y + h) / CELL - 1]
            if any(c != int(c) or not 0 <= c < GRID for c in cells):
                return None
            plan.append((shape, *(int(c) for c in cells), colour))
        return plan

    def oracle_numeric(self, candidates: int = 48) -> np.ndarray:
        """Next primitive: the exact decomposition of a grid-primitive target (difficulty 0), else the
        best of ``candidates`` random primitives by similarity after drawing it (a greedy heuristic)."""
        plan = self.primitive_plan()
        done = len(self.canvas.primitives)
        if plan is not None and done < len(plan) and [tuple(p) for p in self.canvas.primitives] == plan[:done]:
            return np.array(plan[done], dtype=np.int64)
        rng = np.random.default_rng([self.task_seed or 0, self.turn])
        best, best_score = None, -np.inf
        for _ in range(candidates):
            action = self.sample_numeric_action(rng)
            trial = self.canvas.copy()
            trial.draw(*(int(v) for v in action))
            score = self._similarity.terms(trial.array())["similarity"]
            if score > best_score:
                best, best_score = action, score
        assert best is not None
        return np.asarray(best, dtype=np.int64)

    def null_text(self) -> str:
        """An empty SVG: the blank white canvas."""
        return answer_text(svg_document(""))

    def oracle_text(self) -> str:
        """The hidden program, or for raster-only targets a 32 x 32 grid of rectangles approximating it."""
        assert self.target is not None
        if self.target_code is not None:
            return answer_text(self.target_code)
        cells = 32
        small = resize(self.target, cells)
        unit = CANVAS / cells
        rects = "".join(
            f'<rect x="{c * unit:g}" y="{r * unit:g}" width="{unit:g}" height="{unit:g}" '
            f'fill="#{small[r, c, 0]:02x}{small[r, c, 1]:02x}{small[r, c, 2]:02x}"/>'
            for r in range(cells)
            for c in range(cells)
        )
        return answer_text(svg_document(rects))
