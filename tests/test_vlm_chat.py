"""The tiny offline VLM and the generic chat formatter, on every registered id."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agents.vlm.policies.codec import render
from agents.vlm.policies.tiny import VISION_TOKENS, TinyVLM, build_tiny_vlm
from agents.vlm.rollout.chat import ChatFormatter, assistant_message, images_of
from tests.conftest import ENV_IDS


@pytest.fixture(scope="module")
def tiny() -> TinyVLM:
    return build_tiny_vlm(seed=0)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_a_chat_is_built_for_every_id_from_the_observation_and_spec(tiny: TinyVLM, env_id: str) -> None:
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    spec = info["prompt_spec"]
    formatter = ChatFormatter()
    messages = formatter.start(obs, spec)
    action = env.unwrapped.oracle_text()
    obs2 = env.step(action)[0]
    messages += [assistant_message(action), formatter.feedback(obs2)]
    text = render(tiny.processor, messages, formatter.tools(spec))
    images = images_of(messages)
    assert len(images) == len(obs["images"]) + len(obs2["images"])
    assert text.count("<|image_pad|>") == len(images) and text.endswith("<|im_start|>assistant\n")
    assert spec.task in text
    for tool in spec.tools:
        assert f'"name": "{tool["function"]["name"]}"' in text, "the template renders the tool schemas"
    batch = tiny.processor(text=[text], images=images or None, return_tensors="pt")
    pads = int((batch["input_ids"] == tiny.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert (pads > 0) == bool(images)
    env.close()


def test_without_template_tools_the_prompt_lists_them() -> None:
    env = gym.make("visrl/Jigsaw-v1")
    obs, info = env.reset(seed=0)
    text = ChatFormatter(tools_in_template=False).start(obs, info["prompt_spec"])[0]["content"][-1]["text"]
    assert text == obs["text"], "without template tools the first turn is exactly the env's prompt"
    assert ChatFormatter(tools_in_template=False).tools(info["prompt_spec"]) is None


def test_the_tiny_model_generates_without_vision_tokens_and_saves_locally(tiny: TinyVLM, tmp_path: Path) -> None:
    env = gym.make("visrl/Jigsaw-v1", size=84)
    obs, info = env.reset(seed=0)
    formatter = ChatFormatter()
    messages = formatter.start(obs, info["prompt_spec"])
    batch = tiny.processor(
        text=[render(tiny.processor, messages, formatter.tools(info["prompt_spec"]))],
        images=images_of(messages),
        return_tensors="pt",
    )
    banned = [tiny.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    out = tiny.model.generate(**batch, max_new_tokens=24, do_sample=True, suppress_tokens=banned)
    new = out[0, batch["input_ids"].shape[1] :]
    assert len(new) > 0 and not np.isin(new.numpy(), banned).any()
    assert sum(p.numel() for p in tiny.model.parameters()) < 1_000_000
    path = tiny.save_pretrained(tmp_path / "tiny")
    from transformers import AutoModelForImageTextToText

    loaded = AutoModelForImageTextToText.from_pretrained(path)
    assert type(loaded).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_captioned_images_sit_between_their_text_parts(tiny: TinyVLM) -> None:
    """Images of several sizes, each announced by the env, go where their markers are."""
    from tests.toy_envs import ZoomToyEnv

    env = ZoomToyEnv()
    obs, info = env.reset(seed=0)
    formatter = ChatFormatter()
    first = formatter.start(obs, info["prompt_spec"])[-1]["content"]
    assert [p["type"] for p in first] == ["text", "image", "text", "image", "text"]
    assert first[0]["text"] == "Image 1 (320x240 px): the scene\n" and first[1]["image"].shape == (240, 320, 3)
    assert first[2]["text"].startswith("\nImage 2 (80x60 px)") and first[3]["image"].shape == (60, 80, 3)
    obs = env.step('<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 50, 40], "image": 1}}</tool_call>')[0]
    turn = formatter.feedback(obs)["content"]
    assert [p["type"] for p in turn] == ["text", "image", "text"] and turn[1]["image"].shape == (40, 50, 3)
    plain = formatter.feedback({"images": obs["images"], "text": "no markers here"})["content"]
    assert [p["type"] for p in plain] == ["image", "text"], "text without markers: images first, as before"
    env.close()
