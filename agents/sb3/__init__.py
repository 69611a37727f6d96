"""Stable-Baselines3 agents on the numeric interface (``pip install visrl-envs[sb3]``).

The names are imported on first use, so that ``python -m agents.sb3.train`` does not import its own
module twice (Python warns about that when a package's ``__init__`` imports the module it runs).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SB3Agent", "evaluate", "evaluate_episodes", "make_vec_env", "report", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        module = importlib.import_module("agents.sb3.train")
        # importing the submodule bound the package's ``train`` to it: rebind the public names
        globals().update({n: getattr(module, n) for n in __all__})
        return globals()[name]
    raise AttributeError(f"module 'agents.sb3' has no attribute {name!r}")
