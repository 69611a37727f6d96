"""Vector envs that batch the backend call of a step across their sub-envs.

Every visrl env steps in three stages (:class:`~visrl_envs.core.base.VisualEnv`): parse, backend
call, observe-and-score. :class:`BatchedVectorEnv` runs stage 1 for all sub-envs, then the family's
``run_backend_batch`` once (one render call for N programs; for TikZ one compile of N pictures),
then stage 3 for each. It is Gymnasium's :class:`~gymnasium.vector.SyncVectorEnv` in every other
respect (reset, autoreset modes, info batching, ``call``/``get_attr``), and gives the same
observations, rewards and infos as a ``SyncVectorEnv`` of the same envs, seeds and actions.

A family offers it through its registry entry's ``vector_entry_point`` (a function made by
:func:`batched_vector_entry_point`), so ``gym.make_vec(id, num_envs=N)`` picks it by default;
``vectorization_mode="sync"`` or ``"async"`` still give Gymnasium's own vector envs.

The sub-envs are built by the family's class directly, not by ``gym.make``: no wrapper may stand
between the parsed action and the env (``make_vec`` refuses ``wrappers=`` in this mode), and the
registry's ``max_episode_steps`` is applied here as ``TimeLimit`` would.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate, iterate

from visrl_envs.core.base import PendingStep, VisualEnv


class BatchedVectorEnv(SyncVectorEnv):
    """A synchronous vector env of one visrl env class with one batched backend call per step."""

    def __init__(
        self,
        env_fns: list[Callable[[], VisualEnv]],
        *,
        max_episode_steps: int | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        copy: bool = True,
    ) -> None:
        super().__init__(env_fns, copy=copy, autoreset_mode=autoreset_mode)
        classes = {type(env) for env in self.envs}
        env_class = next(iter(classes))
        if len(classes) != 1 or not issubclass(env_class, VisualEnv):
            raise TypeError(f"a BatchedVectorEnv holds envs of one VisualEnv class, got {sorted(map(str, classes))}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError("max_episode_steps must be >= 1")
        self.env_class: type[VisualEnv] = env_class
        self.max_episode_steps = max_episode_steps
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        mask = (options or {}).get("reset_mask")
        self._elapsed[slice(None) if mask is None else np.asarray(mask, dtype=bool)] = 0
        return super().reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        action_list = list(iterate(self.action_space, actions))
        next_step = self.autoreset_mode == AutoresetMode.NEXT_STEP
        stepping = [i for i in range(self.num_envs) if not (next_step and self._autoreset_envs[i])]
        envs: list[VisualEnv] = [self.envs[i] for i in stepping]  # type: ignore[misc]
        pendings: dict[int, PendingStep] = {i: self.envs[i].prepare_step(action_list[i]) for i in stepping}  # type: ignore[attr-defined]
        results = dict(
            zip(stepping, self.env_class.run_backend_batch(envs, [pendings[i] for i in stepping]), strict=True)
        )
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            env: Any = self.envs[i]
            if i not in pendings:
                self._env_obs[i], env_info = env.reset()
                self._elapsed[i] = 0
                self._rewards[i] = 0.0
                self._terminations[i] = False
                self._truncations[i] = False
            else:
                obs, reward, terminated, truncated, env_info = env.finish_step(pendings[i], results[i])
                self._elapsed[i] += 1
                if self.max_episode_steps is not None and self._elapsed[i] >= self.max_episode_steps:
                    truncated = True
                self._env_obs[i], self._rewards[i] = obs, reward
                self._terminations[i], self._truncations[i] = terminated, truncated
                if self.autoreset_mode == AutoresetMode.SAME_STEP and (terminated or truncated):
                    infos = self._add_info(infos, {"final_obs": obs, "final_info": env_info}, i)
                    self._env_obs[i], env_info = env.reset()
                    self._elapsed[i] = 0
            infos = self._add_info(infos, env_info, i)
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        return (
            self._copy(self._observations),
            np.copy(self._rewards),
            np.copy(self._terminations),
            np.copy(self._truncations),
            infos,
        )

    def _copy(self, observations: Any) -> Any:
        from copy import deepcopy

        return deepcopy(observations) if self.copy else observations


def batched_vector_entry_point(env_class: type[VisualEnv]) -> Callable[..., BatchedVectorEnv]:
    """The ``vector_entry_point`` of a family: ``make(num_envs, max_episode_steps=None, **kwargs)``
    builds a :class:`BatchedVectorEnv` of ``num_envs`` ``env_class(**kwargs)``."""

    def make(
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        **kwargs: Any,
    ) -> BatchedVectorEnv:
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        factory = functools.partial(env_class, **kwargs)
        return BatchedVectorEnv(
            [factory] * num_envs, max_episode_steps=max_episode_steps, autoreset_mode=autoreset_mode
        )

    make.__doc__ = f"A BatchedVectorEnv of {env_class.__name__} (the registry's vector_entry_point)."
    return make
