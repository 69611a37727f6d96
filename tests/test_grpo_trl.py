"""TRL's GRPOTrainer (1.16) on visrl envs through :mod:`agents.vlm.grpo.trl_adapter`, on CPU with the tiny model.

The end-to-end runs check what the adapter promises TRL: the ids TRL trains on are the ones the
policy generated (re-scoring reproduces the returned log-probabilities, and TRL's own forward pass
over our ids and its pixels gives the same numbers up to the suppressed vision tokens), env tokens
are out of TRL's loss mask, TRL's advantages come from the env rewards, and an update happens."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from agents.vlm.grpo.trl_adapter import (  # noqa: E402
    TASK_KEY,
    VisrlRollout,
    _FirstTurnImagesOnly,
    visrl_env_reward,
    visrl_prompt_dataset,
    visrl_rollout_func,
)
from agents.vlm.policies.hf import HFPolicy, load_processor  # noqa: E402
from agents.vlm.policies.logprobs import gather_logprobs  # noqa: E402
from agents.vlm.policies.tiny import build_tiny_vlm  # noqa: E402
from agents.vlm.rollout.chat import ChatFormatter  # noqa: E402
from agents.vlm.rollout.env_pool import InlineEnvs, make_text_env  # noqa: E402
from agents.vlm.rollout.trajectory import Trajectory  # noqa: E402

SHAPES = ("visrl/ShapeColor-v0", {"size": 56, "max_attempts": 1})
JIGSAW = ("visrl/Jigsaw-v1", {"size": 84})
SWAP = '<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 2}}</tool_call>'


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm().save_pretrained(tmp_path_factory.mktemp("tiny"))


@dataclass
class Recorder:
    """Wraps the adapter: re-scores each returned batch before TRL updates the model, then rigs the
    env rewards to differ within each group (the random tiny model only writes malformed answers,
    whose rewards tie, so TRL's advantages would all be 0 and no update would happen)."""

    rollout: VisrlRollout
    policy: HFPolicy
    temperature: float
    batches: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        out = self.rollout(prompts, trainer)
        runs = list(self.rollout.last_trajectories)
        with torch.no_grad():
            rescored = self.policy.token_logprobs([t.sequence() for t in runs], self.temperature)
            full = []  # TRL's distribution: all tokens, vision specials included
            for t in runs:
                batch = self.policy.model_inputs([t.sequence()])
                logits = self.policy.model(**batch).logits
                lp = gather_logprobs(logits[:, :-1], batch["input_ids"][:, 1:], self.temperature)[0]
                full.append(lp[len(t.prompt_ids) - 1 :].double().numpy())
        record = {k: list(v) for k, v in out.items()}
        self.batches.append({"prompts": prompts, "out": record, "runs": runs, "rescored": rescored, "full": full})
        out["env_reward"] = [float(k % 2) for k in range(len(prompts))]
        return out


def _train(tiny_dir: Path, tmp_path: Path, env: tuple[str, dict[str, Any]], **rollout_kwargs: Any) -> SimpleNamespace:
    from trl import GRPOConfig, GRPOTrainer

    env_id, env_kwargs = env
    tiny = build_tiny_vlm()
    processor = load_processor(tiny_dir)
    model = tiny.model
    temperature = 0.9
    dataset = visrl_prompt_dataset(env_id, 4, env_kwargs=env_kwargs)
    recorder = Recorder(
        visrl_rollout_func(env_id, env_kwargs, **rollout_kwargs), HFPolicy(model, processor), temperature
    )
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        temperature=temperature,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        report_to=[],
        use_vllm=False,
        save_strategy="no",
        logging_steps=1,
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=visrl_env_reward,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        rollout_func=recorder,
    )
    scored: list[dict[str, Any]] = []  # TRL's batches after generation (loss mask, advantages)
    forwards: list[tuple[Any, Any, int, Any]] = []  # TRL's log-prob passes: ids, attention, kept, logps

    generate_and_score = trainer._generate_and_score_completions
    logps = trainer._get_per_token_logps_and_entropies

    def spy_scored(inputs: Any) -> Any:
        out = generate_and_score(inputs)
        scored.append(out)
        return out

    def spy_logps(model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, *a: Any, **k: Any) -> Any:
        out = logps(model, input_ids, attention_mask, logits_to_keep, *a, **k)
        forwards.append((input_ids, attention_mask, logits_to_keep, out[0].detach()))
        return out

    trainer._generate_and_score_completions = spy_scored  # type: ignore[method-assign]
    trainer._get_per_token_logps_and_entropies = spy_logps  # type: ignore[method-assign]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    return SimpleNamespace(
        trainer=trainer,
        recorder=recorder,
        scored=scored,
        forwards=forwards,
        changed=changed,
        before=before,
        task_seeds=dict(zip(dataset["seed"], dataset["task_seed"], strict=True)),
    )


