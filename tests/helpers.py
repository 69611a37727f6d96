"""Trajectory helpers shared by the conformance tests (also run in a subprocess)."""

from __future__ import annotations

import hashlib
from typing import Any

import gymnasium as gym
import numpy as np

import visrl_envs  # noqa: F401

MALFORMED_CORE = [
    "",
    " ",
    "hello",
    "<tool_call>",
    "<tool_call>{}</tool_call>",
    "<tool_call>not json</tool_call>",
    '<tool_call>{"name": 3}</tool_call>',
    '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "swap", "arguments": []}</tool_call><tool_call>{"name": "swap"}</tool_call>',
    '<tool_call>{"name": "swap", "arguments": {"a": 1e999, "b": NaN}}</tool_call>',
    '<tool_call>{"name": "swap", "arguments": {"a": "1", "b": true}}</tool_call>',
    '<tool_call>{"name": "swap", "arguments": {"a": -5, "b": 99999999999999999999}}</tool_call>',
    "<tool_call>" + "[" * 5000 + "</tool_call>",
    "<answer>",
    "<answer>%%%</answer>",
    "<answer>\x00\x01\x02</answer>",
    "<answer>" + "9" * 10000 + "</answer>",
    '<tool_call>{"name": "swap", "arguments": {"a": ' + "7" * 5000 + ', "b": 1}}</tool_call>',
    "<answer>" + "1 " * 5000 + "</answer>",
    "<think>unclosed",
    "<answer>done</answer><tool_call>{}</tool_call>",
    "\ud800\udfff surrogate soup \u202e",
    "<svg",
    "<answer><svg xmlns='http://www.w3.org/2000/svg'><rect</answer>",
    "<answer><svg><g><g></svg></answer>",
    "<answer><!DOCTYPE svg [<!ENTITY x 'y'>]><svg>&x;</svg></answer>",
    "A" * 70000,
]


def arrays(obs: dict[str, Any]) -> list[np.ndarray]:
    """Every array of an observation: numeric values, and the images of a text observation."""
    out: list[np.ndarray] = []
    for value in obs.values():
        if isinstance(value, np.ndarray):
            out.append(value)
        elif isinstance(value, tuple):
            out += [v for v in value if isinstance(v, np.ndarray)]
    return out


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` still exists (reaped processes do not)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def malformed_actions(n: int, seed: int = 0) -> list[str]:
    """``n`` malformed text actions: the core corpus, then random garbage built from it."""
    rng = np.random.default_rng(seed)
    out = list(MALFORMED_CORE)
    alphabet = list("<>{}[]\"':,/\\ \n\tabcxyz0123456789-.\x00é漢")
    while len(out) < n:
        kind = int(rng.integers(4))
        noise = "".join(rng.choice(alphabet, size=int(rng.integers(0, 200))))
        if kind == 0:
            out.append(noise)
        elif kind == 1:
            out.append(f"<tool_call>{noise}</tool_call>")
        elif kind == 2:
            out.append(f"<answer>{noise.replace('<', '').replace('>', '')}?!</answer>")
        else:
            base = MALFORMED_CORE[int(rng.integers(len(MALFORMED_CORE)))].replace("done", "dome")
            cut = int(rng.integers(0, len(base) + 1))
            out.append(base[:cut] + noise + "#" * (1 + cut % 3) if base else noise + "#")
    return out[:n]


def digest(value: Any, h: Any) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(str(key).encode())
            digest(value[key], h)
    elif isinstance(value, np.ndarray) and value.dtype == object:  # tobytes() would hash pointers
        h.update(str(value.shape).encode())
        for item in value.ravel():
            digest(item, h)
    elif isinstance(value, np.ndarray):
        h.update(str(value.dtype).encode() + str(value.shape).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, list | tuple):
        for v in value:
            digest(v, h)
    elif isinstance(value, float):
        h.update(np.float64(value).tobytes())
    else:
        h.update(repr(value).encode())


def trajectory(env_id: str, mode: str, seed: int, steps: int, **kwargs: Any) -> list[Any]:
    """Run ``steps`` steps of seeded random (well-formed) actions, resetting on episode end."""
    env = gym.make(env_id, action_mode=mode, **kwargs)
    rng = np.random.default_rng(seed + 1000)
    out: list[Any] = []
    obs, info = env.reset(seed=seed)
    out.append((obs, info))
    for _ in range(steps):
        base = env.unwrapped
        action = base.sample_text_action(rng) if mode == "text" else base.sample_numeric_action(rng)
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            out.append((obs, info))
    env.close()
    return out


def trajectory_digest(env_id: str, mode: str, seed: int, steps: int) -> str:
    h = hashlib.sha256()
    digest(trajectory(env_id, mode, seed, steps), h)
    return h.hexdigest()
