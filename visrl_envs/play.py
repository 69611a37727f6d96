"""Play a visrl env yourself in its ``render_mode="human"`` window: ``visrl play ID``.

Envs with a pointer interface (the jigsaw swap puzzle: click two tiles to swap them, ``d`` to stop)
are played with the mouse; every other env reads text actions from the terminal. ``Esc`` or closing
the window quits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

import visrl_envs  # noqa: F401


def _report(obs: dict[str, Any], reward: float, info: dict[str, Any]) -> None:
    print(obs["text"])
    print(f"reward {reward:+.3f}  score {info['score']:.3f}  success {info['success']}")


def play(
    env_id: str,
    difficulty: int = 0,
    seed: int = 0,
    *,
    input_fn: Callable[[str], str] = input,
    idle_timeout_ms: int | None = None,
) -> list[float]:
    """Play one episode; returns the rewards. ``idle_timeout_ms`` ends a mouse game after that long
    without input (for scripted runs)."""
    env = gym.make(env_id, difficulty=difficulty, render_mode="human")
    base = env.unwrapped
    obs, info = env.reset(seed=seed)
    print(obs["text"])
    rewards: list[float] = []
    try:
        if hasattr(base, "click_action"):
            _mouse_loop(env, base, rewards, idle_timeout_ms)
        else:
            while True:
                try:
                    action = input_fn("action> ")
                except EOFError:
                    break
                obs, reward, terminated, truncated, info = env.step(action)
                rewards.append(float(reward))
                _report(obs, float(reward), info)
                if terminated or truncated:
                    break
    finally:
        env.close()
    return rewards


def _mouse_loop(env: gym.Env, base: Any, rewards: list[float], idle_timeout_ms: int | None) -> None:
    import pygame

    print("Click two tiles to swap them; press d when done, Esc to quit.")
    while True:
        event = pygame.event.wait(idle_timeout_ms or 0)
        if event.type == pygame.NOEVENT or event.type == pygame.QUIT:
            return
        action = None
        if event.type == pygame.KEYDOWN:
            if event.key == pygame.K_ESCAPE:
                return
            if event.key == pygame.K_d:
                action = "<answer>done</answer>"
        elif event.type == pygame.MOUSEBUTTONDOWN and event.button == 1:
            action = base.click_action(*event.pos)
            if action is None:
                env.render()  # show the selection
        if action is not None:
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(float(reward))
            _report(obs, float(reward), info)
            if terminated or truncated:
                return