def _check_run(run: SimpleNamespace, steps: int) -> None:
    recorder: Recorder = run.recorder
    assert recorder.rollout.calls == steps and len(recorder.batches) == steps
    losses = [h["loss"] for h in run.trainer.state.log_history if "loss" in h]
    assert len(losses) == steps and all(np.isfinite(losses))
    assert len(run.changed) == len(run.before), "every trainable parameter moves"

    for batch, scored in zip(recorder.batches, run.scored, strict=True):
        runs: list[Trajectory] = batch["runs"]
        out = batch["out"]
        # TRL hands over its generation batch with each prompt already repeated num_generations times.
        seeds = [json.loads(p[0][TASK_KEY])["seed"] for p in batch["prompts"]]
        assert seeds[0::2] == seeds[1::2]
        assert [t.task_seed for t in runs] == [run.task_seeds[s] for s in seeds], "each prompt is its row's task"
        # The env's returns, before the test rigged them.
        assert out["env_reward"] == [t.total_reward for t in runs]
        # Token-exact: re-scoring the whole sequence reproduces the returned log-probabilities.
        assert out["prompt_ids"] == [t.prompt_ids for t in runs]
        assert out["completion_ids"] == [t.completion_ids for t in runs] and out["env_mask"] == [t.mask for t in runs]
        for t, lp, rescored in zip(runs, out["logprobs"], batch["rescored"], strict=True):
            mask = np.array(t.mask, dtype=bool)
            np.testing.assert_allclose(np.array(lp)[mask], rescored[len(t.prompt_ids) :][mask], atol=1e-4)
            assert not np.any(np.array(lp)[~mask]), "env tokens carry no log-probability"
        # TRL's loss mask is our mask: env tokens (and padding) are out of the loss.
        loss_mask = (scored["completion_mask"] * scored["tool_mask"]).numpy()
        for row, t in enumerate(runs):
            n = len(t.completion_ids)
            assert scored["completion_ids"][row, :n].tolist() == t.completion_ids
            assert loss_mask[row, :n].tolist() == t.mask and not loss_mask[row, n:].any()
        # TRL's advantages come from env_reward (rigged to 0/1 within each pair).
        advantages = scored["advantages"].numpy()
        assert np.all((advantages > 0) == (np.arange(len(runs)) % 2 == 1))

    # TRL's forward over our ids and its own pixels scores the model tokens as we do (ours exclude
    # the suppressed vision tokens from the softmax; "full" is the same forward without that).
    sequences = {
        tuple(t.ids): (t, full) for b in recorder.batches for t, full in zip(b["runs"], b["full"], strict=True)
    }
    compared = 0
    for input_ids, attention, _kept, values in run.forwards[:1]:  # the first: before any update
        for row in range(input_ids.shape[0]):
            ids = input_ids[row][attention[row].bool()].tolist()
            t, full = sequences[tuple(ids)]
            mask = np.array(t.mask, dtype=bool)
            ours = values[row, : len(t.completion_ids)].double().numpy()
            np.testing.assert_allclose(ours[mask], full[mask], atol=1e-4)
            compared += 1
    assert compared == len(recorder.batches[0]["runs"])


def test_trl_grpo_single_turn_env(tiny_dir: Path, tmp_path: Path) -> None:
    run = _train(tiny_dir, tmp_path, SHAPES)
    _check_run(run, steps=2)


def test_trl_grpo_multi_turn_env_masks_env_tokens(tiny_dir: Path, tmp_path: Path) -> None:
    run = _train(tiny_dir, tmp_path, JIGSAW, max_turns=2, feedback_images="truncate")
    _check_run(run, steps=2)
    runs = [t for b in run.recorder.batches for t in b["runs"]]
    assert any(len(t.steps) == 2 for t in runs), "some episode has a second turn"
    assert any(0 in t.mask for t in runs), "env tokens are in the completions (and masked)"
    # TRL counts only model tokens as completion length when env_mask is given.
    lengths = [h["completions/mean_length"] for h in run.trainer.state.log_history if "completions/mean_length" in h]
    expected = [np.mean([sum(t.mask) for t in b["runs"]]) for b in run.recorder.batches]
    np.testing.assert_allclose(lengths, expected, rtol=1e-6)


# --- the pieces, without training -------------------------------------------------------------


def test_the_dataset_rows_are_env_resets_in_trls_conversational_format() -> None:
    env_id, env_kwargs = SHAPES
    rows = visrl_prompt_dataset(env_id, 3, split="test", env_kwargs=env_kwargs, seeds=[7, 8, 9])
    assert rows.column_names == ["prompt", "images", "env_id", "seed", "task_seed", "split", "difficulty"]
    assert rows["seed"] == [7, 8, 9] and set(rows["split"]) == {"test"}
    env = make_text_env(env_id, {**env_kwargs, "split": "test", "difficulty": 0})
    obs, info = env.reset(seed=8)
    row = rows[1]
    assert row["task_seed"] == info["task_seed"]
    assert trl.data_utils.is_conversational(row)
    assert np.array_equal(np.asarray(row["images"][0]), obs["images"][0])
    parts = row["prompt"][0]["content"]
    assert [p["type"] for p in parts] == ["image", "text"] and parts[1]["text"].startswith("What colour")
    assert '"seed": 8' in row["prompt"][0][TASK_KEY]


