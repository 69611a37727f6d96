"""Play a visrl env yourself: ``visrl play ID``.

With a display, the env opens its ``render_mode="human"`` window: envs with a pointer interface (the
jigsaw swap puzzle: click two tiles to swap them, ``d`` to stop) are played with the mouse, the
others read text actions from the terminal while the window shows the state. Without a display (a
server, ``SDL_VIDEODRIVER=dummy``) every env is played by typed text actions, and the frames are not
shown. A bare answer (``B``, ``2 1 3``) is accepted where the env expects an ``<answer>``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym

import visrl_envs  # noqa: F401


def display_available() -> bool:
    """Whether a window can be shown (not under a dummy SDL driver; on Linux, a DISPLAY or Wayland)."""
    if os.environ.get("SDL_VIDEODRIVER", "").lower() in ("dummy", "offscreen"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def as_action(env: Any, typed: str) -> str:
    """What a person typed, as an action: a bare answer is wrapped in ``<answer>`` tags when the env
    takes answers and the text has no tags of its own."""
    answer = env.tools.answer
    if answer is not None and "<" not in typed and answer.kind in ("choice", "integers", "text"):
        return f"<answer>{typed.strip()}</answer>"
    return typed


def _report(obs: dict[str, Any], reward: float, info: dict[str, Any]) -> None:
    print(obs["text"])
    print(f"reward {reward:+.3f}  score {info['score']:.3f}  success {info['success']}")


def play(
    env_id: str,
    difficulty: int = 0,
    seed: int = 0,
    *,
    window: bool | None = None,
    input_fn: Callable[[str], str] = input,
    idle_timeout_ms: int | None = None,
) -> list[float]:
    """Play one episode; returns the rewards. ``window``: ``None`` opens one when a display is
    available. ``idle_timeout_ms`` ends a mouse game after that long without input (scripted runs)."""
    if window is None:
        window = display_available()
        if not window:
            print("No display found: playing with typed actions (frames are not shown).")
    env = gym.make(env_id, difficulty=difficulty, render_mode="human" if window else None)
    base = env.unwrapped
    obs, info = env.reset(seed=seed)
    print(obs["text"])
    rewards: list[float] = []
    try:
        if window and hasattr(base, "click_action"):
            _mouse_loop(env, base, rewards, idle_timeout_ms)
        else:
            while True:
                try:
                    typed = input_fn("action> ")
                except EOFError:
                    break
                obs, reward, terminated, truncated, info = env.step(as_action(base, typed))
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
