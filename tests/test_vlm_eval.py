"""VLM policies as users evaluate them: ``visrl eval`` in-process and over HTTP, the benchmark agent."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

from agents.vlm.policies.hf import HFPolicy
from agents.vlm.policies.policy import Sampling
from agents.vlm.serving.server import PolicyServer
from agents.vlm.workbench.agent import VlmAgent, load_policy
from benchmarks.run_baselines import AGENTS, EnvConfig, run_cell
from tests.conftest import ENV_IDS
from visrl_envs.cli import main


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    return HFPolicy.tiny(seed=0)


def test_visrl_eval_with_the_tiny_policy_runs_over_every_id(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["eval", "--env", "all", "--policy", "tiny", "--episodes", "2", "--batch", "2", "--max-new-tokens", "16"]
    code = main([*argv, "--max-turns", "2", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["env_id"] for r in rows] == ENV_IDS
    for row in rows:
        assert row["episodes"] + row["env_errors"] == 2 and row["policy"] == "tiny"
        assert 0.0 <= row["score_low"] <= row["score"] <= row["score_high"] <= 1.0
    assert (tmp_path / "index.html").exists() and (tmp_path / "trajectories.jsonl").exists()
    out = capsys.readouterr().out
    assert "score [95% CI]" in out and "visrl/Jigsaw-v1" in out


def test_visrl_eval_through_an_openai_compatible_server_on_localhost(policy: HFPolicy, tmp_path: Path) -> None:
    with PolicyServer(policy, "tiny") as server:
        url = server.url
        argv = ["eval", "--env", "all", "--policy", f"openai:tiny@{url}", "--episodes", "1", "--max-turns", "2"]
        code = main([*argv, "--max-new-tokens", "12", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["env_id"] for r in rows] == ENV_IDS and all(r["policy"] == "openai:tiny" for r in rows)


def test_greedy_http_and_in_process_first_turns_agree(policy: HFPolicy) -> None:
    """The same greedy policy answers a first turn alike here and behind the server. (Later turns may
    differ: over HTTP the history goes back as text and is re-tokenised, which is why training
    rollouts use the token-level policy.)"""
    from agents.vlm.workbench.evaluate import evaluate

    sampling = Sampling(0, max_new_tokens=12)
    _, local = evaluate(policy, "visrl/Jigsaw-v1", 3, sampling=sampling, max_turns=1)
    with PolicyServer(policy, "tiny") as server:
        remote_policy = load_policy(f"openai:tiny@{server.url}")
        _, remote = evaluate(remote_policy, "visrl/Jigsaw-v1", 3, sampling=sampling, max_turns=1)
        remote_policy.close()
    assert [t.steps[0].action for t in local] == [t.steps[0].action for t in remote]
    assert [t.steps[0].reward for t in local] == [t.steps[0].reward for t in remote]


def test_the_vlm_agent_plugs_into_the_benchmark_runner(policy: HFPolicy) -> None:
    agents = {**AGENTS, "vlm:tiny": lambda: VlmAgent(policy, Sampling(0, max_new_tokens=12))}
    cell = run_cell(EnvConfig("visrl/JigsawPair-v1"), "text", 0, "vlm:tiny", 3, agents)
    assert cell.agent == "vlm:tiny" and cell.episodes == 3 and 0.0 <= cell.score <= 1.0


def test_the_vlm_agent_refuses_the_numeric_interface(policy: HFPolicy) -> None:
    env = gym.make("visrl/Jigsaw-v1", action_mode="numeric")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="text interface"):
        VlmAgent(policy).reset(env, seed=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "visrl/Nope-v1", "--policy", "tiny"], "unknown env"),
        (["--env", "visrl/Jigsaw-v1", "--policy", "gpt"], "unknown policy"),
        (["--env", "visrl/Jigsaw-v1", "--policy", "tiny:x"], "integer seed"),
        (["--env", "visrl/Jigsaw-v1", "--policy", "hf:/nonexistent"], "not a model directory"),
        (["--env", "visrl/Jigsaw-v1", "--policy", "openai:nourl"], "openai"),
        (["--env", "visrl/Jigsaw-v1", "--policy", "tiny", "--episodes", "0"], ">= 1"),
        (["--env", "visrl/Jigsaw-v1", "--policy", "tiny", "--difficulty", "9", "--episodes", "1"], "difficulty"),
    ],
)
def test_bad_eval_arguments_get_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("visrl eval: ") and message in err[0]


def test_demos_and_view_are_reachable_from_the_visrl_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demos", "--env", "visrl/JigsawPair-v1", "--episodes", "2", "--out", str(tmp_path / "demos")]) == 0
    from agents.vlm.workbench.demos import load_demos

    assert len(load_demos(tmp_path / "demos")) == 2
    argv = ["eval", "--env", "visrl/JigsawPair-v1", "--policy", "tiny", "--episodes", "1", "--max-new-tokens", "8"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["view", str(tmp_path / "run"), "--print", "1"]) == 0
    assert "visrl/JigsawPair-v1" in capsys.readouterr().out
