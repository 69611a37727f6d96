"""Token-exact multi-turn rollouts with the tiny transformers policy: ids, masks, images, logprobs.

The bugs these guard against were shipped by trainers in 2026: a turn separator dropped at each
assistant-to-env boundary, pixel tensors dropped between env and trainer, prompt ids lost."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from agents.vlm.policies.codec import render
from agents.vlm.policies.hf import HFPolicy
from agents.vlm.policies.policy import ChatRequest, Completion, Reply, Sampling, TokenPrompt
from agents.vlm.rollout import RolloutStats, collect
from agents.vlm.rollout.chat import ChatFormatter, assistant_message, images_of
from agents.vlm.rollout.env_pool import InlineEnvs, make_text_env
from agents.vlm.rollout.trajectory import Trajectory
from tests.toy_envs import ZoomToyEnv

#: An unregistered family with images of three sizes in one episode, captioned between text parts.
ZOOM_ID = "visrl-test/ZoomToy-v0"
if ZOOM_ID not in gym.registry:
    gym.register(ZOOM_ID, entry_point=ZoomToyEnv, max_episode_steps=4)

SMALL = {"visrl/Jigsaw-v1": {"size": 84}, "visrl/SvgRender-v1": {"size": 64}, ZOOM_ID: {}}

#: Three actions per env that do not end the episode (one of them an action error).
SCRIPTS = {
    "visrl/Jigsaw-v1": [
        '<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 2}}</tool_call>',
        "I am not sure.",
        '<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 2}}</tool_call>',
    ],
    "visrl/SvgRender-v1": [
        '<answer><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256"/></answer>',
        '<answer><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256"><rect width="9" height="9"/></svg></answer>',
        "<answer>not svg</answer>",
    ],
    ZOOM_ID: [  # a 160x120 crop of the 320x240 scene, a refused box, a 40x30 crop of the crop
        '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 160, 120], "image": 1}}</tool_call>',
        '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [90, 0, 10, 10], "image": 2}}</tool_call>',
        '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 40, 30], "image": 3}}</tool_call>',
    ],
}


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    return HFPolicy.tiny(seed=0)


class ScriptedPolicy(HFPolicy):
    """Generates the canonical tokens of scripted texts (per turn), scored by the real model."""

    def __init__(self, base: HFPolicy, script: Sequence[str]) -> None:
        self.__dict__.update(base.__dict__)
        self.script = list(script)

    def generate(self, prompts: Sequence[TokenPrompt], sampling: Sampling) -> list[Completion]:
        out = []
        for prompt in prompts:
            turn = self.tokenizer.decode(prompt.ids, skip_special_tokens=False).count("<|im_start|>assistant") - 1
            ids = self.tokenizer(self.script[turn], add_special_tokens=False)["input_ids"] + [self.codec.eos_id]
            scored = self.token_logprobs([TokenPrompt(prompt.ids + ids, prompt.images)])[0]
            out.append(Completion(ids, scored[len(prompt.ids) :].tolist(), True))
        return out


def _replay_env(env_id: str, seed: int, actions: list[str]) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """The images the env shows and the messages the formatter builds, replayed from scratch."""
    env = make_text_env(env_id, SMALL[env_id])
    formatter = ChatFormatter()
    obs, info = env.reset(seed=seed)
    messages = formatter.start(obs, info["prompt_spec"])
    images = list(obs["images"])
    for k, action in enumerate(actions):
        obs = env.step(action)[0]
        messages.append(assistant_message(action))
        if k < len(actions) - 1:
            messages.append(formatter.feedback(obs))
            images += list(obs["images"])
    env.close()
    return images, messages


@pytest.mark.parametrize("env_id", list(SCRIPTS))
def test_scripted_three_turn_trajectories_are_token_exact(policy: HFPolicy, env_id: str) -> None:
    scripted = ScriptedPolicy(policy, SCRIPTS[env_id])
    trajectories = collect(
        scripted, env_id, seeds=[3], group_size=2, env_kwargs=SMALL[env_id], max_turns=3, sampling=Sampling(0)
    )
    images, messages = _replay_env(env_id, 3, SCRIPTS[env_id])
    spec = gym.make(env_id, **SMALL[env_id]).reset(seed=3)[1]["prompt_spec"]
    tools = ChatFormatter().tools(spec)
    # the whole conversation rendered and tokenised at once: what the ids must equal
    full_text = render(policy.processor, messages, tools, add_generation_prompt=False)
    expected = policy.processor(text=[full_text], images=images_of(messages), return_tensors="np")["input_ids"][0]
    for trajectory in trajectories:
        assert trajectory.finish == "turn_limit" and len(trajectory.steps) == 3
        ids = trajectory.ids
        assert ids == expected[: len(ids)].tolist(), "ids differ from the re-rendered conversation"
        assert expected[len(ids) :].tolist() == policy.codec.separator_ids, "only the final separator remains"
        # mask-1 runs are exactly the model's texts, each closed by the end-of-turn token
        runs = _runs(trajectory.completion_ids, trajectory.mask, 1)
        assert [policy.tokenizer.decode(r, skip_special_tokens=False) for r in runs] == [
            a + "<|im_end|>" for a in SCRIPTS[env_id]
        ]
        assert [s.action for s in trajectory.steps] == SCRIPTS[env_id]
        assert [(s.model_span[1] - s.model_span[0]) for s in trajectory.steps] == [len(r) for r in runs]
        # env runs start with the turn separator the template puts after <|im_end|>
        for run in _runs(trajectory.completion_ids, trajectory.mask, 0):
            assert run[: len(policy.codec.separator_ids)] == policy.codec.separator_ids
        assert len(trajectory.images) == len(images)
        for got, want in zip(trajectory.images, images, strict=True):
            assert got.dtype == np.uint8 and np.array_equal(got, want), "images are the env's, pixel for pixel"
        assert trajectory.logprobs[: trajectory.mask.index(1)] == [0.0] * trajectory.mask.index(1)


def _runs(ids: list[int], mask: list[int], value: int) -> list[list[int]]:
    """The maximal runs of ``ids`` whose mask is ``value``."""
    pairs = zip(ids, mask, strict=True)
    return [[i for i, _ in run] for m, run in itertools.groupby(pairs, key=lambda p: p[1]) if m == value]


def test_sampled_trajectories_rescore_to_their_recorded_logprobs(policy: HFPolicy) -> None:
    """Re-scoring with the policy reproduces what generation recorded (fp32, CPU: < 1e-4)."""
    trajectories = []
    for env_id in SCRIPTS:  # ZoomToy: two image sizes in one prompt through the prefix cache
        trajectories += collect(
            policy,
            env_id,
            seeds=[0, 1],
            group_size=2,
            env_kwargs=SMALL[env_id],
            max_turns=3,
            sampling=Sampling(temperature=0.8, max_new_tokens=20, seed=7),
        )
    assert sum(len(t.steps) for t in trajectories) >= 12
    rescored = policy.token_logprobs([t.sequence() for t in trajectories], temperature=0.8)
    worst = 0.0
    for trajectory, values in zip(trajectories, rescored, strict=True):
        mask = np.array(trajectory.mask, dtype=bool)
        recorded = np.array(trajectory.logprobs)
        again = values[len(trajectory.prompt_ids) :]
        assert np.all(recorded[~mask] == 0.0)
        worst = max(worst, float(np.abs(again[mask] - recorded[mask]).max()))
        assert np.all(np.isfinite(recorded)) and np.all(recorded[mask] < 0)
    assert worst < 1e-4, worst


def test_the_images_reaching_the_forward_are_the_envs(policy: HFPolicy) -> None:
    """Pixel tensors given to the model come from exactly the env's observations, in order."""
    seen: list[Any] = []
    handle = policy.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("pixel_values")), with_kwargs=True
    )
    try:
        trajectories = collect(
            ScriptedPolicy(policy, SCRIPTS["visrl/SvgRender-v1"]),
            "visrl/SvgRender-v1",
            seeds=[5],
            env_kwargs=SMALL["visrl/SvgRender-v1"],
            max_turns=3,
        )
        seen.clear()
        policy.token_logprobs([trajectories[0].sequence()])
    finally:
        handle.remove()
    trajectory = trajectories[0]
    actions = [s.action for s in trajectory.steps]
    images, _ = _replay_env("visrl/SvgRender-v1", 5, actions)
    assert len(trajectory.images) == len(images) >= 2  # the target and at least one render
    from PIL import Image

    want = policy.processor.image_processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")
    assert seen and seen[0] is not None
    assert np.array_equal(seen[0].numpy(), want["pixel_values"].numpy())


