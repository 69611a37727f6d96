"""Scripted baselines: null and random agents (floors) and oracles (upper bound, solvability proof)."""

from agents.scripted.null_agent import NullAgent
from agents.scripted.oracle import OracleAgent
from agents.scripted.random_agent import RandomAgent

__all__ = ["NullAgent", "OracleAgent", "RandomAgent"]
