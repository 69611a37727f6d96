"""Vision-language policies on the text interface of every visrl env, in rooms (lower rooms first; a
room imports only the rooms before it, tests/test_import_graph.py checks it):

- :mod:`agents.vlm.policies`: the policy protocols and the models behind them (transformers, the tiny
  test model, OpenAI-compatible servers);
- :mod:`agents.vlm.rollout`: chat formatting, env pools, trajectories and the collector;
- :mod:`agents.vlm.serving`: ``visrl serve``, its wire protocol and its token-level client;
- :mod:`agents.vlm.workbench`: ``visrl eval | demos | view``, saved runs, the benchmark runner's agent;
- :mod:`agents.vlm.grpo`: the GRPO trainer and ``visrl train vlm | sft``.

The flat module names of before the rooms (``agents.vlm.hf``, ``agents.vlm.serve``, ...) still import:
:data:`MOVED` maps each to its new name, and importing an old name gives the moved module itself (the
same object) with a DeprecationWarning naming the new path. ``agents.vlm.rollout`` was a module and is
now the rollout room, which re-exports the collector's names. Nothing heavy is imported here.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import CodeType, ModuleType

#: The flat modules of agents/vlm before the rooms -> where each went.
MOVED = {
    "agents.vlm.policy": "agents.vlm.policies.policy",
    "agents.vlm.codec": "agents.vlm.policies.codec",
    "agents.vlm.hf": "agents.vlm.policies.hf",
    "agents.vlm.prefix_cache": "agents.vlm.policies.prefix_cache",
    "agents.vlm.tiny": "agents.vlm.policies.tiny",
    "agents.vlm.openai_policy": "agents.vlm.policies.openai_policy",
    "agents.vlm.chat": "agents.vlm.rollout.chat",
    "agents.vlm.trajectory": "agents.vlm.rollout.trajectory",
    "agents.vlm.env_pool": "agents.vlm.rollout.env_pool",
    "agents.vlm.serve": "agents.vlm.serving.server",
    "agents.vlm.remote": "agents.vlm.serving.client",
    "agents.vlm.evaluate": "agents.vlm.workbench.evaluate",
    "agents.vlm.demos": "agents.vlm.workbench.demos",
    "agents.vlm.store": "agents.vlm.workbench.store",
    "agents.vlm.viewer": "agents.vlm.workbench.viewer",
    "agents.vlm.agent": "agents.vlm.workbench.agent",
}


class _MovedLoader(importlib.abc.Loader):
    """Loads an old name as the module it moved to: the same module object, not a copy."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system has just set the old name's spec on the module: give it back its own
        module.__spec__ = self._spec

    def get_code(self, fullname: str) -> CodeType | None:
        """The moved module's code (``python -m agents.vlm.workbench.viewer`` runs it)."""
        spec = importlib.util.find_spec(self.target)
        loader = spec.loader if spec is not None else None
        get_code = getattr(loader, "get_code", None)
        return get_code(self.target) if get_code is not None else None


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old names of :data:`MOVED` (installed first on ``sys.meta_path`` by this package)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} is now {new}: import it from there", DeprecationWarning, stacklevel=2)
        found = importlib.util.find_spec(new)
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(new), origin=found.origin if found else None)


if not any(type(finder).__name__ == _MovedFinder.__name__ for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedFinder())