def test_a_turn_cut_at_max_new_tokens_is_closed_by_env_tokens(policy: HFPolicy) -> None:
    trajectories = collect(
        policy,
        "visrl/Jigsaw-v1",
        seeds=[0],
        env_kwargs=SMALL["visrl/Jigsaw-v1"],
        max_turns=2,
        sampling=Sampling(max_new_tokens=3, seed=1),
    )
    trajectory = trajectories[0]
    first = trajectory.steps[0]
    assert not first.finished_turn and first.model_span[1] - first.model_span[0] == 3
    after = first.model_span[1]
    assert trajectory.completion_ids[after] == policy.codec.eos_id and trajectory.mask[after] == 0
    rescored = policy.token_logprobs([trajectory.sequence()])[0][len(trajectory.prompt_ids) :]
    mask = np.array(trajectory.mask, dtype=bool)
    assert np.abs(rescored[mask] - np.array(trajectory.logprobs)[mask]).max() < 1e-4


def test_group_members_share_the_task_and_groups_differ(policy: HFPolicy) -> None:
    trajectories = collect(
        policy,
        "visrl/Jigsaw-v1",
        seeds=[0, 1],
        group_size=3,
        env_kwargs=SMALL["visrl/Jigsaw-v1"],
        max_turns=1,
        sampling=Sampling(max_new_tokens=4),
    )
    assert [(t.group, t.member) for t in trajectories] == [(g, m) for g in range(2) for m in range(3)]
    seeds = [t.task_seed for t in trajectories]
    assert seeds[:3] == [seeds[0]] * 3 and seeds[3:] == [seeds[3]] * 3 and seeds[0] != seeds[3]
    assert all(np.array_equal(t.images[0], trajectories[0].images[0]) for t in trajectories[:3])
    assert trajectories[0].prompt_ids == trajectories[1].prompt_ids


