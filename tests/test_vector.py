"""The batched vector env: the same results as a SyncVectorEnv, one backend call per step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from visrl_envs.core.errors import BackendCrash
from visrl_envs.core.vector import BatchedVectorEnv
from visrl_envs.registry import REGISTRY
from visrl_envs.testing import digest

BATCHED_IDS = [e.id for e in REGISTRY if e.vector_entry_point]


def _run(envs: gym.vector.VectorEnv, steps: int, mode: str) -> str:
    import hashlib

    h = hashlib.sha256()
    rng = np.random.default_rng(0)
    digest(envs.reset(seed=[5, 6, 7]), h)
    for step in range(steps):
        if mode == "text" and step % 3 == 0:
            actions: Any = tuple(envs.call("oracle_text"))
        elif mode == "text":
            actions = tuple(env.unwrapped.sample_text_action(rng) for env in envs.unwrapped.envs)
            actions = (*actions[:-1], "<answer><svg><rect</answer>")  # one malformed program per batch
        else:
            actions = np.stack([env.unwrapped.sample_numeric_action(rng) for env in envs.unwrapped.envs])
        digest(envs.step(actions), h)
    envs.close()
    return h.hexdigest()


@pytest.mark.parametrize("env_id", BATCHED_IDS)
@pytest.mark.parametrize("mode", ["text", "numeric"])
def test_batched_equals_sync(env_id: str, mode: str) -> None:
    batched = gym.make_vec(env_id, num_envs=3, action_mode=mode, size=64)
    assert isinstance(batched.unwrapped, BatchedVectorEnv)
    sync = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync", action_mode=mode, size=64)
    assert _run(batched, 12, mode) == _run(sync, 12, mode)


def test_one_render_call_per_step_and_one_renderer_per_vector_env() -> None:
    envs = gym.make_vec("visrl/SvgRender-v1", num_envs=4, size=64)
    envs.reset(seed=0)
    lead = envs.unwrapped.envs[0]
    renderer = lead.renderer.get()
    calls: list[int] = []
    original = renderer.render_batch

    def counted(programs: list[str], size: int) -> list[Any]:
        calls.append(len(programs))
        return original(programs, size)

    renderer.render_batch = counted
    rng = np.random.default_rng(0)
    for _ in range(3):
        envs.step(tuple(env.unwrapped.sample_text_action(rng) for env in envs.unwrapped.envs))
    assert calls == [4, 4, 4]
    workers = [env.renderer.peek().worker.pid for env in envs.unwrapped.envs]
    assert workers[0] is not None and workers[1:] == [None, None, None], "one sandbox worker serves the batch"
    envs.close()


def test_a_crashed_batch_is_retried_item_by_item_with_blame() -> None:
    envs = gym.make_vec("visrl/SvgRender-v1", num_envs=2, size=64)
    envs.reset(seed=0)
    renderer = envs.unwrapped.envs[0].renderer.get()

    def crash(programs: list[str], size: int) -> list[Any]:
        raise BackendCrash("worker killed by SIGSEGV", "svg renderer")

    renderer.render_batch = crash  # the whole batch dies once; each program then renders alone
    _, reward, terminated, _, info = envs.step(tuple(envs.call("oracle_text")))
    assert terminated.all() and np.allclose(reward, 1.0)
    assert list(info["action_error"]) == [None, None] and list(info["env_error"]) == [None, None]
    envs.close()


def test_max_episode_steps_truncates_like_time_limit() -> None:
    envs = gym.make_vec("visrl/SvgRender-v1", num_envs=2, size=64, max_episode_steps=2)
    envs.reset(seed=0)
    null = tuple(envs.call("null_text"))
    assert not envs.step(null)[3].any()
    assert envs.step(null)[3].all()
    envs.close()
