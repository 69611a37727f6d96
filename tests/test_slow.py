"""Longer checks (``make test-slow``): every difficulty, longer trajectories, full baseline cells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from tests.helpers import malformed_actions, trajectory_digest
from visrl_envs.registry import REGISTRY

pytestmark = pytest.mark.slow
IDS = [e.id for e in REGISTRY]


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_long_trajectories_are_deterministic_at_every_difficulty(env_id: str, difficulty: int) -> None:
    for mode in ("text", "numeric"):
        code = f"from tests.helpers import trajectory_digest;print(trajectory_digest({env_id!r}, {mode!r}, 3, 200))"
        root = Path(__file__).resolve().parents[1]
        here = trajectory_digest(env_id, mode, 3, 200)
        assert here == trajectory_digest(env_id, mode, 3, 200)
        if difficulty == 0:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
            assert out.stdout.strip() == here


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_malformed_actions_at_every_difficulty(env_id: str, difficulty: int) -> None:
    env = gym.make(env_id, difficulty=difficulty)
    env.reset(seed=difficulty)
    for action in malformed_actions(200, seed=difficulty):
        _, _, terminated, truncated, info = env.step(action)
        assert info["action_error"] and info["env_error"] is None
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
