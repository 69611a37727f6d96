"""Scripted baselines: a random agent (lower bound) and oracles (upper bound, solvability proof)."""

from agents.scripted.oracle import OracleAgent
from agents.scripted.random_agent import RandomAgent

__all__ = ["OracleAgent", "RandomAgent"]
