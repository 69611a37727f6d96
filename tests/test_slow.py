"""Longer checks (``make test-slow``): every difficulty, longer trajectories, full baseline cells."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from visrl_envs.registry import REGISTRY
from visrl_envs.testing import CHECKS, EnvUnderTest, malformed_text_actions, trajectory_digest

pytestmark = pytest.mark.slow
IDS = [e.id for e in REGISTRY]
CHECKS_BY_NAME = {c.name: c for c in CHECKS}


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_long_trajectories_are_deterministic_at_every_difficulty(env_id: str, difficulty: int) -> None:
    subject = EnvUnderTest.of(env_id, kwargs={"difficulty": difficulty})
    for mode in subject.interfaces:
        here = trajectory_digest(subject, mode, 3, 200)
        assert here == trajectory_digest(subject, mode, 3, 200)
    if difficulty == 0:
        CHECKS_BY_NAME["determinism_across_processes"].run(subject, subject.interfaces[0])


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_malformed_actions_at_every_difficulty(env_id: str, difficulty: int) -> None:
    env = gym.make(env_id, difficulty=difficulty)
    env.reset(seed=difficulty)
    for hostile in malformed_text_actions(env.unwrapped.tools, 200, seed=difficulty):
        _, _, terminated, truncated, info = env.step(hostile.text)
        assert info["env_error"] is None
        assert info["action_error"] or not hostile.must_fail, hostile.text[:80]
        if terminated or truncated:
            env.reset()
    env.close()


def test_full_baseline_cells_match_the_stated_chance_levels(tmp_path) -> None:
    from benchmarks.run_baselines import main

    cells = main(["--episodes", "40", "--envs", "visrl/JigsawFull-v1", "visrl/Jigsaw-v1", "--out", str(tmp_path)])
    for cell in cells:
        if cell.agent == "oracle":
            assert cell.success_rate == 1.0, cell
    tiles = {0: 2, 1: 4, 2: 9, 3: 16}
    for cell in cells:
        if cell.agent == "random" and cell.env_id == "visrl/JigsawFull-v1":
            n = tiles[cell.difficulty]
            assert cell.score_low <= 1 / n + 0.05 and cell.score_high >= 1 / n - 0.05, cell


def test_svg_oracle_many_seeds_every_difficulty() -> None:
    for difficulty in range(4):
        env = gym.make("visrl/SvgRender-v1", difficulty=difficulty)
        for seed in range(25):
            env.reset(seed=seed)
            info = env.step(env.unwrapped.oracle_text())[-1]
            assert info["success"], (difficulty, seed)
        env.close()


def test_async_vector_env_with_spawn_context() -> None:
    envs = gym.make_vec(
        "visrl/SvgRender-v1", num_envs=2, vectorization_mode="async", vector_kwargs={"context": "spawn"}
    )
    obs, _ = envs.reset(seed=0)
    texts = tuple(envs.unwrapped.call("oracle_text"))
    _, reward, terminated, _, info = envs.step(texts)
    assert terminated.all() and np.allclose(reward, 1.0)
    envs.close()
