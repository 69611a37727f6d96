"""The GRPO trainer on CPU with the tiny model: updates, masks, checkpoints and resume, every family."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.vlm.grpo.config import LoraSpec, TrainConfig
from agents.vlm.grpo.loss import LossConfig
from agents.vlm.grpo.trainer import GRPOTrainer, completion_logprobs, load_policy_for_training, step_states
from agents.vlm.rollout import RolloutStats

FAST = TrainConfig(
    model="tiny",
    env_id="visrl/ShapeColor-v0",
    env_kwargs={"size": 56, "max_attempts": 1},
    tasks_per_step=2,
    group_size=4,
    max_new_tokens=6,
    steps=2,
    learning_rate=1e-3,
    save_every=1,
    report_to=(),
)


def _with_spread_rewards(trainer: GRPOTrainer) -> list:
    """A real rollout whose rewards are rigged to differ within each group (the random tiny model
    only writes malformed answers, whose rewards are all equal)."""
    runs, _, _ = trainer.rollouts(0, RolloutStats())
    for k, run in enumerate(runs):
        run.steps[-1].reward = float(k % 2)
    return runs


def test_an_update_changes_every_trainable_parameter_and_the_first_ratio_is_one(tmp_path: Path) -> None:
    trainer = GRPOTrainer(replace(FAST, output_dir=str(tmp_path)))
    runs = _with_spread_rewards(trainer)
    before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if p.requires_grad}
    metrics = trainer.update(runs)
    assert metrics["ratio/mean"] == 1.0 and metrics["ratio/min"] == 1.0, "on-policy: exactly 1 before the update"
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    unchanged = [n for n, p in trainer.policy.model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, f"parameters the update did not reach: {unchanged[:5]}"


def test_the_update_moves_logprobs_with_the_advantage(tmp_path: Path) -> None:
    trainer = GRPOTrainer(replace(FAST, output_dir=str(tmp_path), learning_rate=3e-4))
    runs = _with_spread_rewards(trainer)
    advantages = trainer.advantages(runs)

    def summed() -> torch.Tensor:
        with torch.no_grad():
            logprobs, mask = completion_logprobs(trainer.policy, trainer.model, runs, 1.0)
        return (logprobs * mask).sum(1)

    before = summed()
    assert torch.allclose(before, torch.tensor([sum(r.logprobs) for r in runs]), atol=1e-3), "scored as generated"
    trainer.update(runs)
    delta = summed() - before
    assert delta[advantages > 0].mean() > 0 > delta[advantages < 0].mean()


def test_env_tokens_do_not_reach_the_loss(tmp_path: Path) -> None:
    """Multi-turn Jigsaw trajectories hold env tokens: their logprobs never count (mask 0)."""
    config = replace(FAST, env_id="visrl/Jigsaw-v1", env_kwargs={"size": 84}, max_turns=2, output_dir=str(tmp_path))
    trainer = GRPOTrainer(config)
    runs, _, _ = trainer.rollouts(0, RolloutStats())
    assert any(0 in r.mask[r.mask.index(1) :] for r in runs), "the rollouts have env tokens between model turns"
    logprobs, mask = completion_logprobs(trainer.policy, trainer.model, runs, 1.0)
    for row, run in enumerate(runs):
        assert mask[row, : len(run.mask)].tolist() == [float(m) for m in run.mask]
        assert mask[row, len(run.mask) :].sum() == 0
        model = mask[row].bool()
        assert np.allclose(
            logprobs[row][model].detach().numpy(), np.array(run.logprobs)[np.array(run.mask) == 1], atol=1e-4
        )


def test_checkpoint_resume_continues_the_same_run(tmp_path: Path) -> None:
    """Two steps straight equal one step, a checkpoint, a fresh trainer resumed, one more step."""
    straight = GRPOTrainer(replace(FAST, output_dir=str(tmp_path / "a")))
    straight.train()
    first = GRPOTrainer(replace(FAST, output_dir=str(tmp_path / "b"), steps=1))
    first.train()
    resumed = GRPOTrainer(replace(FAST, output_dir=str(tmp_path / "b")))
    resumed.resume(tmp_path / "b" / "checkpoint-1")
    assert resumed.step == 1
    resumed.train()
    for (name, a), (_, b) in zip(
        straight.policy.model.named_parameters(), resumed.policy.model.named_parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    assert (tmp_path / "b" / "checkpoint-2" / "model" / "config.json").exists()
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_lora_with_a_kl_penalty_trains_only_the_adapters(tmp_path: Path) -> None:
    config = replace(
        FAST, output_dir=str(tmp_path), lora=LoraSpec(r=4, alpha=8), loss=LossConfig(beta=0.04), credit="step"
    )
    trainer = GRPOTrainer(config)
    trainable = [n for n, p in trainer.policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    runs = _with_spread_rewards(trainer)
    metrics = trainer.update(runs)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6), "the first update starts at the reference"
    trainer.update(runs)
    assert trainer.update(runs)["kl"] > 0
    saved = trainer.save_model(tmp_path / "merged")
    from agents.vlm.policies.hf import HFPolicy

    assert HFPolicy.from_pretrained(saved).model.config.model_type == "qwen2_5_vl"


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("visrl/SvgRender-v1", {"size": 64}), ("visrl/Jigsaw-v1", {"size": 84}), ("visrl/ShapeColor-v0", {"size": 56})],
)
def test_a_short_run_on_every_family_checkpoints_and_resumes(tmp_path: Path, env_id: str, kwargs: dict) -> None:
    config = replace(FAST, env_id=env_id, env_kwargs=kwargs, max_turns=2, steps=1, output_dir=str(tmp_path))
    GRPOTrainer(config).train()
    resumed = GRPOTrainer(replace(config, steps=2))
    resumed.resume(tmp_path / "checkpoint-1")
    reports = resumed.train()
    assert [r.step for r in reports] == [2] and np.isfinite(reports[0].reward)
    assert (tmp_path / "checkpoint-2" / "trainer_state.json").exists()


def test_step_states_group_the_steps_that_saw_the_same_observation(tmp_path: Path) -> None:
    trainer = GRPOTrainer(
        replace(FAST, env_id="visrl/Jigsaw-v1", env_kwargs={"size": 84}, max_turns=2, output_dir=str(tmp_path))
    )
    runs, _, _ = trainer.rollouts(0, RolloutStats())
    first = [step_states(r)[0] for r in runs]
    assert first[0] == first[1] and first[0] != first[trainer.config.group_size], "members share their first state"


def test_config_files_are_checked_by_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: tiny\nsteps: 3\nloss: {loss_type: grpo, epsilon_high: 0.28}\nlora: {r: 8}\n")
    config = TrainConfig.from_yaml(path)
    assert config.steps == 3 and config.loss.loss_type == "grpo" and config.lora == LoraSpec(r=8)
    path.write_text("model: tiny\nstep: 3\n")
    with pytest.raises(ValueError, match="unknown config keys \\['step'\\]"):
        TrainConfig.from_yaml(path)
    path.write_text("loss: {loss: dapo}\n")
    with pytest.raises(ValueError, match="unknown loss keys"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match="group_size"):
        TrainConfig(group_size=1)
    with pytest.raises(ValueError, match="prefix_cache_gb"):
        TrainConfig(prefix_cache_gb=-1)
    assert load_policy_for_training(TrainConfig(prefix_cache_gb=0)).prefix_cache is None
    assert load_policy_for_training(TrainConfig(prefix_cache_gb=0.5)).prefix_cache.max_bytes == 2**29
    shipped = TrainConfig.from_yaml(Path(__file__).parent.parent / "configs" / "grpo_shapecolor_tiny.yaml")
    assert shipped.env_id == "visrl/ShapeColor-v0"


def test_metrics_are_means_over_micro_batches(tmp_path: Path) -> None:
    """With several micro-batches (dapo, the default) the ratio and clip metrics stay means, not sums."""
    trainer = GRPOTrainer(replace(FAST, output_dir=str(tmp_path), micro_batch=3))
    metrics = trainer.update(_with_spread_rewards(trainer))
    assert metrics["ratio/mean"] == pytest.approx(1.0) and 0.0 <= metrics["clip_ratio/region_mean"] <= 1.0


def test_the_sampler_mismatch_is_measured_and_corrected(tmp_path: Path) -> None:
    """In-process fp32 generation is the trainer's own distribution: the gap is float noise and the
    weights are 1. A sampler that put less mass on the sampled tokens (log-probabilities 0.5 lower,
    as another engine might) gets weights exp(0.5) per token, clipped at the cap."""
    config = replace(
        FAST, output_dir=str(tmp_path), importance_sampling_correction=True, importance_sampling_mode="token_truncate"
    )
    trainer = GRPOTrainer(config)
    runs = _with_spread_rewards(trainer)
    with torch.no_grad():
        logprobs, mask = completion_logprobs(trainer.policy, trainer.model, runs, 1.0)  # before the update
    metrics = trainer.update(runs)
    assert metrics["sampling/logprob_gap"] < 1e-4
    assert metrics["sampling/importance_sampling_ratio"] == pytest.approx(1.0)
    for run in runs:
        run.logprobs = [lp - 0.5 * m for lp, m in zip(run.logprobs, run.mask, strict=True)]
    weights, gap = trainer._sampling_weights(logprobs, runs, mask)
    assert gap["sampling/logprob_gap"] == pytest.approx(0.5, abs=1e-3)
    assert torch.allclose(weights[mask.bool()], torch.tensor(np.exp(0.5), dtype=weights.dtype), atol=1e-3)
    capped = replace(config, importance_sampling_clip_max=1.2)
    trainer.config = capped
    weights, _ = trainer._sampling_weights(logprobs, runs, mask)
    assert torch.allclose(weights[mask.bool()], torch.tensor(1.2, dtype=weights.dtype))
    with pytest.raises(ValueError, match="importance_sampling_mode"):
        replace(config, importance_sampling_mode="tokens")


def test_periodic_evaluation_reaches_the_logs(tmp_path: Path) -> None:
    config = replace(FAST, output_dir=str(tmp_path), steps=2, eval_every=2, eval_episodes=4, save_every=0)
    reports = GRPOTrainer(config).train()
    assert np.isnan(reports[0].eval_score) and 0.0 <= reports[1].eval_score <= 1.0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "eval_score" not in lines[0] and lines[1]["eval_score"] == reports[1].eval_score
    assert np.isfinite(lines[1]["logprob_gap"]) and lines[1]["kl"] is None, "strict JSON: no NaN"
    # one turn, 2 tasks x 4 samples, the cache emptied by each update: each task's prompt is encoded once
    assert [line["prompt_encoded"] for line in lines] == [0.25, 0.25]
