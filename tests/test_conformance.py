"""The env contract, checked on every registered id and both interfaces (DESIGN.md section 3).

Every test here is parametrized over the registry: a new id is tested the moment it is registered.
"""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import jsonschema
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tests.conftest import ENV_IDS, MODES
from tests.helpers import arrays, malformed_actions, trajectory, trajectory_digest
from visrl_envs.core.base import EPISODE_STREAM
from visrl_envs.core.errors import BackendError, BackendUnavailable
from visrl_envs.core.prompt import build_prompt
from visrl_envs.core.spaces import ImageSequence
from visrl_envs.core.tools import Answer

INFO_KEYS = {"success", "score", "reward_terms", "action_error", "env_error", "task_seed", "turn"}


def oracle_action(env: gym.Env) -> Any:
    base = env.unwrapped
    return base.oracle_text() if base.action_mode == "text" else base.oracle_numeric()


def test_gymnasium_check_env_strict(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_sb3_check_env_numeric(env_id: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, action_mode="numeric")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped, warn=True)
    env.close()


def test_numeric_images_are_sb3_friendly(env_id: str) -> None:
    env = gym.make(env_id, action_mode="numeric")
    for key, space in env.observation_space.spaces.items():
        if len(space.shape) == 3:
            assert space.dtype == np.uint8 and space.shape[2] == 3 and min(space.shape[:2]) >= 64, key
    env.close()


def test_text_observations_are_images_of_one_frame_and_text(env_id: str) -> None:
    env = gym.make(env_id)
    space = env.observation_space["images"]
    assert isinstance(space, ImageSequence) and space.frame == env.unwrapped.image_frame
    obs, info = env.reset(seed=0)
    assert isinstance(obs["images"], tuple) and len(obs["images"]) >= 1, "the first observation shows the task"
    assert all(im.shape == space.frame and im.dtype == np.uint8 for im in obs["images"])
    obs = env.step("not an action")[0]
    assert obs["images"] == (), "a malformed action shows nothing new"
    env.close()


@pytest.mark.parametrize("vectorization_mode", ["sync", "async", None])  # None: the registry's default
def test_make_vec(env_id: str, mode: str, vectorization_mode: str | None) -> None:
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=vectorization_mode, action_mode=mode)
    obs, info = envs.reset(seed=3)
    assert envs.observation_space.contains(obs)
    for _ in range(2):  # valid actions run inside the (async) workers, then random ones
        actions = envs.call("oracle_text") if mode == "text" else envs.call("oracle_numeric")
        obs, reward, terminated, truncated, info = envs.step(tuple(actions) if mode == "text" else np.stack(actions))
        assert reward.shape == (2,) and reward.dtype == np.float64
        assert not any(info["action_error"][info["_action_error"]]), info["action_error"]
        assert not any(info["env_error"][info["_env_error"]]), info["env_error"]
        assert envs.observation_space.contains(obs)
    for _ in range(3):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert envs.observation_space.contains(obs)
    envs.close()


def test_async_vector_env_equals_sync(env_id: str, mode: str) -> None:
    """Shared memory must carry every observation exactly (Gymnasium reads Text from it only once)."""

    def run(vectorization_mode: str) -> str:
        envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=vectorization_mode, action_mode=mode)
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
        envs.close()
        return _digest(out)

    assert run("async") == run("sync")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_seed_same_trajectory(env_id: str, mode: str, seed: int) -> None:
    assert trajectory_digest(env_id, mode, seed, 50) == trajectory_digest(env_id, mode, seed, 50)


def test_same_trajectory_in_another_process(env_id: str, mode: str) -> None:
    here = trajectory_digest(env_id, mode, 7, 20)
    code = f"from tests.helpers import trajectory_digest; print(trajectory_digest({env_id!r}, {mode!r}, 7, 20))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "SDL_VIDEODRIVER": "dummy"},
    )
    assert out.stdout.strip() == here


