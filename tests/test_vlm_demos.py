"""``visrl demos``: oracle episodes of every id as chat SFT data that loads with datasets and trains with TRL."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import datasets
import gymnasium as gym
import numpy as np
import pytest

from agents.vlm.policies.codec import render
from agents.vlm.rollout.chat import ChatFormatter, assistant_message
from agents.vlm.rollout.env_pool import env_kwargs_argument
from agents.vlm.workbench.demos import (
    META_FILE,
    DemoCollator,
    add_arguments,
    load_demos,
    oracle_episode,
    read_meta,
    run,
    write_demos,
)
from tests.conftest import ENV_IDS

EPISODES = 2


def _replay(env: gym.Env, seed: int) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]], float]:
    """Play the oracle again from scratch: the observations before each action, the actions, the infos
    (reset's first) and the total reward."""
    obs, info = env.reset(seed=seed)
    observations, actions, infos, total, done = [obs], [], [info], 0.0, False
    while not done:
        actions.append(env.unwrapped.oracle_text())  # type: ignore[attr-defined]
        obs, reward, terminated, truncated, info = env.step(actions[-1])
        infos.append(info)
        total += float(reward)
        done = terminated or truncated
        if not done:
            observations.append(obs)
    return observations, actions, infos, total


def _images(observations: list[dict[str, Any]]) -> list[np.ndarray]:
    return [image for obs in observations for image in obs["images"]]


def _image_parts(messages: list[dict[str, Any]]) -> int:
    return sum(part["type"] == "image" for m in messages for part in m["content"])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_demos_of_every_id_load_back_exactly(env_id: str, tmp_path: Path) -> None:
    out = write_demos(env_id, EPISODES, tmp_path / "demos", seed=3, progress=False)
    meta = read_meta(out)
    cache = tmp_path / "cache"
    by_helper = load_demos(out, cache_dir=cache)
    by_card = datasets.load_dataset(str(out), split="train", cache_dir=str(cache))
    by_glob = datasets.load_dataset("parquet", data_files=f"{out}/data/*.parquet", split="train", cache_dir=str(cache))
    assert len(by_helper) == len(by_card) == len(by_glob) == EPISODES == meta["episodes"]
    assert by_card.features == by_helper.features == by_glob.features
    assert meta["succeeded"] == sum(by_helper["success"])
    env = gym.make(env_id, action_mode="text")
    for index, row in enumerate(by_helper):
        assert by_card[index]["messages"] == row["messages"] and by_glob[index]["task_seed"] == row["task_seed"]
        observations, actions, infos, total = _replay(env, row["seed"])
        images, spec, info = _images(observations), infos[0]["prompt_spec"], infos[-1]
        assert row["seed"] == 3 + index and row["env_id"] == env_id and row["task_seed"] == info["task_seed"]
        assert len(row["images"]) == len(images) == _image_parts(row["messages"])
        for loaded, shown in zip(row["images"], images, strict=True):
            assert np.array_equal(np.asarray(loaded), shown), "images are pixel-identical to the observations"
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] * len(actions), "no feedback turn after the last action"
        assistant = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
        assert assistant == actions and row["turns"] == len(actions)
        assert row["score"] == info["score"] and row["success"] == info["success"]
        assert row["total_reward"] == pytest.approx(total) and row["env_error"] is None
        assert (json.loads(row["tools"]) if row["tools"] else []) == json.loads(json.dumps(list(spec.tools)))
    env.close()
    if env_id == "visrl/SvgRender-v1":
        assert all(by_helper["success"]) and by_helper["score"] == [1.0] * EPISODES, "the oracle is the target"


def test_the_first_turn_is_what_the_policy_sees() -> None:
    env = gym.make("visrl/Jigsaw-v1", action_mode="text")
    formatter = ChatFormatter(system="Be brief.")
    episode = oracle_episode(env, 5, formatter)
    obs, info = env.reset(seed=5)
    start = formatter.start(obs, info["prompt_spec"])
    assert [m["role"] for m in episode["messages"][:2]] == ["system", "user"]
    assert episode["messages"][1]["content"][-1]["text"] == start[1]["content"][-1]["text"]
    assert np.array_equal(episode["images"][0], obs["images"][0])
    assert episode["tools"] == formatter.tools(info["prompt_spec"]) and episode["tools"]
    env.close()


def _sft_step(path: Path, processor: Any, dataset: Any, collator: Any, out: Path) -> tuple[float, int, int]:
    import torch
    from transformers import AutoModelForImageTextToText
    from trl import SFTConfig, SFTTrainer

    before = {n: p.detach().clone() for n, p in AutoModelForImageTextToText.from_pretrained(path).named_parameters()}
    args = SFTConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_length=1024,
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        remove_unused_columns=collator is None,
    )
    trainer = SFTTrainer(
        model=str(path), args=args, train_dataset=dataset, processing_class=processor, data_collator=collator
    )
    loss = trainer.train().training_loss
    assert trainer.model is not None
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    return loss, changed, len(before)


