"""The rollout collector: B tasks x G samples, multi-turn, every live trajectory generated in one batch.

``collect(policy, env_id, seeds, group_size=G)`` resets ``len(seeds) * G`` env slots (the G members
of group ``b`` all reset with ``seeds[b]``: the same task), then alternates one batched generation
over every live trajectory with one env step per live slot, until each episode ends, its turn
budget (``max_turns``) or its token budget (``max_total_tokens``) is spent.

With a :class:`~agents.vlm.policies.policy.TokenPolicy` the record is token-exact (see
:mod:`agents.vlm.rollout.trajectory`): the first prompt is tokenised once, model tokens are appended as
generated (mask 1, their log-probabilities), and each env turn is appended as ids built by the
policy's codec (mask 0), never by re-rendering the conversation. With a plain
:class:`~agents.vlm.policies.policy.ChatPolicy` (an HTTP server) the conversation is sent as messages each
turn and the trajectory holds the texts and whatever token data the server returned.

An env error (a backend that failed: ``info["env_error"]``) ends the trajectory with
``finish="env_error"`` and the message: it is the env's failure, not the model's, and a trainer
must drop it rather than score it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import gymnasium as gym
import numpy as np

from agents.vlm.policies.policy import ChatPolicy, ChatRequest, Message, Sampling, TokenPolicy
from agents.vlm.rollout.chat import ChatFormatter, assistant_message
from agents.vlm.rollout.env_pool import EnvPool, HostedEnvs, InlineEnvs, RayEnvs, VectorEnvs, make_text_env
from agents.vlm.rollout.trajectory import Step, Trajectory

#: How env slots are stepped: in this process, in an AsyncVectorEnv (one subprocess per slot), on a
#: few AsyncVectorEnv subprocesses hosting several slots each, or on Ray actors.
ENV_RUNNERS = ("inline", "vector", "hosted", "ray")


@dataclass
class RolloutStats:
    """Where the time of a collection went (seconds) and how much was generated."""

    generate: float = 0.0
    env: float = 0.0
    bookkeeping: float = 0.0
    turns: int = 0
    model_tokens: int = 0

    @property
    def total(self) -> float:
        return self.generate + self.env + self.bookkeeping


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot hold dropped (arrays become lists; objects such as the
    prompt spec are left out)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            safe = json_safe(v)
            if safe is not _DROP:
                out[str(k)] = safe
        return out
    if isinstance(value, list | tuple):
        return [safe for safe in map(json_safe, value) if safe is not _DROP]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else _DROP
    if value is None or isinstance(value, bool | int | float | str):
        return value
    try:
        json.dumps(value)
    except TypeError:
        return _DROP
    return value


_DROP = object()


def _image_count(message: Message) -> int:
    content = message["content"]
    return sum(1 for part in content if part["type"] == "image") if isinstance(content, list) else 0


def _indexed(message: Message, first_index: int) -> Message:
    """``message`` with its image parts replaced by references into the trajectory's image list."""
    if not isinstance(message["content"], list):
        return dict(message)
    parts, k = [], first_index
    for part in message["content"]:
        if part["type"] == "image":
            parts.append({"type": "image", "index": k})
            k += 1
        else:
            parts.append(dict(part))
    return {**message, "content": parts}


def make_pool(
    env_runner: str, env_id: str, size: int, env_kwargs: dict[str, Any] | None = None, **options: Any
) -> EnvPool:
    """An :class:`EnvPool` of ``size`` text-interface slots of ``env_id``."""
    make_env: Callable[[], gym.Env] = partial(make_text_env, env_id, env_kwargs)
    if env_runner == "inline":
        return InlineEnvs(make_env, size)
    if env_runner == "vector":
        return VectorEnvs(make_env, size, **options)
    if env_runner == "hosted":
        return HostedEnvs(make_env, size, **options)
    if env_runner == "ray":
        return RayEnvs(make_env, size, **options)
    raise ValueError(f"unknown env runner {env_runner!r}; choose one of {', '.join(ENV_RUNNERS)}")


class _Live:
    """The collector's working state for one slot."""

    def __init__(self, trajectory: Trajectory, conversation: list[Message], tools: list[dict[str, Any]] | None):
        self.trajectory = trajectory
        self.conversation = conversation  # messages with image arrays (for chat-level policies)
        self.tools = tools


