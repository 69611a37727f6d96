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
- the frame: a square (``size=256``) or any (width, height) (``size=(1280, 720)``: HTML pages are
  not square); user raster targets are letterboxed into it;
- renderer extras: a renderer may return :class:`Rendered` (the image plus facts about it, e.g. the
  visible text of a page or the compiler's first warning); the family turns them into extra quality
  terms (:meth:`RenderFeedbackEnv._extra_quality`, which appear in ``reward_terms``) and feedback
  text, and they are in ``info["render_extras"]``;
- the observation: the target first, then each turn's render (``show_target="every_turn"`` repeats
  the target beside each render, for agents whose context keeps few images);
- blame: a program that crashes the renderer on a fresh backend too is the agent's error; a
  renderer that cannot run at all is an ``env_error``;
- batching: :meth:`RenderFeedbackEnv.run_backend_batch` renders the programs of several envs in
  one renderer call (a vector env's step).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from gymnasium import spaces

from visrl_envs.core import checks
from visrl_envs.core.backend import BackendHandle, call_with_blame
from visrl_envs.core.base import Outcome, PendingStep, VisualEnv
from visrl_envs.core.errors import ActionError, BackendCrash, BackendError, EnvContractError
from visrl_envs.core.files import PathList, collect_files
from visrl_envs.core.imagery import IMAGE_SUFFIXES, check_user_images, load_image
from visrl_envs.core.images import fit_frame, side_by_side
from visrl_envs.core.rewards import METRIC_SIZE, SimilarityWeights, TargetSimilarity, length_score
from visrl_envs.core.tools import Answer

#: Grey gap between the target (left) and the render (right) in ``render()`` frames.
PANEL_GAP = 4

RewardFn = Callable[[np.ndarray, np.ndarray], float]
#: (width, height) of a renderer's output, px.
Frame = tuple[int, int]


class ProgramError(ActionError):
    """The agent's program was refused or could not be rendered (the message says why)."""


class RewardFunctionError(RuntimeError):
    """The user's ``reward_fn`` raised or returned a non-finite value (a bug in that function: it
    propagates out of ``step`` instead of becoming a NaN reward or a blamed agent)."""


def _similarity_weights(weights: Any) -> SimilarityWeights:
    """``SimilarityWeights`` from an instance, a dict of its terms (terms not named weigh 0), or
    ``None`` (the defaults 0.3 / 0.4 / 0.3)."""
    if weights is None:
        return SimilarityWeights()
    if isinstance(weights, dict):
        unknown = set(weights) - {"pixel", "ssim", "edge"}
        if unknown:
            raise ValueError(f"weights has unknown terms {sorted(unknown)}; the terms are pixel, ssim, edge")
        given = {k: checks.number(f"weights[{k!r}]", v, 0.0) for k, v in weights.items()}
        weights = SimilarityWeights(**{"pixel": 0.0, "ssim": 0.0, "edge": 0.0, **given})  # unnamed terms: 0
    if not isinstance(weights, SimilarityWeights):
        raise TypeError(f"weights must be a SimilarityWeights or a dict of pixel/ssim/edge, got {weights!r}")
    weights.normalised()
    return weights


@dataclass(frozen=True)
class Rendered:
    """A render with facts about it beside the image (the visible text of a page, a compiler's log
    line): what a :class:`Renderer` returns when it has more to say than pixels."""

    image: np.ndarray
    extras: Mapping[str, Any] = field(default_factory=dict)


class Renderer(Protocol):
    """Turns programs into uint8 ``(height, width, 3)`` images on an opaque background, for a
    ``frame`` of ``(width, height)`` px.

    ``render`` returns the image (or a :class:`Rendered` with extras); it raises
    :class:`ProgramError` when the program is at fault, :class:`BackendCrash` when the renderer died
    or hung on it, and :class:`BackendError` when it cannot run at all. ``render_batch`` returns,
    per program, what ``render`` would return or the exception it would raise; it may raise
    :class:`BackendError` for the whole batch.
    """

    def render(self, program: str, frame: Frame) -> np.ndarray | Rendered: ...

    def render_batch(self, programs: Sequence[str], frame: Frame) -> Sequence[np.ndarray | Rendered | Exception]: ...

    def close(self) -> None: ...


def _frame_argument(name: str, value: Any) -> Frame:
    """``(width, height)`` from a side (a square) or a pair, each side checked like ``image_side``."""
    if isinstance(value, tuple | list) and len(value) == 2:
        return checks.image_side(f"{name}[0] (width)", value[0]), checks.image_side(f"{name}[1] (height)", value[1])
    if isinstance(value, tuple | list):
        raise ValueError(f"{name} is a side in px or (width, height), got {value!r}")
    side = checks.image_side(name, value)
    return side, side


class RenderFeedbackEnv(VisualEnv):
    """Base of the code-with-rendering-feedback families (see the module docstring).

    Family hooks: :meth:`_renderer_factory`, :meth:`_generate_target`, :meth:`_find_program`,
    :meth:`_empty_program`, the numeric canvas (:meth:`_numeric_space`, :meth:`_clear_canvas`,
    :meth:`_draw_numeric`), :meth:`oracle_numeric`; optionally ``code_suffixes`` (user target files
    in the family's language), :meth:`_raster_oracle_program`, :meth:`_extra_quality` and
    :meth:`_extras_feedback` (renderer extras as reward terms and text).

    ``size`` is a side (a square frame) or ``(width, height)``; ``self.frame_size`` is always
    ``(width, height)`` and ``self.size`` what was given (an int for a square).
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
        size: int | tuple[int, int] | None = None,
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
        self.frame_size: Frame = _frame_argument("size", self.default_size[self.action_mode] if size is None else size)
        self.width, self.height = self.frame_size
        #: The frame as given: a side for a square, else (width, height).
        self.size: Any = self.width if self.width == self.height else self.frame_size
        self.max_turns = checks.integer("max_turns", max_turns, 1, 1000)
        self.weights = _similarity_weights(weights)
        self.length_weight = checks.number("length_weight", length_weight, 0.0, 1.0, open_high=True)
        self.reward_fn_mode = checks.choice("reward_fn_mode", reward_fn_mode, ("add", "replace"))
        self.reward_fn_weight = checks.number("reward_fn_weight", reward_fn_weight)
        self.reward_fn = checks.function("reward_fn", reward_fn) if reward_fn is not None else None
        if self.reward_fn is None and (reward_fn_mode != "add" or reward_fn_weight != 1.0):
            raise ValueError("reward_fn_mode and reward_fn_weight apply to a reward_fn; none was given")
        if self.reward_fn_mode == "replace" and reward_fn_weight != 1.0:
            raise ValueError(
                "reward_fn_weight applies in reward_fn_mode='add' only; in 'replace' the reward_fn's value "
                "takes the normalised similarity's place (scale it inside your function)"
            )
        self.success_threshold = checks.number("success_threshold", success_threshold, 0.0, 1.0)
        self.render_timeout_s = checks.number("render_timeout_s", render_timeout_s, 0.0, 600.0)
        if self.render_timeout_s <= 0:
            raise ValueError(f"render_timeout_s must be > 0, got {render_timeout_s}")
        self.metric_size = checks.integer("metric_size", metric_size, 16, 2048) if metric_size is not None else None
        self.show_target = checks.choice("show_target", show_target, ("first", "every_turn"))
        self._target_files = self._check_target_files(targets) if targets is not None else None
        self._file_cache: dict[int, tuple[np.ndarray, str | None]] = {}
        self.renderer: BackendHandle[Renderer] = self.add_backend(f"{self.language} renderer", self._renderer_factory())
        image = spaces.Box(0, 255, (self.height, self.width, 3), dtype=np.uint8)
        numeric_observation = spaces.Dict({"target": image, "canvas": image, **self._numeric_extra_space()})
        self._set_spaces((self.height, self.width, 3), numeric_observation, self._numeric_space())
        self.target: np.ndarray | None = None
        self.target_code: str | None = None
        self.render_image = np.full((self.height, self.width, 3), 255, dtype=np.uint8)
        #: What the renderer said about the current picture besides its pixels (:class:`Rendered`).
        self.render_extras: dict[str, Any] = {}
        self._code = ""
        self.metrics: dict[str, float] = {}
        self._parts: dict[str, float] = {}

    # -- family hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _renderer_factory(self) -> Callable[[], Renderer]:
        """A picklable factory of the family's renderer (a class or a ``functools.partial``)."""

    @abstractmethod
    def _generate_target(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A procedural target: its image at ``self.frame_size`` and its program (all randomness from ``rng``)."""

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
    def _draw_numeric(self, action: Any) -> tuple[np.ndarray | Rendered, int]:
        """Draw one validated numeric action; return the canvas image (or a :class:`Rendered` with
        the extras a render of the same program has) and its program's length."""

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
        return np.full((self.height, self.width, 3), 255, dtype=np.uint8)

    def _extra_quality(self, image: np.ndarray, extras: Mapping[str, Any]) -> dict[str, float]:
        """Quality terms of the current picture beyond image similarity, from the renderer's extras
        (e.g. ``{"text": 0.2 * text_match}`` for a page whose visible text should match). Like the
        similarity, each term is rewarded by its gain since the last valid picture, under its own
        name in ``reward_terms`` (names must not be ``similarity``, ``length`` or ``custom``); their
        weights are the family's. Default none."""
        return {}

    def _extras_feedback(self, extras: Mapping[str, Any]) -> str:
        """A sentence about the renderer's extras for the agent's feedback (default none)."""
        return ""

    def interface_twin_kwargs(self) -> dict[str, Any]:
        return {"size": self.size}

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
        self.render_extras = {}
        blank = self._similarity.terms(self.render_image)
        self._blank_similarity = blank["similarity"]
        self.metrics = {**blank, "blank_similarity": self._blank_similarity, "score": 0.0}
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
                    result = call_with_blame(
                        self.renderer, lambda r: r.render(code, self.frame_size), f"target file {path}"
                    )
                except ActionError as err:
                    raise ValueError(f"target {path} cannot be rendered: {err}") from None
                self._file_cache[index] = (result.image if isinstance(result, Rendered) else result, code)
            else:
                self._file_cache[index] = (self._read_raster(path), None)
        return self._file_cache[index]

    def _read_code_file(self, path: Path) -> str:
        """The program of a user target file (families decode compressed variants)."""
        return path.read_text(encoding="utf-8", errors="replace")

    def _check_code_file(self, path: Path) -> None:
        """Refuse a user target file in the family's language that cannot be a program (raise
        ``ValueError`` with the reason); it is rendered, in the sandbox, when a task draws it."""

    def _check_target_files(self, targets: PathList) -> list[Path]:
        """Every user target file, checked now: rasters decoded (at least 32 px a side), programs
        checked by :meth:`_check_code_file`. One ``ValueError`` names the first bad file."""
        accepted = sorted(IMAGE_SUFFIXES | self.code_suffixes)
        files = collect_files(targets, set(accepted), "target")
        code = [f for f in files if f.suffix.lower() in self.code_suffixes]
        rasters = [f for f in files if f.suffix.lower() not in self.code_suffixes]
        if rasters:
            check_user_images(rasters, "target", accepted)
        for path in code:
            try:
                self._check_code_file(path)
            except (OSError, ValueError) as err:
                raise ValueError(f"target file {path} is not a usable {self.language} program: {err}") from None
        return files

    def _read_raster(self, path: Path) -> np.ndarray:
        """A raster target, letterboxed on white (transparency composited onto white)."""
        return fit_frame(np.asarray(load_image(path), dtype=np.uint8), self.width, self.height)

    def _task_text(self) -> str:
        return (
            f"Write {self.language.upper()} code that reproduces the target image (the first image, "
            f"{self.width}x{self.height} px). After each try you see the render of your code and its score "
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

    def _run_backend(self, program: str) -> np.ndarray | Rendered:
        return call_with_blame(
            self.renderer, lambda r: r.render(program, self.frame_size), f"your {self.language} code"
        )

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
        if any(getattr(envs[i], "frame_size", None) != lead.frame_size for i in todo):  # no common frame: one by one
            return [env.run_backend(p) for env, p in zip(envs, pendings, strict=True)]
        try:
            images: Sequence[Any] = lead.renderer.get().render_batch(
                [pendings[i].request for i in todo], lead.frame_size
            )
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
        extras: Mapping[str, Any] = {}
        drawn: Any
        if isinstance(action, str):
            drawn = backend_result
        else:
            drawn, code_length = self._draw_numeric(action)
        if isinstance(drawn, Rendered):
            drawn, extras = drawn.image, drawn.extras
        image: np.ndarray = drawn
        if isinstance(action, str):
            if (
                not isinstance(image, np.ndarray)
                or image.shape != (self.height, self.width, 3)
                or image.dtype != np.uint8
            ):
                raise EnvContractError(
                    f"the {self.language} renderer returned {getattr(image, 'dtype', type(image).__name__)} "
                    f"{getattr(image, 'shape', '')} instead of a uint8 {self.width}x{self.height} RGB image"
                )
            self._code = action
            code_length = len(action)
        self.render_image = image
        self.render_extras = dict(extras)
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
        said = self._extras_feedback(self.render_extras) if self.render_extras else ""
        return Outcome(terms, terminated=success, feedback=f"{feedback} {said}" if said else feedback)

    def _update_quality(self, image: np.ndarray, code_length: int) -> dict[str, float]:
        """Score ``image``; return the gain of each quality term since the last valid picture."""
        assert self.target is not None
        self.metrics = self._measure(image)
        similarity = self.normalised(self.metrics["similarity"])
        parts: dict[str, float] = {}
        custom = self._custom_reward(image) if self.reward_fn is not None else None
        if custom is not None and self.reward_fn_mode == "replace":
            similarity = custom
        w_len = self.length_weight if self.target_code else 0.0
        parts["similarity"] = (1 - w_len) * similarity
        if w_len:
            parts["length"] = w_len * length_score(code_length, len(self.target_code or ""))
        if custom is not None and self.reward_fn_mode == "add":
            parts["custom"] = self.reward_fn_weight * custom
        extra = self._extra_quality(image, self.render_extras)
        clash = set(extra) & {"similarity", "length", "custom", "format"}
        if clash:
            raise EnvContractError(f"{type(self).__name__}._extra_quality names reserved terms {sorted(clash)}")
        parts.update({k: float(v) for k, v in extra.items()})
        gains = {k: v - self._parts.get(k, 0.0) for k, v in parts.items()}
        self._parts = parts
        return gains

    def _custom_reward(self, image: np.ndarray) -> float:
        """The user's ``reward_fn(render, target)``: an exception or a non-finite value is a bug in
        that function, reported as :class:`RewardFunctionError` naming it (never a NaN reward)."""
        assert self.reward_fn is not None and self.target is not None
        name = getattr(self.reward_fn, "__qualname__", repr(self.reward_fn))
        try:
            value = float(self.reward_fn(image.copy(), self.target.copy()))
        except Exception as err:
            raise RewardFunctionError(f"reward_fn {name} raised {type(err).__name__}: {err}") from err
        if not math.isfinite(value):
            raise RewardFunctionError(f"reward_fn {name} returned {value}; it must return a finite number")
        return value

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
        info: dict[str, Any] = {"metrics": dict(self.metrics)}
        if self.render_extras:
            info["render_extras"] = dict(self.render_extras)
        return info

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
