"""The env contract, checked on every registered id and both interfaces (DESIGN.md section 3)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tests.helpers import malformed_actions, trajectory, trajectory_digest

INFO_KEYS = {"success", "score", "reward_terms", "action_error", "env_error"}


def _arrays(obs: dict) -> list[np.ndarray]:
    return [v for v in obs.values() if isinstance(v, np.ndarray)]


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


@pytest.mark.parametrize("vectorization_mode", ["sync", "async"])
def test_make_vec(env_id: str, mode: str, vectorization_mode: str) -> None:
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=vectorization_mode, action_mode=mode)
    obs, info = envs.reset(seed=3)
    assert envs.observation_space.contains(obs)
    for _ in range(4):
        obs, reward, _terminated, _truncated, _info = envs.step(envs.action_space.sample())
        assert reward.shape == (2,) and reward.dtype == np.float64
    envs.close()


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
    images = [np.concatenate([a.ravel() for a in _arrays(o)]) for o in first]
    assert len({im.tobytes() for im in images}) >= 3
    env.close()


def test_splits_are_disjoint(env_id: str) -> None:
    train = gym.make(env_id, split="train")
    test = gym.make(env_id, split="test")
    seeds_train = {train.reset(seed=s)[1]["task_seed"] for s in range(20)}
    seeds_test = {test.reset(seed=s)[1]["task_seed"] for s in range(20)}
    assert max(seeds_train) < 2**31 <= min(seeds_test)
    with pytest.raises(ValueError):
        train.reset(options={"task_seed": 2**31 + 5})
    train.close()
    test.close()


def test_task_seed_option_replays_a_task(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    obs_a, info = env.reset(seed=5)
    env.reset(seed=99)
    obs_b, _ = env.reset(options={"task_seed": info["task_seed"]})
    for a, b in zip(_arrays(obs_a), _arrays(obs_b), strict=True):
        assert np.array_equal(a, b)
    env.close()


def test_pickle_round_trip(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    base = env.unwrapped
    sample = base.sample_text_action if mode == "text" else base.sample_numeric_action
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(3):
        action = sample(rng)
        a = env.step(action)
        b = clone.step(action)
        for x, y in zip(_arrays(a[0]), _arrays(b[0]), strict=True):
            assert np.array_equal(x, y)
        assert a[1:4] == b[1:4]
        if a[2] or a[3]:
            break
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
        for a in _arrays(previous):
            for b in _arrays(obs):
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


@pytest.mark.parametrize("render_mode", ["rgb_array", "human"])
def test_render_modes(env_id: str, render_mode: str) -> None:
    env = gym.make(env_id, render_mode=render_mode)
    env.reset(seed=0)
    frame = env.render()
    if render_mode == "rgb_array":
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    env.step("garbage")
    env.close()


def test_close_twice(env_id: str, mode: str) -> None:
    env = gym.make(env_id, action_mode=mode)
    env.reset(seed=0)
    env.step(
        env.unwrapped.sample_text_action(np.random.default_rng(0)) if mode == "text" else env.action_space.sample()
    )
    env.close()
    env.close()


def test_step_before_reset_raises(env_id: str) -> None:
    env = gym.make(env_id)
    with pytest.raises(gym.error.ResetNeeded):
        env.step("x")
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


@pytest.mark.parametrize(
    "pattern", ["<tool_call>", "<answer>", "<think>", "<svg", "```", "<think></think><answer>", "{[", "</svg>"]
)
def test_parsing_hostile_text_is_linear_time(env_id: str, pattern: str) -> None:
    # 400 KB of repeated openings: a lazy or greedy regex rescans from each one (quadratic: minutes);
    # linear parsing takes milliseconds. The bound is a 100x margin, not a benchmark.
    import time

    env = gym.make(env_id)
    env.reset(seed=0)
    text = pattern * (400_000 // len(pattern))
    start = time.monotonic()
    info = env.step(text)[-1]
    assert time.monotonic() - start < 5.0
    assert info["action_error"]
    env.close()


def test_oversized_action_is_refused_before_parsing(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    info = env.step("<answer>" + "1" * (2 << 20) + "</answer>")[-1]
    assert "the limit is" in info["action_error"]
    env.close()