def test_different_seeds_differ(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    first = [env.reset(seed=s)[0] for s in range(4)]
    images = [np.concatenate([a.ravel() for a in arrays(o)]) for o in first]
    assert len({im.tobytes() for im in images}) >= 3
    env.close()


def test_splits_are_disjoint(env_id: str) -> None:
    train = gym.make(env_id, split="train")
    test = gym.make(env_id, split="test")
    seeds_train = {train.reset(seed=s)[1]["task_seed"] for s in range(20)}
    seeds_test = {test.reset(seed=s)[1]["task_seed"] for s in range(20)}
    assert max(seeds_train) < 2**31 <= min(seeds_test)
    for bad in (2**31 + 5, -1, 1.5, "3", True):
        with pytest.raises(ValueError, match="task_seed"):
            train.reset(options={"task_seed": bad})
    with pytest.raises(ValueError, match="unknown reset options"):
        train.reset(options={"task": 3})
    train.close()
    test.close()


def test_task_seed_replays_the_whole_episode(env_id: str, mode: str) -> None:
    """GRPO groups share a task: ``reset(options={"task_seed": k})`` after any history replays the
    episode exactly, given the same actions."""
    env = gym.make(env_id, action_mode=mode)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=5)
    base = env.unwrapped
    actions, first = [], [(obs, info)]
    for _ in range(4):
        action = base.sample_text_action(rng) if mode == "text" else base.sample_numeric_action(rng)
        actions.append(action)
        first.append(env.step(action))
        if first[-1][2] or first[-1][3]:
            break
    env.reset(seed=99)
    env.step(actions[0])
    second = [env.reset(options={"task_seed": info["task_seed"]})]
    fresh = np.random.default_rng([info["task_seed"], EPISODE_STREAM])
    assert copy.deepcopy(base.episode_rng).random() == fresh.random(), "in-episode randomness restarts with the task"
    second += [env.step(a) for a in actions]
    assert _digest(first) == _digest(second)
    env.close()


def _digest(items: list) -> str:
    import hashlib

    from tests.helpers import digest

    h = hashlib.sha256()
    digest(items, h)
    return h.hexdigest()