def collect(
    policy: ChatPolicy,
    env_id: str,
    seeds: Sequence[int],
    group_size: int = 1,
    sampling: Sampling | None = None,
    formatter: ChatFormatter | None = None,
    env_kwargs: dict[str, Any] | None = None,
    max_turns: int | None = None,
    max_total_tokens: int | None = None,
    env_runner: str = "inline",
    pool: EnvPool | None = None,
    stats: RolloutStats | None = None,
    on_turn: Callable[[int, int], None] | None = None,
) -> list[Trajectory]:
    """Roll out ``len(seeds) x group_size`` episodes of ``env_id``'s text interface; see the module doc.

    ``pool`` reuses open env slots (its size must be ``len(seeds) * group_size``); otherwise one is
    made with ``env_runner`` and closed at the end. ``on_turn(turn, live)`` reports progress."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if not seeds:
        raise ValueError("no seeds: give one reset seed per group")
    sampling = sampling or Sampling()
    formatter = formatter or ChatFormatter()
    stats = stats if stats is not None else RolloutStats()
    token_level = isinstance(policy, TokenPolicy)
    size = len(seeds) * group_size
    own_pool = pool is None
    pool = pool or make_pool(env_runner, env_id, size, env_kwargs)
    if pool.size != size:
        raise ValueError(f"the pool has {pool.size} slots; {len(seeds)} seeds x {group_size} need {size}")
    try:
        t0 = time.perf_counter()
        resets = pool.reset([seeds[slot // group_size] for slot in range(size)])
        stats.env += time.perf_counter() - t0
        live: dict[int, _Live] = {}
        t0 = time.perf_counter()
        for slot, (obs, info) in enumerate(resets):
            live[slot] = _start(policy, formatter, env_id, env_kwargs, slot, group_size, obs, info, token_level)
        stats.bookkeeping += time.perf_counter() - t0
        finished: dict[int, Trajectory] = {}
        turn = 0
        while live:
            if on_turn is not None:
                on_turn(turn, len(live))
            actions, turn_finished = _generate(policy, sampling, live, token_level, stats)
            t0 = time.perf_counter()
            results = pool.step(actions)
            stats.env += time.perf_counter() - t0
            t0 = time.perf_counter()
            for slot, result in results.items():
                state = live[slot]
                trajectory = state.trajectory
                last_turn = max_turns is not None and len(trajectory.steps) >= max_turns
                token_budget = None if max_total_tokens is None else max_total_tokens - sampling.max_new_tokens
                _record(
                    policy,
                    formatter,
                    state,
                    actions[slot],
                    turn_finished[slot],
                    result,
                    last_turn,
                    token_budget,
                    token_level,
                )
                if trajectory.done:
                    trajectory.check()
                    finished[slot] = trajectory
                    del live[slot]
            stats.bookkeeping += time.perf_counter() - t0
            stats.turns += 1
            turn += 1
        return [finished[slot] for slot in range(size)]
    finally:
        if own_pool:
            pool.close()


def _start(
    policy: ChatPolicy,
    formatter: ChatFormatter,
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    slot: int,
    group_size: int,
    obs: dict[str, Any],
    info: dict[str, Any],
    token_level: bool,
) -> _Live:
    spec = info["prompt_spec"]
    tools = formatter.tools(spec)
    messages = formatter.start(obs, spec)
    trajectory = Trajectory(
        env_id=env_id,
        task_seed=int(info["task_seed"]),
        group=slot // group_size,
        member=slot % group_size,
        env_kwargs=json_safe(env_kwargs or {}),
        prompt_spec=spec.to_dict(),
        tools=tools,
        policy=policy.name,
    )
    index = 0
    for message in messages:
        trajectory.messages.append(_indexed(message, index))
        index += _image_count(message)
    if token_level:
        prompt = cast(TokenPolicy, policy).codec.start(messages, tools)
        trajectory.prompt_ids = prompt.ids
        trajectory.images = [np.asarray(image, dtype=np.uint8) for image in prompt.images]
    else:
        trajectory.images = [np.asarray(image, dtype=np.uint8) for image in obs["images"]]
    trajectory.prompt_images = len(trajectory.images)
    return _Live(trajectory, messages, tools)


def _generate(
    policy: ChatPolicy, sampling: Sampling, live: dict[int, _Live], token_level: bool, stats: RolloutStats
) -> tuple[dict[int, str], dict[int, bool]]:
    """One batched generation over every live trajectory: the action texts, and whether each turn
    ended with the end-of-turn token. Model tokens are appended to the token-level records here."""
    slots = sorted(live)
    t0 = time.perf_counter()
    if token_level:
        token_policy = cast(TokenPolicy, policy)  # checked once by the caller (a protocol check is slow)
        completions = token_policy.generate([live[s].trajectory.sequence() for s in slots], sampling)
        stats.generate += time.perf_counter() - t0
        t0 = time.perf_counter()
        actions, turn_finished = {}, {}
        for slot, completion in zip(slots, completions, strict=True):
            trajectory = live[slot].trajectory
            start = len(trajectory.completion_ids)
            trajectory.append(completion.ids, 1, completion.logprobs)
            trajectory.steps.append(_pending_step((start, start + len(completion.ids)), completion.finished))
            actions[slot] = token_policy.codec.decode(completion.ids)
            turn_finished[slot] = completion.finished
            stats.model_tokens += len(completion.ids)
        stats.bookkeeping += time.perf_counter() - t0
        return actions, turn_finished
    replies = policy.reply([ChatRequest(live[s].conversation, live[s].tools) for s in slots], sampling)
    stats.generate += time.perf_counter() - t0
    actions, turn_finished = {}, {}
    for slot, reply in zip(slots, replies, strict=True):
        live[slot].trajectory.steps.append(_pending_step((0, 0), reply.finished))
        if reply.ids is not None:
            stats.model_tokens += len(reply.ids)
        actions[slot] = reply.text
        turn_finished[slot] = reply.finished
    return actions, turn_finished


def _pending_step(span: tuple[int, int], finished_turn: bool) -> Step:
    return Step("", 0.0, False, False, {}, "", 0, span, finished_turn)


def _record(
    policy: ChatPolicy,
    formatter: ChatFormatter,
    state: _Live,
    action: str,
    finished_turn: bool,
    result: tuple[dict[str, Any], float, bool, bool, dict[str, Any]],
    last_turn: bool,
    token_budget: int | None,
    token_level: bool,
) -> None:
    """Record one env step, then end the trajectory (episode over, turn or token budget spent) or
    append the env's next turn. ``token_budget``: the most ids the trajectory may hold before a
    model turn (token-level policies); ``token_level``: ``policy`` is a :class:`TokenPolicy` (checked
    once per collection: a runtime protocol check is slow)."""
    obs, reward, terminated, truncated, info = result
    trajectory = state.trajectory
    step = trajectory.steps[-1]
    step.action, step.reward, step.terminated, step.truncated = action, reward, terminated, truncated
    step.info = {k: v for k, v in json_safe(info).items() if k != "prompt_spec"}
    state.conversation.append(assistant_message(action))
    trajectory.messages.append(assistant_message(action))
    if info.get("env_error"):
        trajectory.finish, trajectory.env_error = "env_error", str(info["env_error"])
        return
    if terminated or truncated:
        trajectory.finish = "terminated" if terminated else "truncated"
        return
    if last_turn:
        trajectory.finish = "turn_limit"
        return
    message = formatter.feedback(obs)
    if token_level:
        continuation = cast(TokenPolicy, policy).codec.continuation(
            message, state.tools, after_finished_turn=finished_turn
        )
        if (
            token_budget is not None
            and len(trajectory.prompt_ids) + len(trajectory.completion_ids) + len(continuation.ids) > token_budget
        ):
            trajectory.finish = "token_limit"
            return
        trajectory.append(continuation.ids, 0)
        trajectory.images += [np.asarray(image, dtype=np.uint8) for image in continuation.images]
    else:
        trajectory.images += [np.asarray(image, dtype=np.uint8) for image in obs["images"]]
    step.feedback, step.feedback_images = obs["text"], len(obs["images"])
    trajectory.messages.append(_indexed(message, len(trajectory.images) - len(obs["images"])))
    state.conversation.append(message)
