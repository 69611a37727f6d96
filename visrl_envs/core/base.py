"""The contract every visrl env shares.

:class:`VisualEnv` owns ``reset``/``step``, both interfaces (text and numeric), the episode horizon,
error capture and blame, ``info`` assembly, seeding, train/test splits, backends and rendering. A
family implements a few hooks (the table in docs/ARCHITECTURE.md): draw a task from an rng, say
what the task is, apply one typed action, build the numeric observation, score the state.

``step`` runs in three stages, public so that a vector env can batch the middle one across its
sub-envs (:mod:`visrl_envs.core.vector`):

1. :meth:`~VisualEnv.prepare_step`: parse and validate the action (no backend I/O);
2. :meth:`~VisualEnv.run_backend` (or the family's :meth:`~VisualEnv.run_backend_batch`): the
   expensive backend call, e.g. rendering a program;
3. :meth:`~VisualEnv.finish_step`: apply the result, observe, score, assemble ``info``.

Every :class:`ActionError` (the agent's fault) and :class:`BackendError` (the machine's) raised in
any stage, including while observing and scoring, is caught and reported in ``info``; nothing the
agent sends makes ``step`` raise.

Stateful backends (``add_backend(..., stateful=True)``: a browser page, a TeX job directory, a GL
scene) hold episode state the env does not. The env keeps the episode's journal (its task seed,
reset options and every action applied so far) and, when such a backend is rebuilt mid-episode
(after a crash, a discard, a kill, or in an env unpickled mid-episode), restores it before first
use with :meth:`VisualEnv._restore_backend`: by default the episode is replayed onto the fresh
backend and the env's own state is then put back as it was, so nothing the agent sees changes.
"""

from __future__ import annotations

import copy
import functools
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from visrl_envs.core import checks
from visrl_envs.core.backend import Backend, BackendHandle, SharedParent
from visrl_envs.core.errors import ActionError, BackendError, BackendUnavailable, EnvContractError, FailureScope
from visrl_envs.core.numeric import sample_numeric, validate_numeric
from visrl_envs.core.prompt import ImageNote, PromptSpec, announce_images, build_prompt, escape_markers
from visrl_envs.core.rewards import format_gate
from visrl_envs.core.spaces import (
    MAX_DECLARED_IMAGES,
    ImageSequence,
    text_action_space,
    text_observation_space,
)
from visrl_envs.core.text import MAX_ACTION_CHARS, to_charset
from visrl_envs.core.tools import Answer, ToolCall, ToolContext, ToolSet, answer_text, tool_call_text

ActionMode = Literal["text", "numeric"]
Split = Literal["train", "test"]

#: Task seeds of each split: disjoint halves of the 32-bit range.
SPLIT_SEED_RANGES: dict[str, tuple[int, int]] = {"train": (0, 2**31), "test": (2**31, 2**32)}
MAX_DIFFICULTY = 3
#: Second entropy word of the episode generator (``default_rng([task_seed, EPISODE_STREAM])``).
EPISODE_STREAM = 0x0E915


@dataclass
class Outcome:
    """What applying one action did: reward terms by name, termination and feedback text."""

    reward_terms: dict[str, float] = field(default_factory=dict)
    terminated: bool = False
    feedback: str = ""


@dataclass
class PendingStep:
    """Stage 1's result: the typed action (or the agent's error) and what the backend must do."""

    action: Any = None
    error: ActionError | None = None
    request: Any = None


StepResult = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]


