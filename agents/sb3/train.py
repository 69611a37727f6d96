"""Train and evaluate SB3 agents on any visrl id's numeric interface.

The numeric observation is a Dict of uint8 images (and small vectors), so ``MultiInputPolicy`` takes
it as is (NatureCNN per image, flatten per vector); no wrapper is needed.

    python -m agents.sb3.train visrl/Jigsaw-v1 --algo ppo --steps 20000 --difficulty 1
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import numpy as np

import visrl_envs  # noqa: F401

ALGORITHMS = ("ppo", "a2c", "dqn", "sac")


def make_vec_env(env_id: str, n_envs: int = 2, seed: int = 0, **env_kwargs: Any) -> Any:
    """An SB3 vector env of ``env_id`` (numeric interface), seeded, with episode statistics."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    return sb3_make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs={"action_mode": "numeric", **env_kwargs})


def train(
    env_id: str,
    algo: str = "ppo",
    total_timesteps: int = 10_000,
    seed: int = 0,
    n_envs: int = 2,
    verbose: int = 0,
    progress_bar: bool = False,
    **env_kwargs: Any,
) -> Any:
    """Train an SB3 model with ``MultiInputPolicy`` and library defaults; returns the model."""
    import stable_baselines3 as sb3
    import torch

    torch.set_num_threads(1)  # holds up on a shared 2-core machine (DESIGN.md section 5)
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {ALGORITHMS}")
    cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN, "sac": sb3.SAC}[algo]
    extra: dict[str, Any] = {"buffer_size": 20_000} if algo in ("dqn", "sac") else {"n_steps": 128}
    env = make_vec_env(env_id, n_envs=1 if algo in ("dqn", "sac") else n_envs, seed=seed, **env_kwargs)
    model = cls("MultiInputPolicy", env, seed=seed, verbose=verbose, device="cpu", **extra)
    model.learn(total_timesteps=total_timesteps, progress_bar=progress_bar)
    return model


class SB3Agent:
    """Wraps a trained SB3 model in the agent protocol (deterministic actions)."""

    def __init__(self, model: Any, name: str = "sb3") -> None:
        self.model = model
        self.name = name

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        if getattr(env.unwrapped, "action_mode", None) != "numeric":
            raise ValueError("SB3 agents act on the numeric interface")

    def act(self, observation: Any, info: dict[str, Any]) -> Any:
        action, _ = self.model.predict(observation, deterministic=True)
        return action


def evaluate(agent: Any, env_id: str, episodes: int = 20, split: str = "test", **env_kwargs: Any) -> dict[str, float]:
    """Mean score, success rate and return of ``agent`` over ``episodes`` test-split episodes."""
    env = gym.make(env_id, action_mode="numeric", split=split, **env_kwargs)
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
    return {"score": float(np.mean(scores)), "success": float(np.mean(successes)), "return": float(np.mean(returns))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env_id")
    parser.add_argument("--algo", default="ppo", choices=ALGORITHMS)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--difficulty", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--save", default=None, help="path to save the model zip")
    args = parser.parse_args(argv)
    model = train(args.env_id, args.algo, args.steps, args.seed, difficulty=args.difficulty, progress_bar=True)
    if args.save:
        model.save(args.save)
    print(evaluate(SB3Agent(model, args.algo), args.env_id, args.episodes, difficulty=args.difficulty))


if __name__ == "__main__":
    main()
