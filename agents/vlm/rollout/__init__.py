"""Rollouts: envs and a policy turned into recorded, token-exact trajectories.

- ``collector.py``: :func:`collect` (B tasks x G samples, multi-turn, one batched generation per turn),
  :class:`RolloutStats`, :func:`make_pool`; re-exported here, so ``from agents.vlm.rollout import
  collect`` is the way in.
- ``chat.py``: :class:`ChatFormatter`, any text observation + PromptSpec -> chat messages.
- ``trajectory.py``: :class:`Trajectory` / :class:`Step`, what a rollout records.
- ``env_pool.py``: where the envs step (in this process, AsyncVectorEnv workers, Ray actors).

This room imports only :mod:`agents.vlm.policies` (and visrl_envs).
"""

from agents.vlm.rollout.collector import ENV_RUNNERS, RolloutStats, collect, json_safe, make_pool

__all__ = ["ENV_RUNNERS", "RolloutStats", "collect", "json_safe", "make_pool"]