def test_an_env_error_ends_the_trajectory_flagged(policy: HFPolicy) -> None:
    env_id = "visrl/SvgRender-v1"

    class FaultAfterReset(InlineEnvs):
        def reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
            results = super().reset(seeds)
            self.envs[1].unwrapped.backends["svg renderer"].inject_fault()  # the renderer fails at step 1
            return results

    pool = FaultAfterReset(lambda: make_text_env(env_id, SMALL[env_id]), 2)
    script = ScriptedPolicy(policy, SCRIPTS[env_id])
    trajectories = collect(script, env_id, seeds=[0, 1], pool=pool, max_turns=3, sampling=Sampling(0))
    pool.close()
    assert trajectories[0].finish == "turn_limit" and trajectories[0].env_error is None
    broken = trajectories[1]
    assert broken.finish == "env_error" and "svg renderer" in (broken.env_error or "")
    assert broken.steps[-1].info["env_error"] and broken.steps[-1].truncated


@pytest.mark.parametrize("runner", ["vector", "hosted", "ray"])
def test_env_runners_give_the_same_trajectories(policy: HFPolicy, runner: str) -> None:
    """Greedy decoding makes rollouts deterministic: every env runner must give the same records."""
    if runner == "ray":
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        kwargs: dict[str, Any] = dict(
            env_kwargs=SMALL["visrl/Jigsaw-v1"], max_turns=3, sampling=Sampling(0, max_new_tokens=12)
        )
        inline = collect(policy, "visrl/Jigsaw-v1", [0, 1, 2, 3], group_size=2, **kwargs)  # 8 slots: 2 per host
        other = collect(policy, "visrl/Jigsaw-v1", [0, 1, 2, 3], group_size=2, env_runner=runner, **kwargs)
    finally:
        if runner == "ray":
            ray.shutdown()
    for a, b in zip(inline, other, strict=True):
        assert a.ids == b.ids and a.mask == b.mask and a.rewards == b.rewards
        assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))


class _ChatOnly:
    """A policy without the token level (as an HTTP server is)."""

    def __init__(self, base: HFPolicy) -> None:
        self.base, self.name = base, "chat-only"

    def reply(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Reply]:
        return self.base.reply(requests, sampling)

    def close(self) -> None:
        pass


def test_a_chat_level_policy_rolls_out_with_texts(policy: HFPolicy) -> None:
    stats = RolloutStats()
    trajectories = collect(
        _ChatOnly(policy),
        "visrl/JigsawPair-v1",
        seeds=[0, 1],
        env_kwargs={"size": 84},
        sampling=Sampling(max_new_tokens=6),
        stats=stats,
    )
    for trajectory in trajectories:
        assert isinstance(trajectory, Trajectory) and trajectory.done and not trajectory.completion_ids
        assert trajectory.steps and trajectory.finish in ("terminated", "truncated")
        assert len(trajectory.images) == trajectory.prompt_images == 1
        assert [m["role"] for m in trajectory.messages][-1] == "assistant"
    assert stats.generate > 0 and stats.turns >= 1


def test_bad_collect_arguments_are_refused(policy: HFPolicy) -> None:
    with pytest.raises(ValueError, match="group_size"):
        collect(policy, "visrl/Jigsaw-v1", [0], group_size=0)
    with pytest.raises(ValueError, match="seeds"):
        collect(policy, "visrl/Jigsaw-v1", [])
    with pytest.raises(ValueError, match="env runner"):
        collect(policy, "visrl/Jigsaw-v1", [0], env_runner="threads")
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1)


def test_the_token_budget_ends_a_trajectory_before_it_overflows(policy: HFPolicy) -> None:
    first = collect(policy, "visrl/Jigsaw-v1", [0], env_kwargs=SMALL["visrl/Jigsaw-v1"], max_turns=1)[0]
    budget = len(first.prompt_ids) + 3 * 16 + 8
    trajectory = collect(
        policy,
        "visrl/Jigsaw-v1",
        [0],
        env_kwargs=SMALL["visrl/Jigsaw-v1"],
        max_total_tokens=budget,
        sampling=Sampling(max_new_tokens=16, seed=0),
    )[0]
    assert trajectory.finish == "token_limit"
    assert len(trajectory.ids) <= budget and len(trajectory.steps) >= 1
