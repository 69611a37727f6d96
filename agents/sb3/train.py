"""Train and evaluate SB3 agents on any visrl id's numeric interface.

The numeric observation is a Dict of uint8 images (and small vectors), so ``MultiInputPolicy`` takes
it as is (NatureCNN per image, flatten per vector); no wrapper is needed. Training uses the train
split; the report compares the trained agent with the random and oracle agents on the test split,
with 95% bootstrap confidence intervals.

    python -m agents.sb3.train visrl/JigsawPair-v1 --algo ppo --steps 36000 --difficulty 0
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import visrl_envs

#: What each algorithm needs of the action space (SAC, TD3 and DDPG need Box actions, which no
#: numeric interface of the current envs has, so they are not offered).
ACTION_SPACES: dict[str, tuple[type[spaces.Space], ...]] = {
    "ppo": (spaces.Discrete, spaces.MultiDiscrete, spaces.Box),
    "a2c": (spaces.Discrete, spaces.MultiDiscrete, spaces.Box),
    "dqn": (spaces.Discrete,),
}
ALGORITHMS = tuple(ACTION_SPACES)

#: Defaults that learn within minutes on 2 CPU cores (8 envs, short rollouts, entropy bonus).
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": 3e-4, "ent_coef": 0.01},
    "a2c": {"n_steps": 16, "ent_coef": 0.01},
    "dqn": {"buffer_size": 20_000, "learning_starts": 1_000, "exploration_fraction": 0.3},
}


def numeric_action_space(env_id: str, **env_kwargs: Any) -> spaces.Space:
    """The numeric action space of ``env_id`` (built without starting any backend)."""
    env = gym.make(env_id, action_mode="numeric", **env_kwargs)
    space = env.action_space
    env.close()
    return space


def compatible_algorithms(env_id: str, **env_kwargs: Any) -> list[str]:
    """The algorithms whose action spaces include this env's numeric action space."""
    space = numeric_action_space(env_id, **env_kwargs)
    return [name for name, kinds in ACTION_SPACES.items() if isinstance(space, kinds)]


def check_algorithm(env_id: str, algo: str, **env_kwargs: Any) -> None:
    """Raise a one-line ``ValueError`` when ``algo`` cannot act in ``env_id``'s numeric interface."""
    if algo not in ACTION_SPACES:
        raise ValueError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGORITHMS)}")
    fits = compatible_algorithms(env_id, **env_kwargs)
    if algo not in fits:
        space = numeric_action_space(env_id, **env_kwargs)
        raise ValueError(
            f"{algo} cannot act in {env_id}'s numeric action space {space}; algorithms that fit: {', '.join(fits)}"
        )