def test_the_dataset_refuses_what_trl_cannot_render() -> None:
    with pytest.raises(ValueError, match="tools_in_template=False"):
        visrl_prompt_dataset(JIGSAW[0], 1, env_kwargs=JIGSAW[1], formatter=ChatFormatter(tools_in_template=True))
    with pytest.raises(ValueError, match="per row"):
        visrl_prompt_dataset("visrl/ShapeColor-v0", 1, env_kwargs={"difficulty": 1})


def test_prompts_must_carry_the_matching_task() -> None:
    env_id, env_kwargs = SHAPES
    prompt = visrl_prompt_dataset(env_id, 1, env_kwargs=env_kwargs)[0]["prompt"]
    assert VisrlRollout(env_id, env_kwargs)._tasks([prompt])[0]["seed"] == 0
    with pytest.raises(ValueError, match="env_kwargs"):
        VisrlRollout(env_id, {"size": 64, "max_attempts": 1})._tasks([prompt])
    with pytest.raises(ValueError, match="runs visrl/Jigsaw-v1"):
        VisrlRollout("visrl/Jigsaw-v1", env_kwargs)._tasks([prompt])
    with pytest.raises(ValueError, match="visrl_prompt_dataset"):
        VisrlRollout(env_id, env_kwargs)._tasks([[{"role": "user", "content": "hi"}]])


def test_a_prompt_trl_renders_differently_is_refused(tiny_dir: Path) -> None:
    env_id, env_kwargs = SHAPES
    processor = load_processor(tiny_dir)
    row = visrl_prompt_dataset(env_id, 1, env_kwargs=env_kwargs)[0]
    prompt = trl.data_utils.prepare_multimodal_messages(row["prompt"], row["images"])
    env = make_text_env(env_id, {**env_kwargs, "split": "train", "difficulty": 0})
    obs, info = env.reset(seed=0)
    trainer = SimpleNamespace(processing_class=processor, tools=None, chat_template_kwargs={})
    policy = HFPolicy(build_tiny_vlm().model, processor)

    def trajectory(formatter: ChatFormatter) -> Trajectory:
        start = policy.codec.start(formatter.start(obs, info["prompt_spec"]), None)
        return Trajectory(env_id, 0, 0, 0, prompt_ids=start.ids, images=start.images, prompt_images=len(start.images))

    rollout = VisrlRollout(env_id, env_kwargs)
    rollout._check_prompt(trainer, prompt, trajectory(ChatFormatter(tools_in_template=False)))
    with pytest.raises(ValueError, match="TRL renders the prompt"):
        rollout._check_prompt(trainer, prompt, trajectory(ChatFormatter(tools_in_template=False, system="Be brief.")))


def test_an_image_after_the_first_turn_raises_or_ends_the_episode() -> None:
    env_id, env_kwargs = JIGSAW

    def pool(mode: str) -> _FirstTurnImagesOnly:
        wrapped = _FirstTurnImagesOnly(InlineEnvs(lambda: make_text_env(env_id, env_kwargs), 2), env_id, mode)
        wrapped.reset([3, 3])
        return wrapped

    strict = pool("error")
    assert not strict.step({0: "no action here"})[0][3], "text feedback passes"
    with pytest.raises(ValueError, match="feedback_images='truncate'"):
        strict.step({1: SWAP})
    strict.close()
    cut = pool("truncate")
    obs, reward, terminated, truncated, info = cut.step({0: SWAP})[0]
    assert obs["images"] and truncated and not terminated and info["trl_feedback_image_cut"]
    cut.close()


def test_unsupported_trainer_settings_are_refused() -> None:
    trainer = SimpleNamespace(
        use_vllm=True, tools=[print], min_p=0.1, repetition_penalty=1.1, args=SimpleNamespace(generation_kwargs={})
    )
    with pytest.raises(ValueError, match=r"use_vllm.*tools.*min_p.*repetition_penalty"):
        VisrlRollout._check_trainer(trainer)
    with pytest.raises(ValueError, match="feedback_images"):
        VisrlRollout(*SHAPES, feedback_images="drop")  # type: ignore[arg-type]


def test_the_reward_function_returns_env_rewards() -> None:
    logged: dict[str, float] = {}
    rewards = visrl_env_reward(
        ["p", "p"],
        ["a", "b"],
        env_reward=[0.5, None],
        env_score=[1.0, 0.0],
        env_success=[True, False],
        log_metric=logged.__setitem__,
    )
    assert rewards == [0.5, None] and logged == {"env/score": 0.5, "env/success": 0.5}
    with pytest.raises(ValueError, match="env_reward"):
        visrl_env_reward(["p"], ["a"])
