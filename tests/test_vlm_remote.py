"""Generation on a separate server with weights pushed from the trainer (agents/vlm/serving/client.py).

A real :class:`PolicyServer` on 127.0.0.1 serves a tiny model whose weights differ from the
trainer's (another seed) until the trainer pushes its own: the trainer's ``logprob_gap`` shows
whether the server samples from the policy being trained, step after step."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.vlm.grpo.config import LoraSpec, TrainConfig
from agents.vlm.grpo.trainer import GRPOTrainer, completion_logprobs
from agents.vlm.policies.hf import HFPolicy
from agents.vlm.policies.openai_policy import PolicyError, image_data_url
from agents.vlm.policies.policy import Sampling, TokenPrompt
from agents.vlm.rollout import collect
from agents.vlm.serving.client import GENERATE_ROUTE, WEIGHTS_ROUTE, RemotePolicy
from agents.vlm.serving.server import Limits, PolicyServer
from tests.test_grpo_trainer import FAST

ENV = ("visrl/ShapeColor-v0", {"size": 56, "max_attempts": 1})


@pytest.fixture
def served() -> Iterator[tuple[PolicyServer, HFPolicy]]:
    policy = HFPolicy.tiny(seed=1)  # not the trainer's weights (seed 0) until it pushes them
    server = PolicyServer(policy, "tiny", allow_weight_updates=True, limits=Limits(max_prompts=64))
    server.start()
    yield server, policy
    server.stop()


def _root(server: PolicyServer) -> str:
    return server.url.removesuffix("/v1")


def _post(url: str, data: bytes, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _first_prompt(policy: HFPolicy) -> TokenPrompt:
    from agents.vlm.rollout.chat import ChatFormatter
    from agents.vlm.rollout.env_pool import make_text_env

    env = make_text_env(*ENV)
    obs, info = env.reset(seed=3)
    formatter = ChatFormatter()
    return policy.codec.start(formatter.start(obs, info["prompt_spec"]), formatter.tools(info["prompt_spec"]))


def test_remote_generation_is_the_served_models_token_for_token(served: tuple[PolicyServer, HFPolicy]) -> None:
    server, policy = served
    remote = RemotePolicy(server.url, policy.processor)
    prompts = [_first_prompt(policy)] * 3
    for sampling in (Sampling(0, 12), Sampling(1.0, 12, seed=7)):
        here = policy.generate(prompts, sampling)
        there = remote.generate(prompts, sampling)
        assert [c.ids for c in there] == [c.ids for c in here]
        for a, b in zip(there, here, strict=True):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
            assert a.finished == b.finished


def test_the_trainer_pushes_its_weights_and_samples_from_the_server(
    served: tuple[PolicyServer, HFPolicy], tmp_path: Path
) -> None:
    server, served_policy = served
    config = replace(FAST, learning_rate=1e-2, save_every=0, output_dir=str(tmp_path), generation_server=server.url)
    trainer = GRPOTrainer(config)
    assert server.weights_version == 1, "the trainer pushed its initial weights"

    def same_weights() -> bool:
        mine = dict(trainer.policy.model.named_parameters())
        return all(torch.equal(p, mine[n]) for n, p in served_policy.model.named_parameters())

    assert same_weights()
    reports = trainer.train()
    assert server.weights_version == 3 and same_weights(), "one push after every update"
    changed = [r.logprob_gap for r in reports]
    assert all(gap < 1e-4 for gap in changed), f"the server sampled from another policy: {changed}"

    # A server that missed the last push samples from stale weights, and the gap says so.
    with torch.no_grad():
        for p in served_policy.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    runs = collect(
        trainer.sampler, ENV[0], [11, 12], group_size=2, sampling=Sampling(1.0, 6, seed=0), env_kwargs=ENV[1]
    )
    with torch.no_grad():
        logprobs, mask = completion_logprobs(trainer.policy, trainer.model, runs, 1.0)
    _, gap = trainer._sampling_weights(logprobs, runs, mask)
    assert gap["sampling/logprob_gap"] > 1e-2


def test_bad_token_requests_and_weights_are_refused(served: tuple[PolicyServer, HFPolicy]) -> None:
    server, policy = served
    root = _root(server)
    prompt = _first_prompt(policy)
    image = image_data_url(prompt.images[0])
    vocabulary = len(policy.tokenizer)
    bad_bodies = {
        "a JSON object": [],
        "non-empty list": {"prompts": []},
        "integers": {"prompts": [{"ids": ["a"], "images": []}]},
        f"[0, {vocabulary})": {"prompts": [{"ids": [vocabulary], "images": []}]},
        "at most 64": {"prompts": [{"ids": [1], "images": []}] * 65},
        "never fetches URLs": {"prompts": [{"ids": prompt.ids, "images": ["http://example.com/x.png"]}]},
        "max_new_tokens": {"prompts": [{"ids": prompt.ids, "images": [image]}], "sampling": {"max_new_tokens": 10**6}},
        "unknown fields": {"prompts": [{"ids": [1], "images": []}], "stream": True},
        "refused the prompts": {"prompts": [{"ids": prompt.ids, "images": []}]},  # image pads without the image
    }
    for message, body in bad_bodies.items():
        status, answer = _post(root + GENERATE_ROUTE, json.dumps(body).encode())
        assert status == 400 and message in answer["error"]["message"], (message, answer)

    from safetensors.torch import save

    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    name, parameter = next(iter(policy.model.named_parameters()))
    bad_weights = {
        "not a safetensors file": b"garbage",
        "not in the served model": save({"nope.weight": torch.zeros(2)}),
        "shape": save({name: torch.zeros(3, 3, 3, 3, 3)}),
        "NaN": save({name: torch.full_like(parameter.detach(), float("nan"))}),
    }
    for message, data in bad_weights.items():
        status, answer = _post(root + WEIGHTS_ROUTE, data, "application/octet-stream")
        assert status == 400 and message in answer["error"]["message"], (message, answer)
    assert all(torch.equal(p, before[n]) for n, p in policy.model.named_parameters()), "nothing loaded"
    assert server.weights_version == 0

    locked = PolicyServer(HFPolicy.tiny(), "tiny")  # weight updates are off by default
    with locked:
        status, answer = _post(
            _root(locked) + WEIGHTS_ROUTE, save({name: parameter.detach()}), "application/octet-stream"
        )
        assert status == 403
        with pytest.raises(PolicyError, match="403"):
            RemotePolicy(locked.url, policy.processor).push_weights({name: parameter})


def test_an_unreachable_server_and_lora_are_clear_errors(tmp_path: Path) -> None:
    policy = HFPolicy.tiny()
    with pytest.raises(PolicyError, match="cannot reach"):
        RemotePolicy("http://127.0.0.1:9", policy.processor, timeout=5).generate(
            [_first_prompt(policy)], Sampling(0, 2)
        )
    with pytest.raises(ValueError, match="LoRA"):
        replace(TrainConfig(), generation_server="http://127.0.0.1:9", lora=LoraSpec())