def make_vec_env(env_id: str, n_envs: int = 8, seed: int = 0, **env_kwargs: Any) -> Any:
    """An SB3 vector env of ``env_id`` (numeric interface, train split unless given), seeded, with
    episode statistics."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    return sb3_make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs={"action_mode": "numeric", **env_kwargs})


def train(
    env_id: str,
    algo: str = "ppo",
    total_timesteps: int = 36_000,
    seed: int = 0,
    n_envs: int = 8,
    verbose: int = 0,
    progress_bar: bool = False,
    hyperparameters: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> Any:
    """Train an SB3 model with ``MultiInputPolicy`` on the train split; returns the model."""
    import stable_baselines3 as sb3
    import torch

    torch.set_num_threads(1)  # holds up on a shared 2-core machine (DESIGN.md section 5)
    check_algorithm(env_id, algo, **env_kwargs)
    cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}[algo]
    env = make_vec_env(env_id, n_envs=1 if algo == "dqn" else n_envs, seed=seed, **env_kwargs)
    extra = {**HYPERPARAMETERS[algo], **(hyperparameters or {})}
    model = cls("MultiInputPolicy", env, seed=seed, verbose=verbose, device="cpu", **extra)
    model.learn(total_timesteps=total_timesteps, progress_bar=progress_bar)
    return model


class SB3Agent:
    """Wraps a trained SB3 model in the agent protocol: the most likely action (``deterministic``),
    or one sampled from the policy."""

    def __init__(self, model: Any, name: str = "sb3", deterministic: bool = True) -> None:
        self.model = model
        self.name = name
        self.deterministic = deterministic

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        if getattr(env.unwrapped, "action_mode", None) != "numeric":
            raise ValueError("SB3 agents act on the numeric interface")

    def act(self, observation: Any, info: dict[str, Any]) -> Any:
        action, _ = self.model.predict(observation, deterministic=self.deterministic)
        return action


@dataclass
class Evaluation:
    """Per-episode results of one agent on one env."""

    scores: np.ndarray
    successes: np.ndarray
    returns: np.ndarray

    def summary(self) -> dict[str, float]:
        return {
            "score": float(self.scores.mean()),
            "success": float(self.successes.mean()),
            "return": float(self.returns.mean()),
        }


def evaluate_episodes(
    agent: Any, env_id: str, episodes: int = 100, split: str = "test", action_mode: str = "numeric", **env_kwargs: Any
) -> Evaluation:
    """Run ``agent`` for ``episodes`` episodes (seeds 0..episodes-1 of ``split``)."""
    env = gym.make(env_id, action_mode=action_mode, split=split, **env_kwargs)
    scores, successes, returns = [], [], []
    for episode in range(episodes):
        obs, info = env.reset(seed=episode)
        agent.reset(env, seed=episode)
        total = 0.0
        while True:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            total += float(reward)
            if terminated or truncated:
                break
        scores.append(info["score"])
        successes.append(info["success"])
        returns.append(total)
    env.close()
    return Evaluation(np.array(scores), np.array(successes, dtype=float), np.array(returns))


def evaluate(agent: Any, env_id: str, episodes: int = 20, split: str = "test", **env_kwargs: Any) -> dict[str, float]:
    """Mean score, success rate and return of ``agent`` over ``episodes`` episodes of ``split``."""
    return evaluate_episodes(agent, env_id, episodes, split, **env_kwargs).summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agents.sb3.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("env_id")
    parser.add_argument("--algo", default="ppo", choices=ALGORITHMS)
    parser.add_argument("--steps", type=int, default=36_000)
    parser.add_argument("--difficulty", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=100, help="test-split episodes per agent in the report")
    parser.add_argument("--save", default=None, help="path to save the model zip")
    args = parser.parse_args(argv)
    known = [e.id for e in visrl_envs.REGISTRY]
    if args.env_id not in known:
        parser.error(f"unknown env {args.env_id!r}; known: {', '.join(known)}")
    try:
        check_algorithm(args.env_id, args.algo, difficulty=args.difficulty)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    model = train(args.env_id, args.algo, args.steps, args.seed, difficulty=args.difficulty, progress_bar=True)
    if args.save:
        model.save(args.save)
    report(SB3Agent(model, args.algo), args.env_id, args.episodes, difficulty=args.difficulty)
    return 0


def report(agent: Any, env_id: str, episodes: int, **env_kwargs: Any) -> dict[str, Evaluation]:
    """Print the trained agent beside the random and oracle agents on the test split (mean score
    with a 95% bootstrap CI, success rate, return); returns the evaluations."""
    from rich.console import Console
    from rich.table import Table

    from agents.scripted import OracleAgent, RandomAgent
    from agents.stats import bootstrap_ci

    results = {
        agent.name: evaluate_episodes(agent, env_id, episodes, **env_kwargs),
        "random": evaluate_episodes(RandomAgent(), env_id, episodes, **env_kwargs),
        "oracle": evaluate_episodes(OracleAgent(), env_id, episodes, **env_kwargs),
    }
    table = Table(title=f"{env_id} numeric, test split, {episodes} episodes, {env_kwargs}")
    for column in ("agent", "score [95% CI]", "success", "return"):
        table.add_column(column)
    for name, result in results.items():
        point, low, high = bootstrap_ci(result.scores)
        summary = result.summary()
        table.add_row(
            name, f"{point:.3f} [{low:.3f}, {high:.3f}]", f"{summary['success']:.2f}", f"{summary['return']:+.3f}"
        )
    Console().print(table)
    return results


if __name__ == "__main__":
    sys.exit(main())
