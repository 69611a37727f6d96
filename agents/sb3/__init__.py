"""Stable-Baselines3 agents on the numeric interface (``pip install visrl-envs[sb3]``)."""

from agents.sb3.train import SB3Agent, evaluate, make_vec_env, train

__all__ = ["SB3Agent", "evaluate", "make_vec_env", "train"]
