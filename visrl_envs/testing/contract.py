"""The env contract (DESIGN.md section 3) as checks any env can be run through.

Each check is a function ``(subject, mode)`` raising :class:`ContractError` with a message naming
what broke; :data:`CHECKS` lists them all. :func:`check_env_contract` runs them on one env (a
registered id or a factory) and returns a :class:`ContractReport`; the repository's own
conformance tests parametrize the same checks over the registry, so a user's env passes exactly
what ours do.

Interfaces. A check runs on ``"text"``, ``"numeric"``, on ``"both"`` (the two interfaces are one
MDP: it needs both) or on ``"any"`` (it does not depend on the interface: it runs on the first one
the env declares). An env that declares only the text interface is never tested as a numeric one.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from visrl_envs.core.backend import FAULT_KINDS
from visrl_envs.core.base import EPISODE_STREAM, SPLIT_SEED_RANGES, VisualEnv
from visrl_envs.core.errors import BackendError, BackendUnavailable
from visrl_envs.core.prompt import build_prompt, example_call
from visrl_envs.core.spaces import ImageSequence
from visrl_envs.core.tools import Answer
from visrl_envs.testing.corpus import malformed_numeric_actions, malformed_text_actions

INTERFACES = ("text", "numeric")
INFO_KEYS = frozenset({"success", "score", "reward_terms", "action_error", "env_error", "task_seed", "turn"})


class ContractError(AssertionError):
    """An env broke the contract (the message says what and where)."""


class ContractSkip(Exception):
    """A check does not apply to this env (e.g. it has no backends); the reason is the message."""


def expect(condition: Any, message: str) -> None:
    """Raise :class:`ContractError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ContractError(message)


# -- the env under test ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvUnderTest:
    """How the checks build the env: ``make_env(action_mode=..., **kwargs, **extra)``.

    Build one with :meth:`of`: from a registered id (``gym.make`` through its spec, so it also
    works in a fresh process) or from any factory that takes an env's keyword arguments (a class,
    a ``functools.partial``). ``env_id`` enables the checks of ``gym.make_vec``'s own modes."""

    make_env: Callable[..., gym.Env]
    interfaces: tuple[str, ...] = INTERFACES
    env_id: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    @classmethod
    def of(
        cls,
        env: str | Callable[..., gym.Env],
        *,
        kwargs: Mapping[str, Any] | None = None,
        interfaces: Sequence[str] | None = None,
    ) -> EnvUnderTest:
        if isinstance(env, str):
            spec = gym.spec(env)
            declared: tuple[str, ...] = INTERFACES
            with contextlib.suppress(KeyError):
                from visrl_envs.registry import entry

                declared = tuple(entry(env).interfaces)
            return cls(
                functools.partial(gym.make, spec),
                tuple(interfaces or declared),
                env,
                dict(kwargs or {}),
                env,
            )
        name = getattr(env, "__qualname__", None) or getattr(getattr(env, "func", None), "__qualname__", repr(env))
        return cls(env, tuple(interfaces or INTERFACES), None, dict(kwargs or {}), str(name))

    def __post_init__(self) -> None:
        unknown = set(self.interfaces) - set(INTERFACES)
        if not self.interfaces or unknown:
            raise ValueError(f"interfaces are a non-empty subset of {INTERFACES}, got {self.interfaces}")

    # The checks reach into spaces, wrappers and vector envs whose gymnasium types are loose: Any here.
    def make(self, mode: str, **extra: Any) -> Any:
        env = self.make_env(action_mode=mode, **{**self.kwargs, **extra})
        if not isinstance(_base(env), VisualEnv):
            raise ContractError(f"{self.name}: the env under test must be a visrl VisualEnv, got {type(_base(env))}")
        return env

    def make_vec(self, mode: str, num_envs: int, vectorization_mode: str | None) -> Any:
        """A vector env: ``gym.make_vec``'s own mode for an id, Gymnasium's vector envs for a factory."""
        if self.env_id is not None:
            return gym.make_vec(
                self.env_id, num_envs=num_envs, vectorization_mode=vectorization_mode, action_mode=mode, **self.kwargs
            )
        fns = [functools.partial(self.make, mode)] * num_envs
        if vectorization_mode == "async":
            return gym.vector.AsyncVectorEnv(fns)
        return gym.vector.SyncVectorEnv(fns)


# -- trajectories and digests ------------------------------------------------------------------------
def digest(value: Any, h: Any) -> None:
    """Feed a structure of observations, rewards and infos to hash ``h`` (byte-exact for arrays)."""
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(str(key).encode())
            digest(value[key], h)
    elif isinstance(value, np.ndarray) and value.dtype == object:  # tobytes() would hash pointers
        h.update(str(value.shape).encode())
        for item in value.ravel():
            digest(item, h)
    elif isinstance(value, np.ndarray):
        h.update(str(value.dtype).encode() + str(value.shape).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, list | tuple):
        for v in value:
            digest(v, h)
    elif isinstance(value, float):
        h.update(np.float64(value).tobytes())
    else:
        h.update(repr(value).encode())


def digest_of(items: Any) -> str:
    h = hashlib.sha256()
    digest(items, h)
    return h.hexdigest()


def arrays(obs: dict[str, Any]) -> list[np.ndarray]:
    """Every array of an observation: numeric values, and the images of a text observation."""
    out: list[np.ndarray] = []
    for value in obs.values():
        if isinstance(value, np.ndarray):
            out.append(value)
        elif isinstance(value, tuple):
            out += [v for v in value if isinstance(v, np.ndarray)]
    return out


def _base(env: gym.Env) -> VisualEnv:
    """The visrl env inside ``env``'s wrappers (the checks call its methods)."""
    base = env.unwrapped
    if not isinstance(base, VisualEnv):
        raise ContractError(f"the env under test must be a visrl VisualEnv, got {type(base).__name__}")
    return base


def random_action(env: gym.Env, rng: np.random.Generator) -> Any:
    """A seeded, well-formed random action of the env's interface."""
    base = _base(env)
    return base.sample_text_action(rng) if base.action_mode == "text" else base.sample_numeric_action(rng)


def oracle_action(env: gym.Env) -> Any:
    base = _base(env)
    return base.oracle_text() if base.action_mode == "text" else base.oracle_numeric()


def run_trajectory(
    subject: EnvUnderTest,
    mode: str,
    seed: int,
    steps: int,
    *,
    before_step: Callable[[gym.Env, int], None] | None = None,
    **extra: Any,
) -> list[Any]:
    """``steps`` steps of seeded random well-formed actions, resetting when an episode ends;
    ``before_step(env, k)`` runs before step ``k`` (to inject faults, discard backends...)."""
    env = subject.make(mode, **extra)
    rng = np.random.default_rng(seed + 1000)
    out: list[Any] = []
    try:
        obs, info = env.reset(seed=seed)
        out.append((obs, info))
        for k in range(steps):
            if before_step is not None:
                before_step(env, k)
            obs, reward, terminated, truncated, info = env.step(random_action(env, rng))
            out.append((obs, reward, terminated, truncated, info))
            if terminated or truncated:
                obs, info = env.reset()
                out.append((obs, info))
    finally:
        env.close()
    return out


def trajectory_digest(subject: EnvUnderTest, mode: str, seed: int, steps: int) -> str:
    return digest_of(run_trajectory(subject, mode, seed, steps))


def _child_digest() -> None:
    """Entry point of the other-process check: read (subject, mode, seed, steps), print the digest."""
    import cloudpickle

    import visrl_envs  # noqa: F401 - registers the ids

    subject, mode, seed, steps = cloudpickle.loads(sys.stdin.buffer.read())
    print(trajectory_digest(subject, mode, seed, steps))


# -- checks -------------------------------------------------------------------------------------------
CheckFunction = Callable[[EnvUnderTest, str], None]


@dataclass(frozen=True)
class Check:
    """One contract check: its name, what it checks, and on which interface(s) it runs."""

    name: str
    function: CheckFunction
    modes: tuple[str, ...]
    doc: str
    needs: tuple[str, ...] = ()

    def modes_for(self, interfaces: Sequence[str]) -> list[str]:
        """The modes this check runs in for an env declaring ``interfaces``."""
        if self.modes == ("any",):
            return [interfaces[0]]
        if self.modes == ("both",):
            return ["both"] if set(INTERFACES) <= set(interfaces) else []
        return [m for m in self.modes if m in interfaces]

    def run(self, subject: EnvUnderTest, mode: str) -> None:
        for module in self.needs:
            try:
                __import__(module)
            except ImportError as err:
                raise ContractSkip(f"needs {module} ({err})") from None
        self.function(subject, mode)


CHECKS: list[Check] = []


def check(*modes: str, needs: tuple[str, ...] = ()) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check; its name is the function's without ``check_``, its doc the docstring's first line."""

    def register(function: CheckFunction) -> CheckFunction:
        doc = (function.__doc__ or "").strip().split("\n")[0]
        CHECKS.append(Check(function.__name__.removeprefix("check_"), function, modes, doc, needs))
        return function

    return register


def _strict(call: Callable[[], Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call()


@check("text", "numeric")
def check_gymnasium_checker(subject: EnvUnderTest, mode: str) -> None:
    """Gymnasium's check_env passes with warnings as errors (render check included)."""
    from gymnasium.envs.registration import EnvSpec
    from gymnasium.utils.env_checker import check_env

    env = subject.make(mode, render_mode="rgb_array")
    if _base(env).spec is None:  # a factory's env: give the checker a spec to remake it in every render mode
        name = "".join(ch for ch in type(_base(env)).__name__ if ch.isalnum()) or "Env"
        entry = functools.partial(subject.make_env, action_mode=mode, **subject.kwargs)
        _base(env).spec = EnvSpec(f"visrl-contract/{name}-v0", entry_point=entry)
    try:
        _strict(lambda: check_env(_base(env), skip_render_check=False))
    finally:
        env.close()


@check("numeric", needs=("stable_baselines3",))
def check_sb3_checker(subject: EnvUnderTest, mode: str) -> None:
    """SB3's check_env passes on the numeric interface with warnings as errors."""
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = subject.make(mode)
    try:
        _strict(lambda: sb3_check_env(_base(env), warn=True))
    finally:
        env.close()


@check("numeric")
def check_numeric_images(subject: EnvUnderTest, mode: str) -> None:
    """Numeric images are uint8 (H, W, 3) with both sides >= 64 px (what SB3's CNNs take)."""
    env = subject.make(mode)
    try:
        for key, space in env.observation_space.spaces.items():
            if len(space.shape) == 3:
                expect(
                    space.dtype == np.uint8 and space.shape[2] == 3 and min(space.shape[:2]) >= 64,
                    f"numeric image {key!r} is {space}",
                )
    finally:
        env.close()


@check("text")
def check_text_observation(subject: EnvUnderTest, mode: str) -> None:
    """Text observations are {"images": ImageSequence, "text"}; the first shows the task, an error nothing."""
    env = subject.make(mode)
    try:
        space = env.observation_space["images"]
        base = _base(env)
        expect(isinstance(space, ImageSequence), f"observation 'images' is {space!r}, not an ImageSequence")
        expect(space.frame == base.image_frame, f"frame {space.frame} != image_frame {base.image_frame}")
        expect(space.fixed == base.fixed_frame, "the space's fixed/variable frame differs from the env's")
        obs, _info = env.reset(seed=0)
        expect(isinstance(obs["images"], tuple) and len(obs["images"]) >= 1, "the first observation shows the task")
        expect(all(space.fits(im) for im in obs["images"]), "a first image does not fit the declared frame")
        obs = env.step("not an action")[0]
        expect(obs["images"] == (), "a malformed action shows nothing new")
    finally:
        env.close()


def _check_vector(subject: EnvUnderTest, mode: str, vectorization_mode: str | None) -> None:
    if vectorization_mode is None and subject.env_id is None:
        raise ContractSkip("gym.make_vec's default mode needs a registered id")
    envs = subject.make_vec(mode, 2, vectorization_mode)
    try:
        obs, info = envs.reset(seed=3)
        expect(envs.observation_space.contains(obs), "the vector env's first observation is outside its space")
        for _ in range(2):  # valid actions run inside the (async) workers, then random ones
            actions = envs.call("oracle_text") if mode == "text" else envs.call("oracle_numeric")
            obs, reward, _terminated, _truncated, info = envs.step(
                tuple(actions) if mode == "text" else np.stack(actions)
            )
            expect(reward.shape == (2,) and reward.dtype == np.float64, f"rewards {reward!r}")
            expect(
                not any(info["action_error"][info["_action_error"]]), f"oracle actions failed: {info['action_error']}"
            )
            expect(not any(info["env_error"][info["_env_error"]]), f"env errors: {info['env_error']}")
            expect(envs.observation_space.contains(obs), "a vector observation is outside its space")
        for _ in range(3):
            obs, *_ = envs.step(envs.action_space.sample())
            expect(envs.observation_space.contains(obs), "a vector observation is outside its space")
    finally:
        envs.close()


@check("text", "numeric")
def check_vector_sync(subject: EnvUnderTest, mode: str) -> None:
    """A synchronous vector env of two runs oracle and random actions."""
    _check_vector(subject, mode, "sync")


@check("text", "numeric")
def check_vector_async(subject: EnvUnderTest, mode: str) -> None:
    """An AsyncVectorEnv of two (shared memory, backends started in the workers) runs them too."""
    _check_vector(subject, mode, "async")


@check("text", "numeric")
def check_vector_default(subject: EnvUnderTest, mode: str) -> None:
    """gym.make_vec's default (the registry's batched vector env, where there is one) runs them too."""
    _check_vector(subject, mode, None)


@check("text", "numeric")
def check_async_equals_sync(subject: EnvUnderTest, mode: str) -> None:
    """Async and sync vector envs give byte-identical results (shared memory carries every observation)."""

    def run(vectorization_mode: str) -> str:
        envs = subject.make_vec(mode, 2, vectorization_mode)
        try:
            envs.action_space.seed(0)
            out: list[Any] = [envs.reset(seed=[1, 2])]
            for step in range(5):
                if step % 2:
                    actions: Any = tuple(envs.call("oracle_text" if mode == "text" else "oracle_numeric"))
                    actions = actions if mode == "text" else np.stack(actions)
                elif mode == "text":
                    actions = ("not an action", envs.call("null_text")[1])
                else:
                    actions = envs.action_space.sample()
                out.append(envs.step(actions))
        finally:
            envs.close()
        return digest_of(out)

    expect(run("async") == run("sync"), "async and sync vector envs differ")


@check("text", "numeric")
def check_determinism(subject: EnvUnderTest, mode: str) -> None:
    """The same seed and actions give byte-identical trajectories (3 seeds x 50 steps)."""
    for seed in (0, 1, 2):
        a, b = trajectory_digest(subject, mode, seed, 50), trajectory_digest(subject, mode, seed, 50)
        expect(a == b, f"seed {seed}: two runs differ")


@check("text", "numeric")
def check_determinism_across_processes(subject: EnvUnderTest, mode: str) -> None:
    """A fresh process with another hash seed gives the same trajectory."""
    import cloudpickle

    here = trajectory_digest(subject, mode, 7, 20)
    try:
        payload = cloudpickle.dumps((subject, mode, 7, 20))
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise ContractSkip(f"the factory does not pickle ({err})") from None
    python_path = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    env = {"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "SDL_VIDEODRIVER": "dummy", "PYTHONPATH": python_path}
    code = "from visrl_envs.testing.contract import _child_digest; _child_digest()"
    out = subprocess.run(
        [sys.executable, "-c", code], input=payload, capture_output=True, cwd=os.getcwd(), env=env, timeout=600
    )
    expect(out.returncode == 0, f"the other process failed: {out.stderr.decode(errors='replace')[-2000:]}")
    expect(out.stdout.decode().strip() == here, "another process gives another trajectory")


@check("text", "numeric")
def check_seeds_differ(subject: EnvUnderTest, mode: str) -> None:
    """Different reset seeds give different first observations (at least 3 of 4)."""
    env = subject.make(mode)
    try:
        first = [env.reset(seed=s)[0] for s in range(4)]
    finally:
        env.close()
    images = [np.concatenate([a.ravel() for a in arrays(o)]) for o in first]
    expect(len({im.tobytes() for im in images}) >= 3, "four seeds gave fewer than three distinct first images")


@check("any")
def check_splits_and_reset_options(subject: EnvUnderTest, mode: str) -> None:
    """Train and test task seeds are disjoint; bad task seeds and unknown reset options are refused."""
    train, test = subject.make(mode, split="train"), subject.make(mode, split="test")
    try:
        seeds_train = {train.reset(seed=s)[1]["task_seed"] for s in range(20)}
        seeds_test = {test.reset(seed=s)[1]["task_seed"] for s in range(20)}
        (low, high), (test_low, test_high) = SPLIT_SEED_RANGES["train"], SPLIT_SEED_RANGES["test"]
        expect(all(low <= s < high for s in seeds_train), "train task seeds outside the train range")
        expect(all(test_low <= s < test_high for s in seeds_test), "test task seeds outside the test range")
        for bad in (test_low + 5, -1, 1.5, "3", True):
            try:
                train.reset(options={"task_seed": bad})
            except ValueError as err:
                expect("task_seed" in str(err), f"refusing task_seed={bad!r} does not name it: {err}")
            else:
                raise ContractError(f"task_seed={bad!r} was accepted by the train split")
        try:
            train.reset(options={"no_such_option_here": 3})
        except ValueError as err:
            expect("unknown reset options" in str(err) and "task_seed" in str(err), f"unclear refusal: {err}")
        else:
            raise ContractError("an unknown reset option was accepted")
    finally:
        train.close()
        test.close()


@check("text", "numeric")
def check_task_seed_replay(subject: EnvUnderTest, mode: str) -> None:
    """reset(options={"task_seed": k}) after any history replays the whole episode given the same actions."""
    env = subject.make(mode)
    try:
        rng = np.random.default_rng(0)
        obs, info = env.reset(seed=5)
        base = _base(env)
        actions: list[Any] = []
        first: list[tuple[Any, ...]] = [(obs, info)]
        for _ in range(4):
            action = random_action(env, rng)
            actions.append(action)
            first.append(env.step(action))
            if first[-1][2] or first[-1][3]:
                break
        env.reset(seed=99)
        env.step(actions[0])
        second: list[tuple[Any, ...]] = [env.reset(options={"task_seed": info["task_seed"]})]
        fresh = np.random.default_rng([info["task_seed"], EPISODE_STREAM])
        expect(copy.deepcopy(base.episode_rng).random() == fresh.random(), "in-episode randomness does not restart")
        second += [env.step(a) for a in actions]
        expect(digest_of(first) == digest_of(second), "replaying the task seed gave another episode")
    finally:
        env.close()


@check("text", "numeric")
def check_pickling(subject: EnvUnderTest, mode: str) -> None:
    """Envs pickle before reset and mid-episode; the clone goes on exactly; backends never travel."""
    env = subject.make(mode)
    try:
        fresh = pickle.loads(pickle.dumps(subject.make(mode)))  # never reset before pickling
        reference = subject.make(mode)
        expect(digest_of([fresh.reset(seed=11)]) == digest_of([reference.reset(seed=11)]), "an unpickled env differs")
        fresh.close()
        reference.close()
        env.reset(seed=11)
        rng = np.random.default_rng(0)
        *_, terminated, truncated, _ = env.step(random_action(env, rng))  # mid-episode: state to restore
        if terminated or truncated:  # a one-turn episode: pickle at the start of the next one
            env.reset()
        clone = pickle.loads(pickle.dumps(env))
        expect(all(not h.active for h in _base(clone).backends.values()), "a backend travelled with the env")
        try:
            for _ in range(3):
                action = random_action(env, rng)
                a, b = env.step(action), clone.step(action)
                expect(digest_of([a]) == digest_of([b]), "the unpickled env stepped differently")
                if a[2] or a[3]:
                    break
            expect(digest_of([env.reset(seed=12)]) == digest_of([clone.reset(seed=12)]), "the clone resets differently")
        finally:
            clone.close()
    finally:
        env.close()


@check("text", "numeric")
def check_backend_rebuild_is_invisible(subject: EnvUnderTest, mode: str) -> None:
    """A backend discarded mid-episode is rebuilt (and restored, when stateful) without a trace."""
    env = subject.make(mode)
    names = list(_base(env).backends)
    env.close()
    if not names:
        raise ContractSkip("the env has no backends")
    reference = digest_of(run_trajectory(subject, mode, 3, 8))
    for name in names:

        def discard(env: gym.Env, k: int, name: str = name) -> None:
            if k in (2, 5):
                _base(env).backends[name].discard()

        expect(
            digest_of(run_trajectory(subject, mode, 3, 8, before_step=discard)) == reference,
            f"discarding {name!r} mid-episode changed the trajectory",
        )


@check("text")
def check_truncation_at_horizon(subject: EnvUnderTest, mode: str) -> None:
    """Malformed actions run the episode to its horizon, where it truncates (within the step cap)."""
    env = subject.make(mode)
    try:
        env.reset(seed=0)
        horizon = _base(env).horizon
        if env.spec is not None and env.spec.max_episode_steps is not None:
            expect(horizon <= env.spec.max_episode_steps, f"horizon {horizon} > max_episode_steps")
        for step in range(1, horizon + 1):
            _, _, terminated, truncated, info = env.step("not an action")
            expect(not terminated, f"a malformed action terminated the episode at step {step}")
            expect(truncated == (step == horizon), f"truncated={truncated} at step {step} of {horizon}")
            expect(info["action_error"], "a malformed action gave no action_error")
    finally:
        env.close()


@check("numeric")
def check_numeric_episode_ends(subject: EnvUnderTest, mode: str) -> None:
    """Random numeric episodes terminate or truncate exactly at the horizon."""
    env = subject.make(mode)
    try:
        rng = np.random.default_rng(0)
        for seed in range(3):
            env.reset(seed=seed)
            horizon = _base(env).horizon
            for step in range(1, horizon + 1):
                _, _, terminated, truncated, _ = env.step(_base(env).sample_numeric_action(rng))
                if terminated:
                    break
                expect(truncated == (step == horizon), f"truncated={truncated} at step {step} of {horizon}")
            else:
                expect(truncated, "the episode did not end at its horizon")
    finally:
        env.close()


@check("text", "numeric")
def check_no_shared_memory(subject: EnvUnderTest, mode: str) -> None:
    """No two observations share memory (an agent may keep and modify them)."""
    env = subject.make(mode)
    try:
        rng = np.random.default_rng(0)
        previous, _ = env.reset(seed=0)
        for _ in range(5):
            obs, _, terminated, truncated, _ = env.step(random_action(env, rng))
            for a in arrays(previous):
                for b in arrays(obs):
                    expect(not np.shares_memory(a, b), "two observations share memory")
            previous = obs
            if terminated or truncated:
                previous, _ = env.reset()
    finally:
        env.close()


@check("text", "numeric")
def check_info(subject: EnvUnderTest, mode: str) -> None:
    """Every info holds success, score in [0, 1], reward_terms summing to the reward, and the errors."""
    for t in run_trajectory(subject, mode, 0, 12):
        info = t[-1]
        expect(set(info) >= INFO_KEYS, f"info lacks {sorted(INFO_KEYS - set(info))}")
        expect(isinstance(info["success"], bool), "info['success'] is not a bool")
        expect(0.0 <= info["score"] <= 1.0, f"score {info['score']} outside [0, 1]")
        if len(t) == 5:
            expect(
                np.isclose(sum(info["reward_terms"].values()), t[1]),
                f"reward {t[1]} != sum of reward_terms {info['reward_terms']}",
            )


@check("any")
def check_render_rgb_array(subject: EnvUnderTest, mode: str) -> None:
    """render() gives uint8 (H, W, 3) frames of one shape, >= 64 px a side."""
    env = subject.make(mode, render_mode="rgb_array")
    try:
        env.reset(seed=0)
        frame = env.render()
        expect(
            frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and min(frame.shape[:2]) >= 64,
            f"render() gave {frame.dtype} {frame.shape}",
        )
        env.step(oracle_action(env))
        expect(env.render().shape == frame.shape, "render() changed shape after a step")
    finally:
        env.close()


@check("any")
def check_render_human(subject: EnvUnderTest, mode: str) -> None:
    """render_mode="human" opens a pygame window showing exactly the rgb frame, closed by close()."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import pygame

    env = subject.make(mode, render_mode="human")
    try:
        env.reset(seed=0)  # human mode renders on reset and step
        display = _base(env)._display
        expect(display is not None and pygame.display.get_surface() is not None, "no window after reset")
        frame = _base(env)._render_frame()
        shown = np.transpose(pygame.surfarray.array3d(pygame.display.get_surface()), (1, 0, 2))
        expect(shown.shape == frame.shape and np.array_equal(shown, frame), "the window does not show the frame")
        env.step("garbage" if mode == "text" else _base(env).sample_numeric_action(np.random.default_rng(0)))
    finally:
        env.close()
    expect(_base(env)._display is None, "close() left the window open")


@check("text", "numeric")
def check_close(subject: EnvUnderTest, mode: str) -> None:
    """close() releases every backend, is idempotent, and a closed env restarts lazily."""
    env = subject.make(mode)
    env.reset(seed=0)
    env.step(oracle_action(env))
    base = _base(env)
    env.close()
    expect(all(not h.active for h in base.backends.values()), "close() left a backend running")
    env.close()
    obs, _ = env.reset(seed=0)
    expect(env.observation_space.contains(obs), "a closed env did not restart")
    env.close()
    expect(all(not h.active for h in base.backends.values()), "close() left a backend running")


@check("text", "numeric")
def check_reset_needed(subject: EnvUnderTest, mode: str) -> None:
    """The env itself raises ResetNeeded before reset, after an episode ends, and for prompt_spec()."""
    import gymnasium.error

    env = subject.make(mode)
    base = _base(env)  # the env itself, not OrderEnforcing
    try:

        def refused(call: Callable[[], Any], what: str) -> None:
            try:
                call()
            except gymnasium.error.ResetNeeded:
                return
            raise ContractError(f"{what} did not raise ResetNeeded")

        step_arg = "x" if mode == "text" else base.sample_numeric_action(np.random.default_rng(0))
        refused(lambda: base.step(step_arg), "step() before reset()")
        refused(base.prompt_spec, "prompt_spec() before reset()")
        base.reset(seed=0)
        for _ in range(10_000):
            *_, terminated, truncated, _ = base.step(base.null_text() if mode == "text" else oracle_action(env))
            if terminated or truncated:
                break
        refused(lambda: base.step(step_arg), "step() after the episode ended")
    finally:
        env.close()


@check("text")
def check_malformed_text(subject: EnvUnderTest, mode: str) -> None:
    """200 hostile texts: what the declared grammar refuses is an action_error with the format penalty;
    nothing is an env error, an exception, or an observation outside the space."""
    env = subject.make(mode)
    try:
        env.reset(seed=0)
        base = _base(env)
        for hostile in malformed_text_actions(base.tools, 200):
            obs, reward, terminated, truncated, info = env.step(hostile.text)
            shown = repr(hostile.text[:80])
            if hostile.must_fail:
                expect(info["action_error"], f"{shown} was accepted")
            expect(info["env_error"] is None, f"{shown} gave an env error: {info['env_error']}")
            if info["action_error"]:
                expect(reward == base.format_penalty, f"{shown}: reward {reward} is not the format penalty")
            expect(np.isfinite(reward), f"{shown}: reward {reward}")
            expect(env.observation_space.contains(obs), f"{shown}: the observation is outside the space")
            if terminated or truncated:
                env.reset()
    finally:
        env.close()


@check("numeric")
def check_malformed_numeric(subject: EnvUnderTest, mode: str) -> None:
    """Values outside the numeric action space (derived from it) are action errors with the format penalty."""
    env = subject.make(mode)
    try:
        env.reset(seed=0)
        base = _base(env)
        for what, action in malformed_numeric_actions(base.numeric_action_space):
            obs, reward, terminated, truncated, info = env.step(action)
            expect(info["action_error"] and info["env_error"] is None, f"{what} ({action!r:.60}) was accepted")
            expect(reward == base.format_penalty, f"{what}: reward {reward} is not the format penalty")
            expect(env.observation_space.contains(obs), f"{what}: the observation is outside the space")
            if terminated or truncated:
                env.reset()
    finally:
        env.close()


@check("text")
def check_parsing_is_linear(subject: EnvUnderTest, mode: str) -> None:
    """Parsing 4x as much hostile text costs < 8x the time (no regex rescans: quadratic is 16x)."""
    env = subject.make(mode)
    try:
        env.reset(seed=0)
        base = _base(env)
        for pattern in ("<tool_call>", "<answer>", "<think>", "<svg", "```", "<think></think><answer>", "{[", "</svg>"):
            texts = {n: pattern * (n // len(pattern)) for n in (200_000, 800_000)}
            best = dict.fromkeys(texts, float("inf"))
            for _ in range(7):  # interleaved, best of 7: load on a shared machine hits both sizes alike
                for n, text in texts.items():
                    start = time.perf_counter()
                    pending = base.prepare_step(text)
                    best[n] = min(best[n], time.perf_counter() - start)
                    expect(pending.error is not None, f"{pattern!r} x {n // len(pattern)} was accepted")
            small, large = best[200_000], best[800_000]
            expect(large < 8 * small + 0.02, f"{pattern!r}: 4x the text took {large / max(small, 1e-9):.1f}x the time")
    finally:
        env.close()


@check("text")
def check_oversized_action(subject: EnvUnderTest, mode: str) -> None:
    """An action over the length limit is refused before parsing, with the limit in the message."""
    env = subject.make(mode)
    try:
        env.reset(seed=0)
        info = env.step("<answer>" + "1" * (2 << 20) + "</answer>")[-1]
        expect(info["action_error"] and "the limit is" in info["action_error"], f"got {info['action_error']!r}")
    finally:
        env.close()


@check("text")
def check_prompt_spec(subject: EnvUnderTest, mode: str) -> None:
    """prompt_spec() is the same surface for every env; the first text is build_prompt(spec)."""
    env = subject.make(mode)
    try:
        obs, info = env.reset(seed=0)
        base = _base(env)
        spec = base.prompt_spec()
        expect(info["prompt_spec"] == spec, "info['prompt_spec'] differs from prompt_spec()")
        expect(obs["text"] == build_prompt(spec), "the first text is not build_prompt(spec)")
        expect(spec.task and spec.task.strip()[:40] in obs["text"], "the task text is not in the prompt")
        expect(spec.tools or spec.answer, "the env offers neither tools nor an answer")
        height, width, _ = base.image_frame
        expect(spec.image_frame == (width, height), f"spec frame {spec.image_frame} != ({width}, {height})")
        expect(spec.max_turns == base.horizon, "spec.max_turns != horizon")
        expect(spec.fixed_frame == base.fixed_frame, "spec.fixed_frame differs from the env's")
        sizes = [(im.shape[1], im.shape[0]) for im in obs["images"]]
        expect([(n.width, n.height) for n in spec.images] == sizes, "spec.images do not describe the first images")
        expect(json.loads(json.dumps(spec.to_dict())) == spec.to_dict(), "spec.to_dict() is not JSON")
    finally:
        env.close()


@check("text", needs=("jsonschema",))
def check_tool_schemas(subject: EnvUnderTest, mode: str) -> None:
    """Tool schemas are valid JSON Schema; each example call parses (constraints included) and validates."""
    import jsonschema

    env = subject.make(mode)
    try:
        env.reset(seed=0)
        base = _base(env)
        spec = base.prompt_spec()
        for tool in spec.tools:
            expect(set(tool) == {"type", "function"} and tool["type"] == "function", f"tool schema {tool}")
            function = tool["function"]
            expect(function["name"] and function["description"], "a tool lacks a name or description")
            jsonschema.Draft202012Validator.check_schema(function["parameters"])
            call = example_call(tool)
            pending = base.prepare_step(call)
            expect(pending.error is None, f"the example {call} is refused: {pending.error}")
            arguments = json.loads(call.removeprefix("<tool_call>").removesuffix("</tool_call>"))["arguments"]
            jsonschema.validate(arguments, function["parameters"])
        if spec.answer is not None:
            jsonschema.Draft202012Validator.check_schema(spec.answer["schema"])
            parsed = base.tools.parse(base.oracle_text())
            if isinstance(parsed, Answer):
                jsonschema.validate(parsed.value, spec.answer["schema"])
    finally:
        env.close()


@check("both")
def check_one_mdp(subject: EnvUnderTest, mode: str) -> None:
    """The text an agent would write for a numeric action gives the same state, reward and score."""
    probe = subject.make("numeric")
    twin = _base(probe).interface_twin_kwargs()
    probe.close()
    numeric, text = subject.make("numeric", **twin), subject.make("text", **twin)
    try:
        rng = np.random.default_rng(1)
        for seed in range(3):
            _, info = numeric.reset(seed=seed)
            text.reset(options={"task_seed": info["task_seed"]})
            for step in range(6):
                n_base, t_base = _base(numeric), _base(text)
                action = n_base.oracle_numeric() if step % 2 else n_base.sample_numeric_action(rng)
                as_text = n_base.numeric_to_text(action)
                n_obs, n_reward, n_term, n_trunc, n_info = numeric.step(action)
                _, t_reward, t_term, t_trunc, t_info = text.step(as_text)
                where = f"seed {seed}, step {step}"
                expect(t_info["action_error"] is None, f"{where}: the text twin failed: {t_info['action_error']}")
                expect(abs(t_reward - n_reward) <= 1e-9, f"{where}: rewards {t_reward} != {n_reward}")
                expect(abs(t_info["score"] - n_info["score"]) <= 1e-9, f"{where}: scores differ")
                expect((t_info["success"], t_term) == (n_info["success"], n_term), f"{where}: endings differ")
                for key, value in n_obs.items():
                    expect(np.array_equal(t_base._numeric_observation()[key], value), f"{where}: state {key!r} differs")
                if n_term or n_trunc or t_trunc:
                    break
    finally:
        numeric.close()
        text.close()


def _backend_names(subject: EnvUnderTest, mode: str) -> list[str]:
    env = subject.make(mode)
    names = list(_base(env).backends)
    env.close()
    if not names:
        raise ContractSkip("the env has no backends")
    return names


@check("text", "numeric")
def check_backend_faults_in_step(subject: EnvUnderTest, mode: str) -> None:
    """Each fault kind in each backend during a step: an env error (truncated, reward 0) or, for a
    crash the retry survived, no trace; never the agent's error or an exception; reset recovers."""
    for name in _backend_names(subject, mode):
        for kind in FAULT_KINDS:
            reference = subject.make(mode)
            env = subject.make(mode)
            try:
                reference.reset(seed=0)
                env.reset(seed=0)
                expected = reference.step(oracle_action(reference))
                handle = _base(env).backends[name]
                handle.inject_fault(kind=kind)
                result = env.step(oracle_action(env))
                obs, reward, terminated, truncated, info = result
                where = f"{kind} fault in {name!r}"
                expect(env.observation_space.contains(obs), f"{where}: the observation is outside the space")
                expect(info["action_error"] is None, f"{where} was blamed on the agent: {info['action_error']}")
                if handle.pending_faults:  # this interface's step does not use the backend
                    handle.inject_fault(0)
                    expect(info["env_error"] is None, f"{where}: an env error though the backend was not used")
                elif info["env_error"] is not None:
                    expect(name in info["env_error"], f"{where}: env_error does not name it: {info['env_error']}")
                    expect(truncated and not terminated and reward == 0.0, f"{where}: not truncated with reward 0")
                    expect(info["score"] == 0.0, f"{where}: score {info['score']} after an env error")
                else:
                    expect(kind != "error", f"{where}: the step went on as if nothing happened")
                    expect(digest_of([result]) == digest_of([expected]), f"{where}: the retried step differs")
                env.reset(seed=1)
                info = env.step(oracle_action(env))[-1]
                expect(info["env_error"] is None and info["action_error"] is None, f"{where}: reset did not recover")
            finally:
                env.close()
                reference.close()


@check("text", "numeric")
def check_backend_faults_in_reset(subject: EnvUnderTest, mode: str) -> None:
    """A fault of each kind in reset is retried on a fresh backend (the same episode); faults past
    the retries raise BackendUnavailable naming the backend; the next reset recovers."""
    for name in _backend_names(subject, mode):
        for kind in FAULT_KINDS:
            env = subject.make(mode)
            try:
                clean = digest_of([env.reset(seed=4)])
                handle = _base(env).backends[name]
                handle.inject_fault(1, kind=kind)
                expect(digest_of([env.reset(seed=4)]) == clean, f"{kind} fault in {name!r}: the retried reset differs")
                if handle.pending_faults:  # reset does not use this backend in this interface
                    handle.inject_fault(0)
                elif kind == "error":
                    handle.inject_fault(_base(env).reset_retries + 1)
                    try:
                        env.reset(seed=4)
                    except BackendUnavailable as err:
                        expect(name in str(err), f"BackendUnavailable does not name {name!r}: {err}")
                    else:
                        raise ContractError(f"{name!r} failing past the retries did not raise BackendUnavailable")
                    expect(digest_of([env.reset(seed=4)]) == clean, f"{name!r}: reset did not recover")
            finally:
                env.close()


@check("text", "numeric")
def check_backend_errors_in_every_stage(subject: EnvUnderTest, mode: str) -> None:
    """A BackendError raised while applying, observing, scoring or reporting never escapes step."""
    for stage in ("_apply", "_numeric_observation", "_score", "_extra_info"):
        env = subject.make(mode)
        try:
            env.reset(seed=0)
            base = _base(env)

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise BackendError("broken on purpose", "test backend")

            setattr(base, stage, fail)
            try:
                obs, reward, terminated, truncated, info = env.step(oracle_action(env))
            finally:
                delattr(base, stage)
            if stage == "_numeric_observation" and mode == "text":
                expect(info["env_error"] is None, "the text interface built a numeric observation")
                continue
            where = f"BackendError in {stage}"
            expect(
                info["env_error"] and "test backend" in info["env_error"], f"{where}: env_error {info['env_error']!r}"
            )
            expect(truncated and not terminated and reward == 0.0, f"{where}: not truncated with reward 0")
            expect(env.observation_space.contains(obs) and info["score"] == 0.0, f"{where}: bad observation or score")
            obs, info = env.reset(seed=0)
            expect(env.observation_space.contains(obs), f"{where}: reset did not recover")
        finally:
            env.close()


# -- running the checks -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    check: str
    mode: str
    status: str  # "passed", "failed" or "skipped"
    message: str = ""
    seconds: float = 0.0


@dataclass
class ContractReport:
    """The results of :func:`check_env_contract` on one env."""

    env: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        counts = {s: sum(r.status == s for r in self.results) for s in ("passed", "failed", "skipped")}
        lines = [f"{self.env}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"]
        lines += [f"  FAILED {r.check} [{r.mode}]: {r.message}" for r in self.failures]
        lines += [f"  skipped {r.check} [{r.mode}]: {r.message}" for r in self.results if r.status == "skipped"]
        return "\n".join(lines)


class ContractViolation(AssertionError):
    """Raised by :func:`check_env_contract` when a check failed; ``report`` has every result."""

    def __init__(self, report: ContractReport) -> None:
        super().__init__(str(report))
        self.report = report


def checks_named(names: Sequence[str] | None = None, skip: Sequence[str] = ()) -> list[Check]:
    """The checks called ``names`` (all by default) minus ``skip``; unknown names are refused."""
    known = {c.name: c for c in CHECKS}
    unknown = (set(names or ()) | set(skip)) - set(known)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; the checks are {', '.join(known)}")
    chosen = [known[n] for n in names] if names else list(CHECKS)
    return [c for c in chosen if c.name not in skip]


def cases(subject: EnvUnderTest, checks: Sequence[Check] | None = None) -> Iterator[tuple[Check, str]]:
    """Every (check, mode) that applies to ``subject``."""
    for c in checks or CHECKS:
        for mode in c.modes_for(subject.interfaces):
            yield c, mode


def check_env_contract(
    env: str | Callable[..., gym.Env],
    *,
    kwargs: Mapping[str, Any] | None = None,
    interfaces: Sequence[str] | None = None,
    checks: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    raise_on_failure: bool = True,
    progress: bool = False,
) -> ContractReport:
    """Run the env contract on one env: a registered id (its declared interfaces) or a factory
    called as ``factory(action_mode=..., **kwargs)`` (both interfaces unless ``interfaces`` says).

    Returns the report; raises :class:`ContractViolation` holding it when a check failed (unless
    ``raise_on_failure=False``). ``checks``/``skip`` select checks by name (:data:`CHECKS`);
    ``progress`` shows a rich progress bar. Example::

        from visrl_envs.testing import check_env_contract
        check_env_contract("visrl/Jigsaw-v1", checks=["pickling", "malformed_text"])
        check_env_contract(functools.partial(MyPageEnv, pages="pages/"), interfaces=["text"])
    """
    subject = EnvUnderTest.of(env, kwargs=kwargs, interfaces=interfaces)
    report = ContractReport(subject.name)
    todo = list(cases(subject, checks_named(checks, skip)))
    bar: Any = contextlib.nullcontext()
    if progress:
        from rich.progress import Progress

        bar = Progress()
    with bar:
        task = bar.add_task(f"contract of {subject.name}", total=len(todo)) if progress else None
        for c, mode in todo:
            start = time.perf_counter()
            try:
                c.run(subject, mode)
                status, message = "passed", ""
            except ContractSkip as err:
                status, message = "skipped", str(err)
            except Exception as err:  # a contract failure, or anything the env raised: both are reported
                status, message = (
                    "failed",
                    f"{type(err).__name__}: {err}" if not isinstance(err, ContractError) else str(err),
                )
            report.results.append(CheckResult(c.name, mode, status, message, time.perf_counter() - start))
            if progress:
                bar.update(task, advance=1)
    if raise_on_failure and not report.ok:
        raise ContractViolation(report)
    return report