class VisualEnv(gym.Env[dict[str, Any], Any]):
    """Base of every visrl env. Subclasses set ``family`` and ``tools`` and implement the hooks.

    Arguments common to every env (keyword arguments; families forward them with ``**kwargs``):
        action_mode: ``"text"`` (observation ``{"images", "text"}``, action a string) or ``"numeric"``
            (Dict of uint8 images and vectors; Discrete/MultiDiscrete/Box actions).
        difficulty: 0 (easiest) to 3.
        split: ``"train"`` or ``"test"``; their task seeds are disjoint.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"`` (a pygame window).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 4}  # noqa: RUF012 - gymnasium's convention
    family: ClassVar[str] = ""
    #: Reward term added for a malformed or invalid action (RAGEN/GEM convention: -0.1).
    format_penalty: ClassVar[float] = -0.1
    #: Most images one text observation carries (``_set_spaces(max_images=...)`` per instance).
    max_images_per_turn: ClassVar[int] = 1
    #: How often ``reset`` retries a backend failure with a fresh backend before giving up.
    reset_retries: ClassVar[int] = 2
    #: Reset options the family takes besides ``task_seed``: name -> what it does (for the message
    #: refusing unknown ones); their values are checked by :meth:`_check_reset_options`.
    reset_options: ClassVar[Mapping[str, str]] = {}
    tools: ToolSet

    def __init__(
        self,
        action_mode: ActionMode = "text",
        difficulty: int = 0,
        split: Split = "train",
        render_mode: str | None = None,
    ) -> None:
        self.action_mode: ActionMode = checks.choice("action_mode", action_mode, ("text", "numeric"))
        self.difficulty = checks.integer("difficulty", difficulty, 0, MAX_DIFFICULTY)
        self.split: Split = checks.choice("split", split, ("train", "test"))
        checks.choice("render_mode", render_mode, (None, *self.metadata["render_modes"]))
        self.render_mode = render_mode
        self.task_seed: int | None = None
        self.turn = 0
        #: Randomness used during an episode (noise, distractors): derived from the task seed, so
        #: ``reset(options={"task_seed": k})`` replays the whole episode, not only its start.
        self.episode_rng = np.random.default_rng([0, EPISODE_STREAM])
        #: The options of this episode's ``reset`` besides ``task_seed``, as checked by the family.
        self.episode_options: dict[str, Any] = {}
        self._needs_reset = True
        self._display: Any = None
        self._last_numeric_obs: dict[str, Any] | None = None
        self._shown: list[np.ndarray] = []
        self._captions: list[str | None] = []
        self._image_sizes: list[tuple[int, int]] = []  # (width, height) of the episode's images so far
        self._first_images: tuple[ImageNote, ...] = ()
        self._max_images = self.max_images_per_turn
        self._fixed_frame = True
        self._backends: dict[str, BackendHandle[Any]] = {}
        self._stateful: set[str] = set()
        #: Actions applied this episode (kept when a backend is stateful; ``None`` while none is).
        self._journal: list[Any] | None = None
        self._replay_phase: str | None = None  # None, "task" or "actions" while a replay runs

    # -- hooks every family implements --------------------------------------------------------
    @property
    @abstractmethod
    def horizon(self) -> int:
        """Steps after which the current episode is truncated."""

    @abstractmethod
    def _new_task(self, rng: np.random.Generator) -> None:
        """Draw a new task (all randomness from ``rng``), set the initial state and :meth:`show`
        the first images."""

    @abstractmethod
    def _task_text(self) -> str:
        """This episode's task (what to do; grids, choices, the coordinate frame). Tools and the
        answer format are added from ``self.tools`` by :func:`~visrl_envs.core.prompt.build_prompt`."""

    @abstractmethod
    def _apply(self, action: Any, backend_result: Any) -> Outcome:
        """Carry out a typed action given the backend's result for it (``None`` when it made no
        request); :meth:`show` the images it produced. Raise :class:`ActionError` (agent's fault)
        or :class:`BackendError`."""

    @abstractmethod
    def _numeric_observation(self) -> dict[str, np.ndarray]:
        """The numeric observation (fresh arrays)."""

    @abstractmethod
    def _score(self) -> float:
        """The task metric of the current state, in [0, 1]."""

    @abstractmethod
    def _render_frame(self) -> np.ndarray:
        """A frame for ``render()`` (uint8 HxWx3)."""

    @abstractmethod
    def null_text(self) -> str:
        """The well-formed text action that changes nothing (the null baseline): its score is the
        floor of the task metric, e.g. a blank SVG's similarity to the target."""

    @abstractmethod
    def oracle_text(self) -> str:
        """The text action an all-knowing agent sends now (scripted baselines; proves solvability)."""

    @abstractmethod
    def oracle_numeric(self) -> Any:
        """The numeric action an all-knowing (or, where noted, greedy) agent sends now."""

    # -- hooks with defaults ---------------------------------------------------------------------
    def _parse_text(self, text: Any) -> Any:
        """Agent text -> a typed action (default: ``self.tools.parse`` with :meth:`_tool_context`
        when a tool has constraints); raise :class:`ActionError`."""
        return self.tools.parse(text, self._tool_context() if self.tools.has_constraints else None)

    def _decode_numeric(self, action: Any) -> Any:
        """Numeric action -> the typed action the text parser produces (default: the validated
        value, see :mod:`visrl_envs.core.numeric`)."""
        return validate_numeric(self.numeric_action_space, action)

    def _action_text(self, action: Any) -> str:
        """The text an agent would write for a typed action (default: tool calls and answers)."""
        if isinstance(action, ToolCall):
            return tool_call_text(action.name, action.arguments)
        if isinstance(action, Answer):
            return answer_text(action.text)
        raise TypeError(f"{type(self).__name__} must define _action_text for {type(action).__name__}")

    def _backend_request(self, action: Any) -> Any:
        """What the backend must do for ``action`` (stage 2), or ``None`` (default)."""
        return None

    def _run_backend(self, request: Any) -> Any:
        """Serve one request; families that make requests define this (and may batch them in
        :meth:`run_backend_batch`)."""
        raise TypeError(f"{type(self).__name__} made a backend request but defines no _run_backend")

    def _success(self) -> bool:
        """Whether the task is solved (default: score 1)."""
        return self._score() >= 1.0

    def _extra_info(self) -> dict[str, Any]:
        """Family-specific ``info`` entries (e.g. raw metrics)."""
        return {}

    def _close_backends(self) -> None:
        """Release anything not held by a :class:`BackendHandle` (handles close themselves)."""

    def _check_reset_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The family's reset options (names already checked against :attr:`reset_options`), their
        values checked and converted; raise ``ValueError`` naming the option. Default: as given."""
        return options

    def _tool_context(self) -> ToolContext:
        """What tool constraints may read of the episode: the sizes of the images shown so far.
        Families add their own facts by returning a context with ``extra``."""
        return ToolContext(tuple(self._image_sizes))

    def interface_twin_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make the env of the other interface the same MDP as this one (the
        text interface of a numeric env at the same image size, say); ``{}`` when the defaults do."""
        return {}

    # -- backends ------------------------------------------------------------------------------
    def add_backend(
        self,
        name: str,
        factory: Callable[..., Backend],
        *,
        parent: SharedParent | None = None,
        stateful: bool = False,
    ) -> BackendHandle[Any]:
        """Declare a backend (created lazily in the process that uses it; see :class:`BackendHandle`).

        ``parent``: a resource the process's envs share (one browser), of which ``factory(parent)``
        makes this env's backend (a context). ``stateful``: the backend holds episode state; when it
        is rebuilt mid-episode the env restores it before its first use (:meth:`_restore_backend`).
        Always reach a stateful backend through ``handle.get()``, never through a reference kept
        from an earlier call: a rebuilt backend is a new object."""
        if name in self._backends:
            raise ValueError(f"backend {name!r} is declared twice")
        on_acquire = functools.partial(self._backend_acquired, name) if stateful else None
        handle: BackendHandle[Any] = BackendHandle(name, factory, parent=parent, on_acquire=on_acquire)
        self._backends[name] = handle
        if stateful:
            self._stateful.add(name)
        return handle

    def _backend_acquired(self, name: str, backend: Any) -> None:
        """``on_acquire`` of a stateful backend: restore the episode's state onto a rebuilt one."""
        if self._journal is None or self._replay_phase == "task":
            return  # no episode lives on it yet, or the replay under way is about to build it up
        if self._replay_phase == "actions":
            raise BackendError(f"{name} failed again while the episode was being restored onto it", name)
        self._restore_backend(name)

    def _restore_backend(self, name: str) -> None:
        """Bring stateful backend ``name``, rebuilt mid-episode, to the episode's current state.

        Default: replay the episode onto the backends (the task from its seed, then every applied
        action with its backend call), then put the env's own state back exactly as it was (the
        replay changes nothing the agent sees; only the backends are driven). Families may override
        it with something cheaper (reload one page, replay only the actions that touched it). A
        :class:`BackendError` raised here is an env error of the step that needed the backend."""
        if self._journal is None or self.task_seed is None:
            return
        keep = {id(h): h for h in self._backends.values()}
        keep[id(self._display)] = self._display
        saved = copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("_backends", "_display")}, keep)
        journal = list(self._journal)
        try:
            self._replay_phase = "task"
            self.episode_rng = np.random.default_rng([self.task_seed, EPISODE_STREAM])
            self._shown, self._captions = [], []
            self._new_task(np.random.default_rng(self.task_seed))
            self._replay_phase = "actions"
            for action in journal:
                result = self.run_backend(PendingStep(action, None, self._backend_request(action)))
                if isinstance(result, ActionError | BackendError):
                    raise result
                self._apply(action, result)
        except (ActionError, BackendError) as err:
            raise BackendError(f"restoring the episode onto a fresh {name} failed: {err}", name) from err
        finally:
            self.__dict__.update(saved)

    @property
    def backends(self) -> Mapping[str, BackendHandle[Any]]:
        """The env's backends by name (``env.unwrapped.backends[name].inject_fault()`` for tests)."""
        return self._backends

    # -- images of the text interface -----------------------------------------------------------
    def show(
        self, image: np.ndarray | Callable[[], np.ndarray], copy: bool = True, *, caption: str | None = None
    ) -> None:
        """Queue an image for this turn's text observation; ignored in numeric mode, so pass a
        callable that makes the image when making it costs (it is then called in text mode only).
        Pass ``copy=False`` only for a fresh array that nothing else will write to. ``caption`` is
        said beside the image (with its number and size: :mod:`visrl_envs.core.prompt`).

        The image must be uint8 (H, W, 3) of the declared frame (or, for a variable frame, no larger
        than it), and a turn may show at most the declared number: anything else is a bug in the
        family, raised here as :class:`EnvContractError`."""
        if self.action_mode != "text" or self._replay_phase is not None:
            return
        name = type(self).__name__
        if len(self._shown) >= self._max_images:
            raise EnvContractError(
                f"{name} shows image {len(self._shown) + 1} in one turn but declared at most {self._max_images} "
                "(max_images_per_turn, or _set_spaces(max_images=...))"
            )
        if callable(image):
            image = image()
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise EnvContractError(f"{name}.show() takes uint8 (H, W, 3) images, got {array.dtype} {array.shape}")
        height, width = self._frame[:2]
        if self._fixed_frame and array.shape[:2] != (height, width):
            raise EnvContractError(
                f"{name}.show() got a {array.shape[1]}x{array.shape[0]} image; its frame is {width}x{height} "
                "(declare _set_spaces(..., fixed_frame=False) to show images of other sizes)"
            )
        if not (1 <= array.shape[0] <= height and 1 <= array.shape[1] <= width):
            raise EnvContractError(
                f"{name}.show() got a {array.shape[1]}x{array.shape[0]} image, larger than its frame {width}x{height}"
            )
        if caption is not None and not isinstance(caption, str):
            raise EnvContractError(f"{name}.show(): a caption is a string, got {type(caption).__name__}")
        self._shown.append(np.array(array, copy=True) if copy else array)
        self._captions.append(caption)

    @property
    def image_frame(self) -> tuple[int, int, int]:
        """The (H, W, 3) shape of every image of the text interface (a fixed frame), or of the
        largest one (a variable frame)."""
        return self._frame

    @property
    def fixed_frame(self) -> bool:
        """Whether every image of the text interface has the frame's size."""
        return self._fixed_frame

    # -- spaces ------------------------------------------------------------------------------
    def _set_spaces(
        self,
        frame: tuple[int, int, int],
        numeric_observation: spaces.Dict,
        numeric_action: spaces.Space,
        *,
        max_images: int | None = None,
        fixed_frame: bool = True,
    ) -> None:
        """Declare the text image frame (H, W, 3), the numeric spaces, the most images a text turn
        shows (default :attr:`max_images_per_turn`) and whether every image has the frame's size
        (``fixed_frame=False``: images of any size up to the frame, each one's size stated in the
        text). The text spaces are the same for all."""
        cap = self.max_images_per_turn if max_images is None else max_images
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_DECLARED_IMAGES:
            raise EnvContractError(
                f"{type(self).__name__} declares {cap!r} images per turn; a text turn shows 1 to {MAX_DECLARED_IMAGES}"
            )
        self._frame = (int(frame[0]), int(frame[1]), 3)
        self._max_images = cap
        self._fixed_frame = bool(fixed_frame)
        self.numeric_action_space = numeric_action
        if self.action_mode == "text":
            self.observation_space = text_observation_space(self._frame, cap, fixed=self._fixed_frame)
            self.action_space = text_action_space()
        else:
            self.observation_space = numeric_observation
            self.action_space = numeric_action

    # -- sampling (random agents, tests) -----------------------------------------------------------
    def sample_numeric_action(self, rng: np.random.Generator) -> Any:
        """A uniformly random numeric action drawn from ``rng``."""
        return sample_numeric(self.numeric_action_space, rng)

    def sample_text_action(self, rng: np.random.Generator) -> str:
        """A well-formed random text action: a random numeric action written as text."""
        return self._action_text(self._decode_numeric(self.sample_numeric_action(rng)))

    def numeric_to_text(self, action: Any) -> str:
        """The text an agent would write to do what numeric ``action`` does now."""
        return self._action_text(self._decode_numeric(action))

    # -- the prompt surface ---------------------------------------------------------------------
    def prompt_spec(self) -> PromptSpec:
        """Task text, tool schemas, answer format, image frame and turn limit of this episode."""
        if self.task_seed is None:
            raise gym.error.ResetNeeded("call reset() before prompt_spec(): the task text belongs to an episode")
        answer = self.tools.answer
        return PromptSpec(
            task=self._task_text(),
            tools=tuple(self.tools.schemas()),
            answer=answer.to_dict() if answer is not None else None,
            image_frame=(self._frame[1], self._frame[0]),
            max_turns=self.horizon,
            fixed_frame=self._fixed_frame,
            images=self._first_images,
        )

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict]:
        """Start an episode. ``options={"task_seed": k}`` replays task ``k`` of this split (the
        ``info["task_seed"]`` of an earlier episode) and its whole episode given the same actions."""
        super().reset(seed=seed)
        options = dict(options or {})
        task_seed = options.pop("task_seed", None)
        unknown = set(options) - set(self.reset_options)
        if unknown:
            if not self.reset_options:
                raise ValueError(f"unknown reset options {sorted(unknown)}; the only option is 'task_seed'")
            known = "; ".join(f"{k!r}: {v}" for k, v in self.reset_options.items())
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; {type(self).__name__} takes 'task_seed' and {known}"
            )
        episode_options = self._check_reset_options(options)
        low, high = SPLIT_SEED_RANGES[self.split]
        if task_seed is None:
            task_seed = low + int(self.np_random.integers(0, high - low))
        elif isinstance(task_seed, bool) or not isinstance(task_seed, int | np.integer) or not low <= task_seed < high:
            raise ValueError(
                f"task_seed must be an integer in the {self.split} split's range [{low}, {high}), got {task_seed!r}; "
                "use info['task_seed'] of an episode of this split"
            )
        failures: list[BackendError] = []
        while True:
            try:
                obs = self._start_episode(int(task_seed), episode_options)
                break
            except BackendError as err:
                failures.append(err)
                self._discard_backend(err.backend, err.scope)
                if len(failures) > self.reset_retries:
                    names = sorted({f.backend or "a backend" for f in failures})
                    raise BackendUnavailable(
                        f"{', '.join(names)} failed {len(failures)} times while starting task {task_seed} of "
                        f"{type(self).__name__}; last error: {err}"
                    ) from err
        info = self._info({}, None, None)
        if self.action_mode == "text":
            info["prompt_spec"] = self._spec
        if self.render_mode == "human":
            self.render()
        return obs, info

    def _start_episode(self, task_seed: int, options: dict[str, Any]) -> dict[str, Any]:
        self._needs_reset = True
        self.task_seed = task_seed
        self.episode_options = options
        self.turn = 0
        self._shown, self._captions, self._image_sizes = [], [], []
        self._journal = None  # no episode on the backends until the task is set up
        self.episode_rng = np.random.default_rng([task_seed, EPISODE_STREAM])
        self._new_task(np.random.default_rng(task_seed))
        if self._stateful:
            self._journal = []
        if self.action_mode == "text":
            self._first_images = self._image_notes()
            self._spec = self.prompt_spec()
            obs = self._text_observation(build_prompt(self._spec), announced=True)
        else:
            obs = self._numeric_obs()
        self._needs_reset = False
        return obs

    def _discard_backend(self, name: str, scope: FailureScope = "backend") -> None:
        handles = [self._backends[name]] if name in self._backends else list(self._backends.values())
        for handle in handles:
            handle.discard(scope)

    def step(self, action: Any) -> StepResult:
        pending = self.prepare_step(action)
        return self.finish_step(pending, self.run_backend(pending))

    def prepare_step(self, action: Any) -> PendingStep:
        """Stage 1: parse and validate ``action``; what the agent got wrong is kept, not raised."""
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step(), and again after an episode ends")
        try:
            if self.action_mode == "text":
                if isinstance(action, str) and len(action) > MAX_ACTION_CHARS:
                    raise ActionError(f"the action has {len(action)} characters; the limit is {MAX_ACTION_CHARS}")
                typed = self._parse_text(action)
            else:
                typed = self._decode_numeric(action)
            return PendingStep(typed, None, self._backend_request(typed))
        except ActionError as err:
            return PendingStep(None, err, None)

    def run_backend(self, pending: PendingStep) -> Any:
        """Stage 2 for one env: the backend's result, or the exception it raised (as a value)."""
        if pending.error is not None or pending.request is None:
            return None
        try:
            return self._run_backend(pending.request)
        except (ActionError, BackendError) as err:
            return err

    @classmethod
    def run_backend_batch(cls, envs: Sequence[VisualEnv], pendings: Sequence[PendingStep]) -> list[Any]:
        """Stage 2 for several envs of this class in one process (a vector env's step). The default
        serves them one by one; families with batched backends override it."""
        return [env.run_backend(p) for env, p in zip(envs, pendings, strict=True)]

    def finish_step(self, pending: PendingStep, backend_result: Any) -> StepResult:
        """Stage 3: apply the backend's result, observe, score, assemble ``info``."""
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step(), and again after an episode ends")
        self.turn += 1
        self._shown = []
        action_error: str | None = None
        env_error: str | None = None
        try:
            if pending.error is not None:
                raise pending.error
            if isinstance(backend_result, ActionError | BackendError):
                raise backend_result
            outcome = self._apply(pending.action, backend_result)
            if self._journal is not None:
                self._journal.append(pending.action)
        except ActionError as err:
            action_error = str(err) or type(err).__name__
            self._shown, self._captions = [], []
            outcome = Outcome({"format": self.format_penalty}, feedback=f"Error: {action_error}")
        except BackendError as err:
            env_error = self._env_error_text(err)
            outcome = Outcome({})
        terminated = outcome.terminated and env_error is None
        truncated = env_error is not None or (not terminated and self.turn >= self.horizon)
        self._needs_reset = terminated or truncated
        obs: dict[str, Any] | None = None
        info: dict[str, Any] | None = None
        if env_error is None:
            try:
                obs = self._observe(outcome.feedback)
                info = self._info(outcome.reward_terms, action_error, None)
            except BackendError as err:
                env_error = self._env_error_text(err)
                truncated, terminated, self._needs_reset = True, False, True
        if env_error is not None or obs is None or info is None:
            obs = self._env_error_observation(env_error or "")
            info = self._info({}, action_error, env_error)
            reward = 0.0
        else:
            reward = format_gate(action_error is None, sum(outcome.reward_terms.values()), self.format_penalty)
        if self.render_mode == "human" and env_error is None:
            self.render()
        return obs, reward, terminated, truncated, info

    @staticmethod
    def _env_error_text(err: BackendError) -> str:
        text = str(err) or type(err).__name__
        return f"{err.backend}: {text}" if err.backend and not text.startswith(err.backend) else text

    def _observe(self, feedback: str) -> dict[str, Any]:
        if self.action_mode == "numeric":
            return self._numeric_obs()
        if not self._needs_reset:
            feedback = f"{feedback}\nTurn {self.turn + 1} of {self.horizon}.".strip()
        return self._text_observation(feedback)

    def _image_notes(self) -> tuple[ImageNote, ...]:
        """Number the images shown this turn (over the episode) and note their sizes and captions."""
        first = len(self._image_sizes) + 1
        notes = tuple(
            ImageNote(first + k, int(image.shape[1]), int(image.shape[0]), caption)
            for k, (image, caption) in enumerate(zip(self._shown, self._captions, strict=True))
        )
        self._image_sizes += [(note.width, note.height) for note in notes]
        return notes

    def _text_observation(self, text: str, announced: bool = False) -> dict[str, Any]:
        """The images shown this turn and ``text``: announced with a caption line and a marker each
        when the frame is variable or an image has a caption (``announced``: ``text`` already does)."""
        if not announced:
            text = escape_markers(text)
            notes = self._image_notes()
            if not self._fixed_frame or any(note.caption for note in notes):
                text = announce_images(notes) + text
        images, self._shown, self._captions = tuple(self._shown), [], []
        return {"images": images, "text": to_charset(text)}

    def _numeric_obs(self) -> dict[str, Any]:
        obs = self._numeric_observation()
        self._last_numeric_obs = obs
        return obs

    def _env_error_observation(self, message: str) -> dict[str, Any]:
        """After an infrastructure failure: no new images (text), or the last good observation."""
        self._shown, self._captions = [], []
        if self.action_mode == "text":
            return {"images": (), "text": to_charset(f"Environment error (not your fault): {message}")}
        if self._last_numeric_obs is not None:
            return {k: np.array(v, copy=True) for k, v in self._last_numeric_obs.items()}
        space = self.observation_space
        assert isinstance(space, spaces.Dict)
        return {k: np.zeros(s.shape, dtype=s.dtype) for k, s in space.spaces.items()}

    def _info(self, terms: dict[str, float], action_error: str | None, env_error: str | None) -> dict[str, Any]:
        healthy = env_error is None
        info = {
            "success": bool(self._success()) if healthy else False,
            "score": float(self._score()) if healthy else 0.0,
            "reward_terms": {k: float(v) for k, v in terms.items()},
            "action_error": action_error,
            "env_error": env_error,
            "task_seed": self.task_seed,
            "turn": self.turn,
        }
        if healthy:
            info.update(self._extra_info())
        return info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to make()")
            return None
        if self.task_seed is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        frame = self._render_frame()
        if self.render_mode == "rgb_array":
            return frame
        if self._display is None:
            from visrl_envs.core.display import HumanDisplay

            self._display = HumanDisplay(title=f"visrl {type(self).__name__}", fps=self.metadata["render_fps"])
        self._display.show(frame)
        return None

    def close(self) -> None:
        if self._display is not None:
            self._display.close()
            self._display = None
        for handle in self._backends.values():
            handle.close()
        self._close_backends()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_display"] = None
        return state


def image_sequence(space: spaces.Space) -> ImageSequence | None:
    """The :class:`ImageSequence` of a text observation space, if it has one."""
    if isinstance(space, spaces.Dict) and isinstance(space.spaces.get("images"), ImageSequence):
        return space.spaces["images"]  # type: ignore[return-value]
    return None
