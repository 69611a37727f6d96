"""Benchmark statistics on hand-computed values; agents and the baseline runner end to end."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from agents.scripted import OracleAgent, RandomAgent
from agents.stats import bootstrap_ci, iqm, optimality_gap, probability_of_improvement
from visrl_envs.registry import REGISTRY


def test_iqm_trims_a_quarter_each_side() -> None:
    assert iqm(np.arange(8)) == pytest.approx(3.5)
    assert iqm(np.array([0, 0, 0, 0, 1, 1, 1, 100])) == pytest.approx(0.5)


def test_optimality_gap() -> None:
    assert optimality_gap(np.array([0.5, 1.2])) == pytest.approx(0.25)


def test_probability_of_improvement() -> None:
    assert probability_of_improvement(np.array([1, 2]), np.array([0, 2])) == pytest.approx(0.625)
    assert probability_of_improvement(np.ones(3), np.ones(4)) == 0.5


def test_bootstrap_ci() -> None:
    point, low, high = bootstrap_ci(np.full(10, 0.3))
    assert point == low == high == pytest.approx(0.3)
    scores = np.random.default_rng(0).random(200)
    point, low, high = bootstrap_ci(scores)
    assert low < point < high and high - low < 0.2
    point, low, high = bootstrap_ci([np.zeros(5), np.ones(5)], statistic=iqm)
    assert point == 0.5 and low <= 0.5 <= high


@pytest.mark.parametrize("mode", ["text", "numeric"])
def test_oracle_solves_every_env_at_difficulty_zero(mode: str) -> None:
    for entry in REGISTRY:
        env = gym.make(entry.id, action_mode=mode)
        agent = OracleAgent()
        for seed in range(3):
            obs, info = env.reset(seed=seed)
            agent.reset(env, seed)
            while True:
                obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
                if terminated or truncated:
                    break
            assert info["success"], (entry.id, mode, seed)
        env.close()


def test_random_agent_acts_validly_everywhere() -> None:
    for entry in REGISTRY:
        for mode in ("text", "numeric"):
            env = gym.make(entry.id, action_mode=mode, difficulty=2)
            agent = RandomAgent(seed=1)
            obs, info = env.reset(seed=0)
            agent.reset(env, 0)
            for _ in range(10):
                obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
                assert info["action_error"] is None, (entry.id, mode, info["action_error"])
                if terminated or truncated:
                    obs, info = env.reset()
            env.close()


def test_baseline_runner_writes_its_report(tmp_path) -> None:
    from benchmarks.run_baselines import main

    cells = main(["--episodes", "3", "--envs", "visrl/JigsawPair-v1", "--out", str(tmp_path)])
    assert len(cells) == 4 * 3 + 4 * 2  # null, random, oracle on text; random, oracle on numeric
    oracle = [c for c in cells if c.agent == "oracle"]
    assert all(c.score == 1.0 and c.success_rate == 1.0 for c in oracle)
    assert (tmp_path / "baselines.png").stat().st_size > 10_000
    assert len(json.loads((tmp_path / "baselines.json").read_text())) == 20
    assert "| `visrl/JigsawPair-v1` | text | 0 | oracle | 1.000" in (tmp_path / "BASELINES.md").read_text()


def test_sb3_ppo_trains_and_acts_on_the_numeric_interface() -> None:
    from agents.sb3 import SB3Agent, evaluate, train

    model = train("visrl/JigsawPair-v1", "ppo", total_timesteps=256, difficulty=1)
    env = gym.make("visrl/JigsawPair-v1", action_mode="numeric", difficulty=1)
    obs, info = env.reset(seed=0)
    agent = SB3Agent(model)
    agent.reset(env)
    assert env.action_space.contains(np.int64(agent.act(obs, info)))
    result = evaluate(agent, "visrl/JigsawPair-v1", episodes=5, difficulty=1)
    assert 0 <= result["score"] <= 1 and 0.5 <= result["return"] <= 1.5


def test_null_agent_scores_the_floor() -> None:
    from agents.scripted import NullAgent

    expectations = {
        "visrl/SvgRender-v1": lambda info: info["score"] == 0.0 and info["metrics"]["similarity"] > 0.3,
        "visrl/Jigsaw-v1": lambda info: info["score"] < 1.0 and not info["success"],
        "visrl/JigsawFull-v1": lambda info: info["action_error"] is None,
        "visrl/JigsawPair-v1": lambda info: info["action_error"] is None,
    }
    for env_id, check in expectations.items():
        env = gym.make(env_id, difficulty=1)
        agent = NullAgent()
        obs, info = env.reset(seed=0)
        agent.reset(env, 0)
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        assert check(info), (env_id, info)
        env.close()
    with pytest.raises(ValueError):
        NullAgent().reset(gym.make("visrl/Jigsaw-v1", action_mode="numeric"))


def test_random_agent_is_independent_of_the_task_seed() -> None:
    # two-choice question: a random answer must be right about half the time over many episodes
    env = gym.make("visrl/JigsawPair-v1", split="test")
    agent = RandomAgent()
    correct = []
    for episode in range(200):
        obs, info = env.reset(seed=episode)
        agent.reset(env, seed=episode)
        correct.append(env.step(agent.act(obs, info))[-1]["success"])
    assert 0.4 < np.mean(correct) < 0.6
