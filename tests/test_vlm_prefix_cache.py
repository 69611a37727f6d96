"""The prefix cache of the transformers policy: what it reuses, that it changes nothing, when it empties.

A cached turn must give the tokens and log-probabilities a full prefill gives (greedy: identical
tokens; log-probabilities within fp32 noise), encode only what is new, and never serve states of
weights that have since changed (fused optimizers write without bumping version counters)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from agents.vlm.policies.hf import HFPolicy
from agents.vlm.policies.policy import Sampling, TokenPrompt
from agents.vlm.policies.prefix_cache import (
    CachedSequence,
    PrefixCache,
    block_hashes,
    cached_generate,
    image_run_starts,
    usable_prefix,
    weights_fingerprint,
)
from agents.vlm.rollout import collect

IMG = 9  # the image token in the hand-made sequences below
SMALL = {"visrl/Jigsaw-v1": {"size": 84}, "visrl/SvgRender-v1": {"size": 64}}


def _entry(ids: list[int], images: tuple[bytes, ...] = (), nbytes_per_token: int = 4) -> CachedSequence:
    tensor = torch.zeros((1, len(ids), nbytes_per_token // 4))
    return CachedSequence(np.array(ids), images, [tensor], [tensor.clone()])


# --- pure parts --------------------------------------------------------------------------------


def test_image_runs_start_where_a_run_of_image_tokens_begins() -> None:
    assert image_run_starts(np.array([1, IMG, IMG, 2, IMG, 3, IMG]), IMG).tolist() == [1, 4, 6]
    assert image_run_starts(np.array([IMG, IMG, 5]), IMG).tolist() == [0]
    assert image_run_starts(np.array([1, 2]), IMG).tolist() == []


@pytest.mark.parametrize(
    ("cached", "cached_images", "prompt", "images", "want"),
    [
        # the cached sequence is a prefix: all of it, with its one image
        ([1, IMG, IMG, 2], (b"a",), [1, IMG, IMG, 2, 3, 4], (b"a",), (4, 1)),
        # the prompt equals the cached sequence: one token is left to compute
        ([1, 2, 3], (), [1, 2, 3], (), (2, 0)),
        # a common prefix that ends inside an image: back to that image's first token
        ([1, IMG, IMG, IMG, 5], (b"a",), [1, IMG, IMG, IMG, IMG], (b"b",), (1, 0)),
        # same ids, another image: only the text before the image
        ([1, 2, IMG, IMG, 3], (b"a",), [1, 2, IMG, IMG, 3, 4], (b"b",), (2, 0)),
        # the second image differs: up to it, with the first image
        ([1, IMG, 2, IMG, 3], (b"a", b"b"), [1, IMG, 2, IMG, 3, 4], (b"a", b"c"), (3, 1)),
        # nothing in common
        ([7, 8], (), [1, 2, 3], (), (0, 0)),
        # a one-token prompt leaves nothing to reuse
        ([1, 2], (), [1], (), (0, 0)),
        # the prompt diverges after an image ends: that image is reused
        ([1, IMG, IMG, 2, 3], (b"a",), [1, IMG, IMG, 2, 9 + 1], (b"a",), (4, 1)),
    ],
)
def test_usable_prefix(
    cached: list[int], cached_images: tuple[bytes, ...], prompt: list[int], images: tuple[bytes, ...], want: Any
) -> None:
    assert usable_prefix(np.array(cached), cached_images, np.array(prompt), images, IMG) == want


def test_the_cache_keeps_the_longest_match_drops_what_grew_and_stays_in_budget() -> None:
    cache = PrefixCache(max_bytes=150, image_token_id=IMG, block=1)  # 8 bytes a token (keys + values): 18 tokens
    first = _entry([1, 2, 3, 4])
    cache.add(first)
    other = _entry([1, 2, 8])
    cache.add(other)
    assert cache.match(np.array([1, 2, 3, 4, 5]), ())[0] is first
    assert cache.match(np.array([1, 2, 8, 8]), ())[:2] == (other, 3)
    assert cache.match(np.array([1, 2, 3, 7]), ())[:2] == (first, 3)  # extends none: the longest common prefix
    grown = _entry([1, 2, 3, 4, 5, 6])
    cache.add(grown, grew_from=first)
    assert first.uid not in cache.entries and len(cache) == 2  # grown contains it
    cache.add(_entry([5] * 10))  # 80 bytes more: the least recently used entry goes
    assert cache.nbytes <= cache.max_bytes and other.uid not in cache.entries
    cache.add(_entry([6] * 40))  # larger than the whole budget: not kept
    assert all(len(e) < 40 for e in cache.entries.values())
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(-1, IMG)
    with pytest.raises(ValueError, match="block"):
        PrefixCache(10, IMG, block=0)


def test_block_hashes_chain_tokens_and_image_content() -> None:
    ids = np.array([1, 2, IMG, IMG, 3, 4, IMG, 5, 6])
    a = block_hashes(ids, (b"x", b"y"), IMG, block=2)
    assert len(a) == 4  # whole blocks only
    assert block_hashes(ids, (b"x", b"z"), IMG, block=2)[:3] == a[:3]  # image "y" starts in block 4
    assert block_hashes(ids, (b"x", b"z"), IMG, block=2)[3] != a[3]
    assert block_hashes(ids, (b"w", b"y"), IMG, block=2)[0] == a[0]  # image "x" starts in block 2
    assert all(h != g for h, g in zip(block_hashes(ids, (b"w", b"y"), IMG, block=2)[1:], a[1:], strict=True))


def test_a_prompt_reuses_its_longest_run_of_whole_blocks() -> None:
    cache = PrefixCache(1 << 20, IMG, block=4)
    older, newer = _entry(list(range(20, 32))), _entry([*range(20, 28), 90, 91, 92, 93])
    cache.add(older)
    cache.add(newer)
    assert cache.match(np.array([*range(20, 30), 7, 7]), ())[:2] == (older, 10)  # 2 blocks, then 2 more tokens
    assert cache.match(np.array([*range(20, 28), 90, 91, 92, 93, 94]), ())[:2] == (newer, 12)
    assert cache.match(np.array([20, 21, 22, 7, 8]), ()) == (None, 0, 0)  # less than a block in common


# --- against the real tiny model -------------------------------------------------------------


def _collect(policy: HFPolicy, env_id: str, sampling: Sampling, seeds: tuple[int, ...] = (0, 1)) -> list[Any]:
    return collect(
        policy, env_id, seeds=list(seeds), group_size=3, env_kwargs=SMALL[env_id], max_turns=3, sampling=sampling
    )


@pytest.mark.parametrize("env_id", list(SMALL))
def test_cached_generation_equals_a_full_prefill(env_id: str) -> None:
    """Greedy 3-turn rollouts: the same tokens, log-probabilities within 1e-5, and the cache
    encoded well under half of the prompt tokens."""
    greedy = Sampling(temperature=0, max_new_tokens=16)
    cached, plain = HFPolicy.tiny(seed=3), HFPolicy.tiny(seed=3, prefix_cache_bytes=0)
    assert plain.prefix_cache is None and cached.prefix_cache is not None
    with_cache, without = _collect(cached, env_id, greedy), _collect(plain, env_id, greedy)
    assert sum(len(t.steps) for t in with_cache) >= 12
    for a, b in zip(with_cache, without, strict=True):
        assert a.prompt_ids == b.prompt_ids and a.completion_ids == b.completion_ids and a.mask == b.mask
        assert np.abs(np.array(a.logprobs) - np.array(b.logprobs)).max() < 1e-5
    stats = cached.prefix_cache
    assert stats.encoded_tokens < 0.5 * stats.prompt_tokens, (stats.encoded_tokens, stats.prompt_tokens)


def test_a_group_prompt_is_encoded_once_and_seeded_sampling_repeats() -> None:
    policy = HFPolicy.tiny(seed=1)
    prompt = policy.codec.start([{"role": "user", "content": "hello there"}], None)
    sampling = Sampling(temperature=1.0, max_new_tokens=8, seed=5)
    first = policy.generate([prompt] * 4, sampling)
    assert policy.prefix_cache.encoded_tokens == len(prompt.ids)  # four identical rows, one prefill
    again = HFPolicy.tiny(seed=1, prefix_cache_bytes=0).generate([prompt] * 4, sampling)
    assert [c.ids for c in first] == [c.ids for c in again]  # the same draws as model.generate
    from_cache = policy.generate([prompt] * 4, sampling)  # now every row starts from a cached sequence
    assert [c.ids for c in from_cache] == [c.ids for c in first]
    assert np.allclose([c.logprobs for c in from_cache], [c.logprobs for c in first], atol=1e-5)
    nucleus = Sampling(temperature=0.7, top_k=50, top_p=0.9, max_new_tokens=8, seed=3)
    assert [c.ids for c in HFPolicy.tiny(seed=1).generate([prompt] * 2, nucleus)] == [
        c.ids for c in HFPolicy.tiny(seed=1, prefix_cache_bytes=0).generate([prompt] * 2, nucleus)
    ]  # transformers' top-k and top-p warpers, in generate's order
    top1 = policy.generate([prompt], Sampling(temperature=1.0, top_k=1, max_new_tokens=8, seed=2))
    assert top1[0].ids == policy.generate([prompt], Sampling(temperature=0, max_new_tokens=8))[0].ids


def _image_message(image: np.ndarray, text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}


def test_each_image_reaches_the_vision_tower_once() -> None:
    """With the cache, a turn sends only its new images: over three turns the pixels that reach the
    forward are exactly the conversation's images, in order, each once, and the last turn's
    log-probabilities are those of a full re-scoring."""
    policy = HFPolicy.tiny(seed=0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (56, 56, 3), dtype=np.uint8) for _ in range(3)]
    seen: list[Any] = []
    handle = policy.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("pixel_values")), with_kwargs=True
    )
    sampling = Sampling(temperature=1.0, max_new_tokens=6, seed=0)
    try:
        prompt = policy.codec.start([_image_message(images[0], "first")], None)
        for image in images[1:]:
            completion = policy.generate([prompt], sampling)[0]
            turn = policy.codec.continuation(_image_message(image, "next"), None, completion.finished)
            prompt = TokenPrompt(prompt.ids + completion.ids + turn.ids, prompt.images + turn.images)
        last = policy.generate([prompt], sampling)[0]
    finally:
        handle.remove()
    assert len(prompt.images) == 3
    want = torch.cat([policy._pixel_inputs(image)[0] for image in images])
    assert torch.equal(torch.cat([p for p in seen if p is not None]), want)
    # Positions after cached images continue as a full prefill numbers them: re-scoring agrees.
    rescored = policy.token_logprobs([TokenPrompt(prompt.ids + last.ids, prompt.images)])[0][len(prompt.ids) :]
    assert np.abs(np.array(last.logprobs) - rescored).max() < 1e-4


@pytest.mark.parametrize("fused", [True, False])
def test_an_optimizer_step_empties_the_cache(fused: bool) -> None:
    """After a step (fused AdamW writes without bumping version counters) the next generation
    matches a full re-scoring with the new weights; served from the old states, it would not."""
    policy = HFPolicy.tiny(seed=2)
    prompt = policy.codec.start([{"role": "user", "content": "a question with some length to it"}], None)
    greedy = Sampling(temperature=0, max_new_tokens=6)
    first = policy.generate([prompt], greedy)[0]
    turn = policy.codec.continuation({"role": "user", "content": "and again"}, None, first.finished)
    follow_up = TokenPrompt(prompt.ids + first.ids + turn.ids, [])
    held = dict(policy.prefix_cache.entries)  # the states computed with the old weights
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-2, fused=fused, foreach=None if fused else False)
    policy.model(input_ids=torch.tensor([prompt.ids])).logits.square().mean().backward()
    optimizer.step()
    after = policy.generate([follow_up], greedy)[0]
    assert len(policy.prefix_cache) == 1  # emptied, then this call's sequence
    rescored = policy.token_logprobs([TokenPrompt(follow_up.ids + after.ids, [])])[0][len(follow_up.ids) :]
    assert np.abs(np.array(after.logprobs) - rescored).max() < 1e-5
    # The control: the same call served from the old states is measurably off.
    stale = PrefixCache(1 << 30, policy.image_token_id)
    for entry in held.values():
        stale.add(entry)
    stale.fingerprint = weights_fingerprint(policy.model)
    off = cached_generate(policy, stale, [follow_up], Sampling(temperature=0, max_new_tokens=1))[0]
    assert abs(off.logprobs[0] - rescored[0]) > 1e-4


def test_mismatched_images_are_refused_with_a_message() -> None:
    policy = HFPolicy.tiny(seed=0)
    prompt = policy.codec.start([_image_message(np.zeros((28, 28, 3), np.uint8), "x")], None)
    with pytest.raises(ValueError, match="out of step"):
        policy.generate([TokenPrompt(prompt.ids, [])], Sampling(max_new_tokens=2))
    assert len(policy.generate([prompt], Sampling(max_new_tokens=2))[0].ids) >= 1


def test_a_tiny_qwen3_vl_generates_and_rescores_through_the_cache() -> None:
    """The same path on a Qwen3-VL (interleaved multimodal positions, deepstack visual features):
    cached turns with new images give model.generate's greedy tokens and re-score exactly."""
    cached, plain = (HFPolicy.tiny(seed=0, architecture="qwen3_vl", prefix_cache_bytes=b) for b in (1 << 30, 0))
    assert cached.model.config.model_type == "qwen3_vl"
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    greedy = Sampling(temperature=0, max_new_tokens=6)
    prompt = cached.codec.start([_image_message(images[0], "first")], None)
    for image in images[1:]:
        completion = cached.generate([prompt, prompt], greedy)[0]
        assert completion.ids == plain.generate([prompt], greedy)[0].ids
        turn = cached.codec.continuation(_image_message(image, "next"), None, completion.finished)
        prompt = TokenPrompt(prompt.ids + completion.ids + turn.ids, prompt.images + turn.images)
    last = cached.generate([prompt], greedy)[0]
    assert last.ids == plain.generate([prompt], greedy)[0].ids
    rescored = cached.token_logprobs([TokenPrompt(prompt.ids + last.ids, prompt.images)])[0][len(prompt.ids) :]
    assert np.abs(np.array(last.logprobs) - rescored).max() < 1e-4
    assert cached.prefix_cache.encoded_tokens < 0.5 * cached.prefix_cache.prompt_tokens
    trajectories = collect(
        cached,
        "visrl/Jigsaw-v1",
        seeds=[0],
        group_size=2,
        env_kwargs=SMALL["visrl/Jigsaw-v1"],
        max_turns=2,
        sampling=Sampling(temperature=1.0, max_new_tokens=8, seed=0),
    )
    again = cached.token_logprobs([t.sequence() for t in trajectories])
    for trajectory, values in zip(trajectories, again, strict=True):
        mask = np.array(trajectory.mask, dtype=bool)
        recorded = np.array(trajectory.logprobs)[mask]
        assert np.abs(values[len(trajectory.prompt_ids) :][mask] - recorded).max() < 1e-4


