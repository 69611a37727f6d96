"""Code with rendering feedback, as a core piece: any family whose agent writes a program that a
renderer turns into pixels (SVG today; TikZ and HTML image-to-code next).

A family provides a :class:`Renderer` (render one program; render a batch) and a few hooks (draw a
target, find the program in agent text, the numeric primitive canvas). :class:`RenderFeedbackEnv`
owns the rest, the same for every such family:

- the target and its cached similarity statistics; user target files (rasters letterboxed on
  white; the family's own code files rendered by its renderer);
- the quality-gain reward with its terms, ``reward_fn`` (add or replace), the validity gate (an
  unrenderable program is the agent's error and leaves the picture as it was), per-term metrics in
  ``info["metrics"]``;
- the observation: the target first, then each turn's render (``show_target="every_turn"`` repeats
  the target beside each render, for agents whose context keeps few images);
- blame: a program that crashes the renderer on a fresh backend too is the agent's error; a
  renderer that cannot run at all is an ``env_error``;
- batching: :meth:`RenderFeedbackEnv.run_backend_batch` renders the programs of several envs in
  one renderer call (a vector env's step).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from gymnasium import spaces

from visrl_envs.core.backend import BackendHandle, call_with_blame
from visrl_envs.core.base import Outcome, PendingStep, VisualEnv
from visrl_envs.core.errors import ActionError, BackendCrash, BackendError
from visrl_envs.core.files import PathList, collect_files
from visrl_envs.core.images import as_uint8_rgb, fit_square, side_by_side
from visrl_envs.core.rewards import METRIC_SIZE, SimilarityWeights, TargetSimilarity, length_score
from visrl_envs.core.tools import Answer

#: Grey gap between the target (left) and the render (right) in ``render()`` frames.
PANEL_GAP = 4
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"})

RewardFn = Callable[[np.ndarray, np.ndarray], float]


class ProgramError(ActionError):
    """The agent's program was refused or could not be rendered (the message says why)."""


class Renderer(Protocol):
    """Turns programs into uint8 ``(size, size, 3)`` images on an opaque background.

    ``render`` raises :class:`ProgramError` when the program is at fault, :class:`BackendCrash`
    when the renderer died or hung on it, and :class:`BackendError` when it cannot run at all.
    ``render_batch`` returns, per program, the image or the exception ``render`` would raise; it
    may raise :class:`BackendError` for the whole batch.
    """

    def render(self, program: str, size: int) -> np.ndarray: ...

    def render_batch(self, programs: Sequence[str], size: int) -> list[np.ndarray | Exception]: ...

    def close(self) -> None: ...