def test_pickle_round_trip(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    base = env.unwrapped
    sample = base.sample_text_action if mode == "text" else base.sample_numeric_action
    fresh = pickle.loads(pickle.dumps(gym.make(env_id, action_mode=mode)))  # never reset before pickling
    assert _digest([fresh.reset(seed=11)]) == _digest([gym.make(env_id, action_mode=mode).reset(seed=11)])
    fresh.close()
    clone = pickle.loads(pickle.dumps(env))
    assert all(not h.active for h in clone.unwrapped.backends.values()), "backends never travel"
    for _ in range(3):
        action = sample(rng)
        a = env.step(action)
        b = clone.step(action)
        assert _digest([a]) == _digest([b])
        if a[2] or a[3]:
            break
    assert _digest([env.reset(seed=12)]) == _digest([clone.reset(seed=12)])
    env.close()
    clone.close()


def test_truncation_exactly_at_horizon(env_id: str) -> None:
    env = gym.make(env_id, action_mode="text")
    env.reset(seed=0)
    horizon = env.unwrapped.horizon
    assert horizon <= env.spec.max_episode_steps
    for step in range(1, horizon + 1):
        _, _, terminated, truncated, info = env.step("not an action")
        assert not terminated
        assert truncated == (step == horizon), step
        assert info["action_error"]
    env.close()


def test_numeric_episode_ends_by_horizon(env_id: str) -> None:
    env = gym.make(env_id, action_mode="numeric")
    rng = np.random.default_rng(0)
    for seed in range(3):
        env.reset(seed=seed)
        horizon = env.unwrapped.horizon
        for step in range(1, horizon + 1):
            _, _, terminated, truncated, _ = env.step(env.unwrapped.sample_numeric_action(rng))
            if terminated:
                break
            assert truncated == (step == horizon)
        else:
            assert truncated
    env.close()


def test_observations_share_no_memory(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    rng = np.random.default_rng(0)
    previous, _ = env.reset(seed=0)
    for _ in range(5):
        action = env.unwrapped.sample_text_action(rng) if mode == "text" else env.unwrapped.sample_numeric_action(rng)
        obs, _, terminated, truncated, _ = env.step(action)
        for a in arrays(previous):
            for b in arrays(obs):
                assert not np.shares_memory(a, b)
        previous = obs
        if terminated or truncated:
            previous, _ = env.reset()
    env.close()


def test_info_keys_on_every_step(env_id: str, mode: str) -> None:
    for t in trajectory(env_id, mode, 0, 12):
        info = t[-1]
        assert set(info) >= INFO_KEYS
        assert isinstance(info["success"], bool)
        assert 0.0 <= info["score"] <= 1.0
        if len(t) == 5:
            assert np.isclose(sum(info["reward_terms"].values()), t[1])


def test_render_rgb_array(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and min(frame.shape[:2]) >= 64
    env.step(oracle_action(env))
    after = env.render()
    assert after.shape == frame.shape
    env.close()


def test_render_human_opens_a_window_showing_the_frame(env_id: str) -> None:
    import pygame

    env = gym.make(env_id, render_mode="human")
    env.reset(seed=0)  # human mode renders on reset and step
    display = env.unwrapped._display
    assert display is not None and pygame.display.get_surface() is not None
    frame = env.unwrapped._render_frame()
    shown = np.transpose(pygame.surfarray.array3d(pygame.display.get_surface()), (1, 0, 2))
    assert shown.shape == frame.shape and np.array_equal(shown, frame)
    env.step("garbage")
    env.close()
    assert env.unwrapped._display is None


def test_close_releases_backends_and_is_idempotent(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    env.reset(seed=0)
    env.step(oracle_action(env))
    base = env.unwrapped
    env.close()
    assert all(not h.active for h in base.backends.values())
    env.close()
    obs, _ = env.reset(seed=0)  # a closed env restarts its backends lazily
    assert env.observation_space.contains(obs)
    env.close()
    assert all(not h.active for h in base.backends.values())


def test_step_before_reset_raises(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    base = env.unwrapped  # the env itself, not OrderEnforcing
    with pytest.raises(gym.error.ResetNeeded):
        base.step("x" if mode == "text" else base.sample_numeric_action(np.random.default_rng(0)))
    with pytest.raises(gym.error.ResetNeeded):
        base.prompt_spec()
    base.reset(seed=0)
    while True:
        *_, terminated, truncated, _ = base.step(base.null_text() if mode == "text" else oracle_action(env))
        if terminated or truncated:
            break
    with pytest.raises(gym.error.ResetNeeded):
        base.step("x")
    env.close()


def test_malformed_text_actions(env_id: str) -> None:
    env = gym.make(env_id, action_mode="text")
    env.reset(seed=0)
    for action in malformed_actions(200):
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["action_error"], repr(action)
        assert info["env_error"] is None
        assert reward == env.unwrapped.format_penalty
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            env.reset()
    env.close()


NUMERIC_GARBAGE = [None, "3", np.nan, -1, 10**9, [0.5] * 3, np.zeros((2, 2)), object(), [[1]], True]


def test_malformed_numeric_actions(env_id: str) -> None:
    env = gym.make(env_id, action_mode="numeric")
    env.reset(seed=0)
    for action in NUMERIC_GARBAGE:
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["action_error"] and info["env_error"] is None, repr(action)
        assert reward == env.unwrapped.format_penalty
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            env.reset()
    env.close()


@pytest.mark.parametrize(
    "pattern", ["<tool_call>", "<answer>", "<think>", "<svg", "```", "<think></think><answer>", "{[", "</svg>"]
)
def test_parsing_hostile_text_is_linear(env_id: str, pattern: str) -> None:
    """Self-calibrated, so it does not depend on the machine's speed: parsing (stage 1 of a step) 4x
    as much hostile text takes about 4x as long when parsing is linear, about 16x when a regex
    rescans from every opening tag (quadratic: seconds at 800k characters). The two sizes are timed
    interleaved, best of 7 each, so load on a shared machine hits both alike; the bound is 8x plus
    20 ms of slack for timer and scheduler noise at these millisecond scales."""
    env = gym.make(env_id)
    env.reset(seed=0)
    base = env.unwrapped
    texts = {n: pattern * (n // len(pattern)) for n in (200_000, 800_000)}
    best = dict.fromkeys(texts, float("inf"))
    for _ in range(7):
        for n, text in texts.items():
            start = time.perf_counter()
            pending = base.prepare_step(text)
            best[n] = min(best[n], time.perf_counter() - start)
            assert pending.error is not None
    small, large = best[200_000], best[800_000]
    assert large < 8 * small + 0.02, (small, large)
    env.close()


def test_oversized_action_is_refused_before_parsing(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    info = env.step("<answer>" + "1" * (2 << 20) + "</answer>")[-1]
    assert "the limit is" in info["action_error"]
    env.close()


# -- the prompt surface ---------------------------------------------------------------------------
def test_prompt_spec_is_the_same_surface_for_every_id(env_id: str) -> None:
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    spec = env.unwrapped.prompt_spec()
    assert info["prompt_spec"] == spec
    assert obs["text"] == build_prompt(spec), "the first text is the one core prompt builder's"
    assert spec.task and spec.task in obs["text"]
    assert spec.tools or spec.answer, "an env offers tools, an answer, or both"
    height, width, _ = env.unwrapped.image_frame
    assert spec.image_frame == (width, height) and spec.max_turns == env.unwrapped.horizon
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()
    env.close()


def test_tool_schemas_validate_and_round_trip(env_id: str) -> None:
    from visrl_envs.core.prompt import example_call

    env = gym.make(env_id)
    env.reset(seed=0)
    spec = env.unwrapped.prompt_spec()
    for tool in spec.tools:
        assert set(tool) == {"type", "function"} and tool["type"] == "function"
        function = tool["function"]
        assert function["name"] and function["description"]
        jsonschema.Draft202012Validator.check_schema(function["parameters"])
        call = example_call(tool)
        pending = env.unwrapped.prepare_step(call)
        assert pending.error is None, (call, pending.error)
        arguments = json.loads(call.removeprefix("<tool_call>").removesuffix("</tool_call>"))["arguments"]
        jsonschema.validate(arguments, function["parameters"])
    if spec.answer is not None:
        jsonschema.Draft202012Validator.check_schema(spec.answer["schema"])
        parsed = env.unwrapped.tools.parse(env.unwrapped.oracle_text())
        if isinstance(parsed, Answer):
            jsonschema.validate(parsed.value, spec.answer["schema"])
    env.close()


# -- text and numeric are one MDP ----------------------------------------------------------------
def _same_frame_kwargs(env_id: str) -> dict[str, Any]:
    numeric = gym.make(env_id, action_mode="numeric")
    size = getattr(numeric.unwrapped, "size", None)
    numeric.close()
    return {"size": size} if size is not None else {}


def test_text_and_numeric_interfaces_are_one_mdp(env_id: str) -> None:
    """The text an agent would write for a numeric action gives the same state, reward and score."""
    kwargs = _same_frame_kwargs(env_id)
    numeric = gym.make(env_id, action_mode="numeric", **kwargs)
    text = gym.make(env_id, action_mode="text", **kwargs)
    rng = np.random.default_rng(1)
    for seed in range(3):
        _, info = numeric.reset(seed=seed)
        text.reset(options={"task_seed": info["task_seed"]})
        for step in range(6):
            n_base, t_base = numeric.unwrapped, text.unwrapped
            action = n_base.oracle_numeric() if step % 2 else n_base.sample_numeric_action(rng)
            as_text = n_base.numeric_to_text(action)
            n_obs, n_reward, n_term, n_trunc, n_info = numeric.step(action)
            t_obs, t_reward, t_term, t_trunc, t_info = text.step(as_text)
            assert t_info["action_error"] is None, t_info["action_error"]
            assert t_reward == pytest.approx(n_reward, abs=1e-9), (seed, step)
            assert t_info["score"] == pytest.approx(n_info["score"], abs=1e-9)
            assert (t_info["success"], t_term) == (n_info["success"], n_term)
            for key, value in n_obs.items():
                assert np.array_equal(t_base._numeric_observation()[key], value), (seed, step, key)
            if n_term or n_trunc or t_trunc:
                break
    numeric.close()
    text.close()


# -- failures: blame and recovery -------------------------------------------------------------------
def _backend_cases() -> list[tuple[str, str, str]]:
    cases = []
    for env_id in ENV_IDS:
        for mode in MODES:
            env = gym.make(env_id, action_mode=mode)
            cases += [(env_id, mode, name) for name in env.unwrapped.backends]
            env.close()
    return cases


BACKEND_CASES = _backend_cases()


@pytest.mark.parametrize(("env_id", "mode", "backend"), BACKEND_CASES)
def test_backend_fault_in_step_is_an_env_error(env_id: str, mode: str, backend: str) -> None:
    """``inject_fault`` makes the backend's next use fail: a step that uses it truncates with
    ``env_error`` (never an exception, never the agent's fault) and the next reset recovers."""
    env = gym.make(env_id, action_mode=mode)
    env.reset(seed=0)
    handle = env.unwrapped.backends[backend]
    handle.inject_fault()
    obs, reward, terminated, truncated, info = env.step(oracle_action(env))
    assert env.observation_space.contains(obs)
    if handle.pending_faults:  # this interface's step does not use the backend
        assert info["env_error"] is None
        handle.inject_fault(0)
    else:
        assert backend in info["env_error"] and truncated and not terminated
        assert reward == 0.0 and info["action_error"] is None and info["score"] == 0.0
    env.reset(seed=1)
    info = env.step(oracle_action(env))[-1]
    assert info["env_error"] is None and info["action_error"] is None
    env.close()


@pytest.mark.parametrize(("env_id", "mode", "backend"), BACKEND_CASES)
def test_backend_fault_in_reset_is_retried_then_named(env_id: str, mode: str, backend: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    clean = _digest([env.reset(seed=4)])
    handle = env.unwrapped.backends[backend]
    handle.inject_fault(1)
    assert _digest([env.reset(seed=4)]) == clean, "a retried reset gives the same episode"
    if handle.pending_faults:  # reset does not use this backend in this interface
        handle.inject_fault(0)
    else:
        handle.inject_fault(env.unwrapped.reset_retries + 1)
        with pytest.raises(BackendUnavailable, match=backend):
            env.reset(seed=4)
        assert _digest([env.reset(seed=4)]) == clean
    env.close()


STAGES = ("_apply", "_numeric_observation", "_score", "_extra_info")


@pytest.mark.parametrize("stage", STAGES)
def test_backend_errors_in_any_stage_never_escape_step(env_id: str, mode: str, stage: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    env.reset(seed=0)
    base = env.unwrapped

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise BackendError("broken on purpose", "test backend")

    setattr(base, stage, fail)
    try:
        obs, reward, terminated, truncated, info = env.step(oracle_action(env))
    finally:
        delattr(base, stage)
    if stage == "_numeric_observation" and mode == "text":
        assert info["env_error"] is None  # the text interface does not build numeric observations
        return
    assert "test backend" in info["env_error"] and truncated and not terminated and reward == 0.0
    assert env.observation_space.contains(obs) and info["score"] == 0.0 and not info["success"]
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()