def test_a_qwen3_vl_directory_loads_like_a_users_model(tmp_path: Any) -> None:
    from agents.vlm.policies.tiny import build_tiny_vlm

    build_tiny_vlm(architecture="qwen3_vl").save_pretrained(tmp_path)
    policy = HFPolicy.from_pretrained(tmp_path)
    assert type(policy.model).__name__ == "Qwen3VLForConditionalGeneration" and policy.prefix_cache is not None
    runs = collect(policy, "visrl/ShapeColor-v0", seeds=[0], group_size=2, sampling=Sampling(max_new_tokens=4))
    assert all(t.steps and t.finish != "env_error" for t in runs)


def test_buffers_grow_past_their_first_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn longer than the buffers' first room (shrunk to 3 tokens here) grows them and still
    equals a full prefill."""
    from agents.vlm.policies import prefix_cache

    monkeypatch.setattr(prefix_cache, "ROOM", 3)
    cached, plain = HFPolicy.tiny(seed=4), HFPolicy.tiny(seed=4, prefix_cache_bytes=0)
    prompts = [cached.codec.start([{"role": "user", "content": text}], None) for text in ("short", "a longer one")]
    greedy = Sampling(temperature=0, max_new_tokens=14)
    for _ in range(2):  # the second time from the cache
        got, want = cached.generate(prompts, greedy), plain.generate(prompts, greedy)
        assert [c.ids for c in got] == [c.ids for c in want] and max(len(c.ids) for c in got) > 3
        assert np.allclose([c.logprobs for c in got], [c.logprobs for c in want], atol=1e-5)


def test_visrl_serve_sizes_the_cache_and_refuses_a_negative_size() -> None:
    import subprocess
    import sys

    from agents.vlm.serving.server import load_policy

    assert load_policy("tiny", 0).prefix_cache is None  # type: ignore[attr-defined]
    assert load_policy("tiny", 0.5).prefix_cache.max_bytes == 2**29  # type: ignore[attr-defined]
    bad = subprocess.run(
        [sys.executable, "-m", "visrl_envs.cli", "serve", "--model", "tiny", "--prefix-cache-gb", "-1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--prefix-cache-gb: must be >= 0, got -1" in bad.stderr
