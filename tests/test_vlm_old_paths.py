"""The flat module paths of agents/vlm before its rooms still import: as the moved modules themselves."""

from __future__ import annotations

import importlib
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.vlm import MOVED

ROOT = Path(__file__).resolve().parents[1]

#: Every module path of agents/vlm before the rooms, the path it has now, and names users import from it.
OLD_PATHS = {
    "agents.vlm.policy": ("agents.vlm.policies.policy", ("Sampling", "ChatPolicy", "TokenPrompt", "Completion")),
    "agents.vlm.codec": ("agents.vlm.policies.codec", ("ProcessorCodec", "image_key")),
    "agents.vlm.hf": ("agents.vlm.policies.hf", ("HFPolicy", "load_processor", "gather_logprobs")),
    "agents.vlm.prefix_cache": ("agents.vlm.policies.prefix_cache", ("PrefixCache", "cached_generate")),
    "agents.vlm.tiny": ("agents.vlm.policies.tiny", ("build_tiny_vlm", "VISION_TOKENS")),
    "agents.vlm.openai_policy": ("agents.vlm.policies.openai_policy", ("OpenAIPolicy", "PolicyError")),
    "agents.vlm.chat": ("agents.vlm.rollout.chat", ("ChatFormatter", "assistant_message", "images_of", "render")),
    "agents.vlm.trajectory": ("agents.vlm.rollout.trajectory", ("Trajectory", "Step")),
    "agents.vlm.env_pool": ("agents.vlm.rollout.env_pool", ("make_text_env", "InlineEnvs", "env_kwargs_argument")),
    "agents.vlm.serve": ("agents.vlm.serving.server", ("PolicyServer", "Limits", "ApiError", "parse_messages")),
    "agents.vlm.remote": ("agents.vlm.serving.client", ("RemotePolicy", "GENERATE_ROUTE", "WEIGHTS_ROUTE")),
    "agents.vlm.evaluate": ("agents.vlm.workbench.evaluate", ("evaluate", "add_arguments", "run")),
    "agents.vlm.demos": ("agents.vlm.workbench.demos", ("load_demos", "write_demos", "DemoCollator")),
    "agents.vlm.store": ("agents.vlm.workbench.store", ("save_trajectories", "load_trajectories", "transcript")),
    "agents.vlm.viewer": ("agents.vlm.workbench.viewer", ("write_viewer", "add_arguments", "run")),
    "agents.vlm.agent": ("agents.vlm.workbench.agent", ("load_policy", "VlmAgent")),
}


def test_every_old_path_is_served() -> None:
    assert {old: new for old, (new, _) in OLD_PATHS.items()} == MOVED


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_path_imports_the_moved_module_itself(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new, names = OLD_PATHS[old]
    moved = importlib.import_module(new)
    monkeypatch.delitem(sys.modules, old, raising=False)  # so that this import goes through the finder
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} is now {new}")):
        module = importlib.import_module(old)
    assert module is moved and sys.modules[old] is moved
    assert module.__name__ == new and module.__spec__ is not None and module.__spec__.name == new
    space: dict[str, object] = {}
    exec(f"from {old} import {', '.join(names)}", space)
    for name in names:
        assert space[name] is getattr(moved, name), name


def test_the_rollout_module_became_the_room_that_re_exports_the_collector() -> None:
    from agents.vlm.rollout import ENV_RUNNERS, RolloutStats, collect, collector, json_safe, make_pool

    assert (collect, make_pool, RolloutStats, json_safe, ENV_RUNNERS) == (
        collector.collect,
        collector.make_pool,
        collector.RolloutStats,
        collector.json_safe,
        collector.ENV_RUNNERS,
    )


def test_pickles_made_under_an_old_path_load_as_the_moved_classes() -> None:
    from agents.vlm.rollout.trajectory import Step, Trajectory

    step = Step("A", 1.0, True, False, {"score": 1.0}, "", 0)
    trajectory = Trajectory("visrl/ShapeColor-v0", 3, 0, 1, steps=[step])
    data = pickle.dumps(trajectory, protocol=0)
    assert b"agents.vlm.rollout.trajectory" in data  # new pickles name the new module
    old = data.replace(b"agents.vlm.rollout.trajectory", b"agents.vlm.trajectory")
    sys.modules.pop("agents.vlm.trajectory", None)
    with pytest.warns(DeprecationWarning):
        loaded = pickle.loads(old)
    assert type(loaded) is Trajectory and type(loaded.steps[0]) is Step and loaded == trajectory


@pytest.mark.parametrize("module", ["agents.vlm.viewer", "agents.vlm.workbench.viewer"])
def test_python_dash_m_runs_the_viewer_under_either_name(module: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module, str(tmp_path / "missing")], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 1 and "visrl view:" in out.stderr, out.stderr