@pytest.mark.parametrize("tools_in_template", [True, False], ids=["template-tools", "prompt-tools"])
def test_one_trl_sft_step_on_demos(tools_in_template: bool, tmp_path: Path) -> None:
    from agents.vlm.policies.hf import load_processor
    from agents.vlm.policies.tiny import build_tiny_vlm

    path = build_tiny_vlm(seed=0).save_pretrained(tmp_path / "tiny")
    processor = load_processor(path)  # AutoProcessor falls back to the bare tokenizer for the tiny processor
    out = write_demos("visrl/Jigsaw-v1", 2, tmp_path / "demos", tools_in_template=tools_in_template, progress=False)
    dataset = load_demos(out, cache_dir=tmp_path / "cache")
    row = dataset[0]
    env = gym.make("visrl/Jigsaw-v1", action_mode="text")
    observations, actions, infos, _ = _replay(env, row["seed"])
    env.close()
    # The conversation as the policy builds it turn by turn (string assistant turns, tools= of the template).
    formatter = ChatFormatter(tools_in_template=tools_in_template)
    spec = infos[0]["prompt_spec"]
    chat = formatter.start(observations[0], spec)
    for turn, action in enumerate(actions):
        chat.append(assistant_message(action))
        if turn + 1 < len(observations):
            chat.append(formatter.feedback(observations[turn + 1]))
    policy_text = render(processor, chat, formatter.tools(spec), add_generation_prompt=False)
    if tools_in_template:
        collator: DemoCollator | None = DemoCollator(processor, max_length=1024)
        batch = DemoCollator(processor)([row])  # no truncation here: the whole text
    else:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        collator = None  # TRL's own vision collator
        batch = DataCollatorForVisionLanguageModeling(processor)([dict(row)])
    trained = processor.tokenizer.decode(batch["input_ids"][0])
    image_pad = "<|image_pad|>"
    assert trained.count("<|vision_start|>") == len(_images(observations)) == len(row["images"]) > 1
    assert len(actions) > 1 and ("<tools>" in trained) == tools_in_template != ("- swap(a:" in trained)
    assert trained.replace(image_pad, "") == policy_text.replace(image_pad, ""), "trained on what the policy sees"
    loss, changed, total = _sft_step(path, processor, dataset, collator, tmp_path / "run")
    assert math.isfinite(loss) and loss > 0
    assert changed == total, "one optimizer step moved every parameter"


def test_the_cli_writes_demos_and_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="visrl demos")
    add_arguments(parser)
    out = tmp_path / "cli"
    assert run(parser.parse_args(["--env", "visrl/JigsawPair-v1", "--episodes", "3", "--out", str(out)])) == 0
    assert "3 succeeded" in capsys.readouterr().out and (out / META_FILE).is_file() and (out / "README.md").is_file()
    assert len(load_demos(out, cache_dir=tmp_path / "cache")) == 3
    capsys.readouterr()
    bad = [
        ["--env", "visrl/Nope-v0", "--episodes", "1", "--out", str(out)],
        ["--env", "visrl/Jigsaw-v1", "--episodes", "0", "--out", str(out)],
        ["--env", "visrl/Jigsaw-v1", "--episodes", "1", "--out", str(out), "--split", "val"],
        ["--env", "visrl/Jigsaw-v1", "--episodes", "1", "--out", str(out), "--difficulty", "9"],
        ["--env", "visrl/Jigsaw-v1", "--episodes", "1", "--out", str(out), "--seed", "-1"],
        ["--env", "visrl/Jigsaw-v1", "--episodes", "1", "--out", str(out), "--env-kwargs", '{"colour": 3}'],
        ["--env", "visrl/Jigsaw-v1", "--episodes", "1", "--out", str(out), "--env-kwargs", '{"size": 1}'],
    ]
    for argv in bad:
        assert run(parser.parse_args(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("visrl demos: ") and err.count("\n") == 1, err
    assert len(load_demos(out, cache_dir=tmp_path / "cache2")) == 3, "a rejected run leaves the demos alone"


def test_env_kwargs_reach_the_env_and_bad_ones_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="visrl demos")
    add_arguments(parser)
    out = tmp_path / "small"
    argv = ["--env", "visrl/ShapeColor-v0", "--episodes", "2", "--out", str(out), "--env-kwargs", '{"size": 56}']
    assert run(parser.parse_args(argv)) == 0
    assert read_meta(out)["env_kwargs"] == {"size": 56}
    assert "Images are 56x56 px" in json.dumps(load_demos(out, cache_dir=tmp_path / "cache")[0]["messages"])
    for text, message in [
        ("{size: 56}", "not JSON"),
        ("[56]", "a JSON object"),
        ('{"split": "test"}', "split cannot be set here"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            env_kwargs_argument(text)
        with pytest.raises(SystemExit):
            parser.parse_args(
                ["--env", "visrl/ShapeColor-v0", "--episodes", "1", "--out", str(out), "--env-kwargs", text]
            )
        assert "--env-kwargs" in capsys.readouterr().err


def test_random_actor_demos_teach_the_format_at_chance_level(tmp_path: Path) -> None:
    out = write_demos(
        "visrl/ShapeColor-v0", 40, tmp_path / "d", env_kwargs={"max_attempts": 1}, actor="random", progress=False
    )
    meta = read_meta(out)
    assert meta["actor"] == "random" and 0.2 <= meta["succeeded"] / meta["episodes"] <= 0.8
    rows = load_demos(out, cache_dir=tmp_path / "cache")
    answers = [m["content"][0]["text"] for row in rows for m in row["messages"] if m["role"] == "assistant"]
    assert set(answers) <= {"<answer>A</answer>", "<answer>B</answer>"} and len(set(answers)) == 2
    with pytest.raises(ValueError, match="actor"):
        write_demos("visrl/ShapeColor-v0", 1, tmp_path / "e", actor="human", progress=False)
