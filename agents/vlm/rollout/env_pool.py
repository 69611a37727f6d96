"""Where the envs of a rollout step: in-process, in a Gymnasium vector env, or on Ray actors.

The collector sees one small interface, :class:`EnvPool`: reset every slot to a seed, then step
only the slots whose trajectories are still live, each with its own text action.

- :class:`InlineEnvs`: plain envs in this process (the cheapest when the model dominates).
- :class:`VectorEnvs`: any Gymnasium ``VectorEnv`` (``AsyncVectorEnv`` subprocesses by default).
  A vector env steps every slot at once, so a slot whose trajectory has ended is sent an empty
  action and its result ignored (Gymnasium autoresets it first under ``NEXT_STEP``).
- :class:`HostedEnvs`: ``workers`` ``AsyncVectorEnv`` subprocesses, each hosting several slots
  (B x G slots need not mean B x G processes); only live slots step.
- :class:`RayEnvs`: the slots spread over Ray actors (local cores or a cluster); only live slots
  step. Ray is an optional dependency (``pip install ray``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

#: ``(observation, reward, terminated, truncated, info)`` of one slot.
StepResult = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]


class EnvPool(Protocol):
    """``size`` slots of the same env id, reset together and stepped by slot."""

    size: int

    def reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]: ...

    def step(self, actions: dict[int, str]) -> dict[int, StepResult]: ...

    def close(self) -> None: ...


#: Keywords with flags of their own on the command line (``--split``, ``--difficulty``) or fixed by
#: the caller (the text interface).
RESERVED_ENV_KWARGS = ("split", "difficulty", "action_mode")


def env_kwargs_argument(text: str) -> dict[str, Any]:
    """``--env-kwargs '{"size": 56}'``: a JSON object of extra ``gym.make`` keywords (an argparse type)."""
    import argparse
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object of keyword arguments is needed, got {text!r}")
    reserved = sorted(set(value) & set(RESERVED_ENV_KWARGS))
    if reserved:
        raise argparse.ArgumentTypeError(f"{', '.join(reserved)} cannot be set here (use its own flag)")
    return value


def make_text_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """The text interface of ``env_id`` (registering visrl's ids first: this runs in fresh workers too)."""
    import visrl_envs  # noqa: F401

    return gym.make(env_id, action_mode="text", **(env_kwargs or {}))


class InlineEnvs:
    """``size`` envs made by ``make_env`` in this process."""

    def __init__(self, make_env: Callable[[], gym.Env], size: int) -> None:
        self.size = size
        self.envs = [make_env() for _ in range(size)]

    def reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [env.reset(seed=int(seed)) for env, seed in zip(self.envs, seeds, strict=True)]

    def step(self, actions: dict[int, str]) -> dict[int, StepResult]:
        results: dict[int, StepResult] = {}
        for slot, action in actions.items():
            obs, reward, terminated, truncated, info = self.envs[slot].step(action)
            results[slot] = (obs, float(reward), bool(terminated), bool(truncated), info)
        return results

    def close(self) -> None:
        for env in self.envs:
            env.close()


def unbatch_info(info: dict[str, Any], slot: int) -> dict[str, Any]:
    """The info dict of one slot of a vector env's batched info (Gymnasium's ``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[slot]:
            continue
        if isinstance(value, dict):
            out[key] = unbatch_info(value, slot)
        else:
            item = value[slot]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def _slot_observation(obs: dict[str, Any], slot: int) -> dict[str, Any]:
    return {"images": tuple(obs["images"][slot]), "text": str(obs["text"][slot])}


class VectorEnvs:
    """A Gymnasium vector env as a pool (by default ``AsyncVectorEnv`` of ``size`` subprocesses)."""

    def __init__(self, make_env: Callable[[], gym.Env], size: int, vector_env: gym.vector.VectorEnv | None = None):
        self.vector_env = vector_env or gym.vector.AsyncVectorEnv([make_env] * size)
        if self.vector_env.num_envs != size:
            raise ValueError(f"the vector env has {self.vector_env.num_envs} slots, the rollout needs {size}")
        mode = self.vector_env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"the vector env must autoreset on the next step (NEXT_STEP), not {mode}")
        self.size = size

    def reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        obs, info = self.vector_env.reset(seed=[int(s) for s in seeds])  # type: ignore[arg-type]  # per-slot seeds
        return [(_slot_observation(obs, i), unbatch_info(info, i)) for i in range(self.size)]

    def step(self, actions: dict[int, str]) -> dict[int, StepResult]:
        batch = tuple(actions.get(slot, "") for slot in range(self.size))
        obs, rewards, terminated, truncated, info = self.vector_env.step(batch)
        return {
            slot: (
                _slot_observation(obs, slot),
                float(rewards[slot]),
                bool(terminated[slot]),
                bool(truncated[slot]),
                unbatch_info(info, slot),
            )
            for slot in actions
        }

    def close(self) -> None:
        self.vector_env.close()


class _SlotHost(gym.Env):
    """One ``AsyncVectorEnv`` worker holding the envs of slots ``first .. first + count - 1``.

    The vector env only carries ``call("host_reset" | "host_step", ...)`` to it (Gymnasium's step
    API would step every slot); its own spaces are placeholders. The envs are made on first use, so
    the probe env Gymnasium builds in the parent costs nothing."""

    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(1)

    def __init__(self, make_env: Callable[[], gym.Env], first: int, count: int) -> None:
        self.make_env, self.first, self.count = make_env, first, count
        self.envs: InlineEnvs | None = None

    def host_reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        if self.envs is None:
            self.envs = InlineEnvs(self.make_env, self.count)
        return self.envs.reset(seeds[self.first : self.first + self.count])

    def host_step(self, actions: dict[int, str]) -> dict[int, StepResult]:
        if self.envs is None:
            raise gym.error.ResetNeeded("host_reset before host_step")
        mine = {s - self.first: a for s, a in actions.items() if self.first <= s < self.first + self.count}
        return {s + self.first: r for s, r in self.envs.step(mine).items()}

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()


class HostedEnvs:
    """``size`` slots on ``workers`` ``AsyncVectorEnv`` subprocesses (as even a split as possible)."""

    def __init__(self, make_env: Callable[[], gym.Env], size: int, workers: int = 4) -> None:
        workers = max(1, min(workers, size))
        counts = [size // workers + (1 if w < size % workers else 0) for w in range(workers)]
        firsts = [sum(counts[:w]) for w in range(workers)]
        hosts = [partial(_SlotHost, make_env, first, count) for first, count in zip(firsts, counts, strict=True)]
        self.vector_env = gym.vector.AsyncVectorEnv(hosts, shared_memory=False)
        self.size = size

    def reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [result for part in self.vector_env.call("host_reset", [int(s) for s in seeds]) for result in part]

    def step(self, actions: dict[int, str]) -> dict[int, StepResult]:
        merged: dict[int, StepResult] = {}
        for part in self.vector_env.call("host_step", actions):
            merged.update(part)
        return {slot: merged[slot] for slot in actions}

    def close(self) -> None:
        self.vector_env.close()


class _EnvActor:
    """The envs of some slots, inside one Ray actor."""

    def __init__(self, make_env: Callable[[], gym.Env], count: int) -> None:
        self.envs = InlineEnvs(make_env, count)

    def reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return self.envs.reset(seeds)

    def step(self, actions: dict[int, str]) -> dict[int, StepResult]:
        return self.envs.step(actions)

    def close(self) -> None:
        self.envs.close()


class RayEnvs:
    """The slots spread over ``actors`` Ray actors (``ray.init`` first, or it starts a local instance)."""

    def __init__(self, make_env: Callable[[], gym.Env], size: int, actors: int = 2, num_cpus: float = 1.0) -> None:
        try:
            import ray
        except ImportError as err:
            raise ImportError("RayEnvs needs Ray: pip install ray") from err
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        actors = max(1, min(actors, size))
        self._ray = ray
        self.size = size
        self._owner = [slot % actors for slot in range(size)]
        self._local = [sum(1 for s in range(slot) if self._owner[s] == self._owner[slot]) for slot in range(size)]
        counts = [self._owner.count(a) for a in range(actors)]
        remote = ray.remote(num_cpus=num_cpus)(_EnvActor)
        self.actors: list[Any] = [remote.remote(make_env, count) for count in counts]

    def _by_actor(self, values: dict[int, Any]) -> dict[int, dict[int, Any]]:
        grouped: dict[int, dict[int, Any]] = {}
        for slot, value in values.items():
            grouped.setdefault(self._owner[slot], {})[self._local[slot]] = value
        return grouped

    def reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        grouped = self._by_actor(dict(enumerate(seeds)))
        futures = {a: self.actors[a].reset.remote([grouped[a][k] for k in sorted(grouped[a])]) for a in grouped}
        done = {a: self._ray.get(f) for a, f in futures.items()}
        return [done[self._owner[slot]][self._local[slot]] for slot in range(self.size)]

    def step(self, actions: dict[int, str]) -> dict[int, StepResult]:
        grouped = self._by_actor(actions)
        futures = {a: self.actors[a].step.remote(grouped[a]) for a in grouped}
        done = {a: self._ray.get(f) for a, f in futures.items()}
        return {slot: done[self._owner[slot]][self._local[slot]] for slot in actions}

    def close(self) -> None:
        for actor in self.actors:
            self._ray.get(actor.close.remote())
            self._ray.kill(actor)
        self.actors = []