class RenderFeedbackEnv(VisualEnv):
    """Base of the code-with-rendering-feedback families (see the module docstring).

    Family hooks: :meth:`_renderer_factory`, :meth:`_generate_target`, :meth:`_find_program`,
    :meth:`_empty_program`, the numeric canvas (:meth:`_numeric_space`, :meth:`_clear_canvas`,
    :meth:`_draw_numeric`), :meth:`oracle_numeric`; optionally ``code_suffixes`` (user target files
    in the family's language) and :meth:`_raster_oracle_program`.
    """

    #: The language the agent writes (prompts, answer format).
    language: ClassVar[str] = ""
    #: File suffixes of user targets written in ``language`` (rendered by the family's renderer).
    code_suffixes: ClassVar[frozenset[str]] = frozenset()
    max_images_per_turn: ClassVar[int] = 2
    default_size: ClassVar[dict[str, int]] = {"text": 256, "numeric": 64}

    def __init__(
        self,
        *,
        size: int | None = None,
        max_turns: int = 5,
        targets: PathList | None = None,
        weights: SimilarityWeights | None = None,
        length_weight: float = 0.1,
        reward_fn: RewardFn | None = None,
        reward_fn_mode: str = "add",
        reward_fn_weight: float = 1.0,
        success_threshold: float = 0.99,
        render_timeout_s: float = 10.0,
        metric_size: int | None = METRIC_SIZE,
        show_target: str = "first",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.size = int(size or self.default_size[self.action_mode])
        if self.size < 64:
            raise ValueError("size must be at least 64 px")
        if max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        if reward_fn_mode not in ("add", "replace"):
            raise ValueError("reward_fn_mode must be 'add' or 'replace'")
        if not 0 <= length_weight < 1:
            raise ValueError("length_weight must be in [0, 1)")
        if show_target not in ("first", "every_turn"):
            raise ValueError("show_target must be 'first' or 'every_turn'")
        self.max_turns = int(max_turns)
        self.weights = weights or SimilarityWeights()
        self.weights.normalised()
        self.length_weight = float(length_weight)
        self.reward_fn = reward_fn
        self.reward_fn_mode = reward_fn_mode
        self.reward_fn_weight = float(reward_fn_weight)
        self.success_threshold = float(success_threshold)
        self.render_timeout_s = float(render_timeout_s)
        self.metric_size = metric_size
        self.show_target = show_target
        suffixes = set(RASTER_SUFFIXES | self.code_suffixes)
        self._target_files = collect_files(targets, suffixes, "target") if targets is not None else None
        self._file_cache: dict[int, tuple[np.ndarray, str | None]] = {}
        self.renderer: BackendHandle[Renderer] = self.add_backend(f"{self.language} renderer", self._renderer_factory())
        image = spaces.Box(0, 255, (self.size, self.size, 3), dtype=np.uint8)
        numeric_observation = spaces.Dict({"target": image, "canvas": image, **self._numeric_extra_space()})
        self._set_spaces((self.size, self.size, 3), numeric_observation, self._numeric_space())
        self.target: np.ndarray | None = None
        self.target_code: str | None = None
        self.render_image = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        self._code = ""
        self.metrics: dict[str, float] = {}
        self._parts: dict[str, float] = {}

    # -- family hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _renderer_factory(self) -> Callable[[], Renderer]:
        """A picklable factory of the family's renderer (a class or a ``functools.partial``)."""

    @abstractmethod
    def _generate_target(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A procedural target: its image at ``self.size`` and its program (all randomness from ``rng``)."""

    @abstractmethod
    def _find_program(self, content: str) -> str:
        """The program in the answer's content; raise :class:`ActionError` when there is none."""

    @abstractmethod
    def _empty_program(self) -> str:
        """The program that draws nothing (the null baseline)."""

    @abstractmethod
    def _numeric_space(self) -> spaces.Space:
        """The numeric action space (primitives to draw)."""

    @abstractmethod
    def _clear_canvas(self) -> None:
        """Start the numeric interface's canvas afresh."""

    @abstractmethod
    def _draw_numeric(self, action: Any) -> tuple[np.ndarray, int]:
        """Draw one validated numeric action; return the canvas image and its program's length."""

    def _raster_oracle_program(self, image: np.ndarray) -> str:
        """A program approximating a raster target (the oracle's best for targets without code)."""
        return self._empty_program()

    def _numeric_extra_space(self) -> dict[str, spaces.Space]:
        """Entries the family adds to the numeric observation space (default none)."""
        return {}

    def _numeric_extra_observation(self) -> dict[str, np.ndarray]:
        """Values of those entries (fresh arrays)."""
        return {}

    def _blank_image(self) -> np.ndarray:
        """What the empty program renders: the floor the score is normalised against (white)."""
        return np.full((self.size, self.size, 3), 255, dtype=np.uint8)

    # -- task ------------------------------------------------------------------------------------
    @property
    def horizon(self) -> int:
        return self.max_turns

    def _new_task(self, rng: np.random.Generator) -> None:
        if self._target_files is None:
            self.target, self.target_code = self._generate_target(rng)
        else:
            self.target, self.target_code = self._load_target(int(rng.integers(len(self._target_files))))
        self._similarity = TargetSimilarity(self.target, self.weights, self.metric_size)
        self.render_image = self._blank_image()
        self._blank_similarity = self._similarity.terms(self.render_image)["similarity"]
        self.metrics = self._measure(self.render_image)
        self._clear_canvas()
        self._code = ""
        self._parts = {}
        self.show(self.target)

    def normalised(self, similarity: float) -> float:
        """``(similarity - blank) / (1 - blank)``: 0 for the empty picture, 1 for the target, negative
        for a picture further from the target than an empty one (``blank`` is the empty picture's
        similarity; when the target is itself nearly blank, ``similarity`` is returned as it is)."""
        room = 1.0 - self._blank_similarity
        return (similarity - self._blank_similarity) / room if room > 1e-6 else similarity

    def _measure(self, image: np.ndarray) -> dict[str, float]:
        """Raw similarity terms of ``image``, the empty picture's similarity, and the score."""
        terms = self._similarity.terms(image)
        terms["blank_similarity"] = self._blank_similarity
        terms["score"] = min(1.0, max(0.0, self.normalised(terms["similarity"])))
        return terms

    def _load_target(self, index: int) -> tuple[np.ndarray, str | None]:
        if index not in self._file_cache:
            assert self._target_files is not None
            path = self._target_files[index]
            if path.suffix.lower() in self.code_suffixes:
                code = self._read_code_file(path)
                try:
                    image = call_with_blame(self.renderer, lambda r: r.render(code, self.size), f"target file {path}")
                except ActionError as err:
                    raise ValueError(f"target {path} cannot be rendered: {err}") from None
                self._file_cache[index] = (image, code)
            else:
                self._file_cache[index] = (self._read_raster(path), None)
        return self._file_cache[index]

    def _read_code_file(self, path: Path) -> str:
        """The program of a user target file (families decode compressed variants)."""
        return path.read_text(encoding="utf-8", errors="replace")

    def _read_raster(self, path: Path) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as im:
            im.draft("RGB", (self.size, self.size))
            return fit_square(as_uint8_rgb(im.convert("RGBA")), self.size)

    def _task_text(self) -> str:
        return (
            f"Write {self.language.upper()} code that reproduces the target image (the first image, "
            f"{self.size}x{self.size} px). After each try you see the render of your code and its score "
            f"(0 = an empty picture, 1 = identical to the target); a score of {self.success_threshold:g} "
            "ends the episode."
        )

    # -- actions ---------------------------------------------------------------------------------
    def _parse_text(self, text: Any) -> str:
        answer = self.tools.parse(text)
        if not isinstance(answer, Answer) or not isinstance(answer.value, str):
            raise ActionError(f"reply with {self.language.upper()} code inside <answer>...</answer>")
        return self._find_program(answer.value)

    def _backend_request(self, action: Any) -> str | None:
        return action if isinstance(action, str) else None

    def _run_backend(self, program: str) -> np.ndarray:
        return call_with_blame(self.renderer, lambda r: r.render(program, self.size), f"your {self.language} code")

    @classmethod
    def run_backend_batch(cls, envs: Sequence[VisualEnv], pendings: Sequence[PendingStep]) -> list[Any]:
        """Render every pending program of the batch in one call of the first env's renderer (the
        other envs start no renderer). An item whose render crashed the batch is retried alone on a
        fresh renderer, with blame (:func:`call_with_blame`)."""
        results: list[Any] = [None] * len(envs)
        todo = [i for i, p in enumerate(pendings) if p.error is None and isinstance(p.request, str)]
        if not todo:
            return results
        lead = envs[todo[0]]
        assert isinstance(lead, RenderFeedbackEnv)
        if any(getattr(envs[i], "size", None) != lead.size for i in todo):  # no common frame: one by one
            return [env.run_backend(p) for env, p in zip(envs, pendings, strict=True)]
        try:
            images: list[Any] = lead.renderer.get().render_batch([pendings[i].request for i in todo], lead.size)
        except BackendCrash as err:
            images = [err] * len(todo)
        except BackendError as err:
            return [err if i in todo else None for i in range(len(envs))]
        for i, image in zip(todo, images, strict=True):
            if isinstance(image, BackendCrash):
                image = lead.run_backend(pendings[i])
            results[i] = image
        return results

    def _apply(self, action: Any, backend_result: Any) -> Outcome:
        if isinstance(action, str):
            image = backend_result
            self._code = action
            code_length = len(action)
        else:
            image, code_length = self._draw_numeric(action)
        self.render_image = image
        terms = self._update_quality(image, code_length)
        success = self._success()
        if self.action_mode == "numeric":  # no text to write on the numeric hot path
            return Outcome(terms, terminated=success)
        if self.show_target == "every_turn":
            assert self.target is not None
            self.show(self.target)
        self.show(image)
        m = self.metrics
        which = "the second image; the first is the target" if self.show_target == "every_turn" else "this image"
        feedback = (
            f"Your code rendered ({which}). Score {m['score']:.3f} (0 = an empty picture, 1 = the target); "
            f"similarity {m['similarity']:.3f}: pixel {m['pixel']:.3f}, SSIM {m['ssim']:.3f}, edge {m['edge']:.3f}."
            + (" Target reached." if success else "")
        )
        return Outcome(terms, terminated=success, feedback=feedback)

    def _update_quality(self, image: np.ndarray, code_length: int) -> dict[str, float]:
        """Score ``image``; return the gain of each quality term since the last valid picture."""
        assert self.target is not None
        self.metrics = self._measure(image)
        similarity = self.normalised(self.metrics["similarity"])
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
        """The program of the current picture (the last valid text answer)."""
        return self._code

    # -- observation -----------------------------------------------------------------------------
    def _numeric_observation(self) -> dict[str, np.ndarray]:
        assert self.target is not None
        return {"target": self.target.copy(), "canvas": self.render_image.copy(), **self._numeric_extra_observation()}

    def _score(self) -> float:
        return float(self.metrics.get("score", 0.0))

    def _success(self) -> bool:
        return self._score() >= self.success_threshold

    def _extra_info(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics)}

    def _render_frame(self) -> np.ndarray:
        assert self.target is not None
        return side_by_side([self.target, self.render_image], gap=PANEL_GAP)

    # -- baselines -------------------------------------------------------------------------------
    def null_text(self) -> str:
        """The program that draws nothing."""
        return self._action_text(self._empty_program())

    def oracle_text(self) -> str:
        """The hidden program, or for raster-only targets the family's approximation of it."""
        assert self.target is not None
        code = self.target_code if self.target_code is not None else self._raster_oracle_program(self.target)
        return self._action_text(code)

    def _action_text(self, action: Any) -> str:
        if isinstance(action, str):
            return f"<answer>{action}</answer>"
        return super()._action_text(action)
