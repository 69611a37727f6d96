"""The env contract shared by every family (no family imports here)."""

from visrl_envs.core.base import SPLIT_SEED_RANGES, BackendError, Outcome, VisualEnv
from visrl_envs.core.tools import ActionError, Answer, Arg, Tool, ToolCall, ToolSet

__all__ = [
    "SPLIT_SEED_RANGES",
    "ActionError",
    "Answer",
    "Arg",
    "BackendError",
    "Outcome",
    "Tool",
    "ToolCall",
    "ToolSet",
    "VisualEnv",
]
