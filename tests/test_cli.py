"""The `visrl` command and the README's generated env table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from visrl_envs.registry import REGISTRY, env_page, env_page_name, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_visrl_list_prints_every_id() -> None:
    out = subprocess.run([sys.executable, "-m", "visrl_envs.cli", "list"], capture_output=True, text=True, check=True)
    for entry in REGISTRY:
        assert entry.id in out.stdout


def test_readme_table_is_generated_from_the_registry() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README env table is stale: paste the output of `visrl table`"


def test_every_registered_entry_point_has_a_full_docstring() -> None:
    import importlib

    for entry in REGISTRY:
        module, _, name = entry.entry_point.partition(":")
        doc = getattr(importlib.import_module(module), name).__doc__ or ""
        sections = (
            "Description",
            "Action Space",
            "Observation Space",
            "Rewards",
            "Starting State",
            "Episode End",
            "Arguments",
            "Anchors",
            "Version History",
        )
        for section in (f"## {name}\n" for name in sections):
            assert section in doc, (entry.id, section)


def test_env_pages_are_generated_from_docstrings() -> None:
    for entry in REGISTRY:
        page = ROOT / "docs" / "envs" / env_page_name(entry)
        assert page.exists() and page.read_text() == env_page(entry), f"run `visrl docs` to refresh {page}"


def test_play_jigsaw_with_the_mouse() -> None:
    import pygame

    from visrl_envs.play import play

    pygame.display.init()
    # a 2x2 board at 336 px: click position 1 (top-left) then position 4 (bottom-right), then quit
    env = __import__("gymnasium").make("visrl/Jigsaw-v1", difficulty=1)
    env.reset(seed=0)
    events = [(10, 10), (300, 300)]
    for pos in events:
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pos, button=1))
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_d))
    rewards = play("visrl/Jigsaw-v1", difficulty=1, seed=0, window=True, idle_timeout_ms=200)
    assert len(rewards) == 2  # the swap, then "done"
    assert rewards[1] == 0.0


def test_play_with_typed_actions() -> None:
    from visrl_envs.play import play

    answers = iter(["<answer>nope</answer>", "B"])  # a bare answer is accepted by hand
    rewards = play("visrl/JigsawPair-v1", seed=0, window=True, input_fn=lambda prompt: next(answers))
    assert rewards[0] == -0.1 and rewards[1] in (0.5, 1.5)


def test_play_without_a_display_falls_back_to_typed_actions(capsys: pytest.CaptureFixture[str]) -> None:
    from visrl_envs.play import display_available, play

    assert not display_available()  # the tests run with SDL_VIDEODRIVER=dummy
    answers = iter(['<tool_call>{"name": "swap", "arguments": {"a": 1, "b": 2}}</tool_call>', "done"])
    rewards = play("visrl/Jigsaw-v1", seed=0, input_fn=lambda prompt: next(answers))
    assert len(rewards) == 2 and "No display found: playing with typed actions" in capsys.readouterr().out


def test_cli_errors_are_one_line() -> None:
    unknown = subprocess.run(
        [sys.executable, "-m", "visrl_envs.cli", "play", "visrl/Nope-v0"], capture_output=True, text=True
    )
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip().count("\n") == 0 and "known: visrl/SvgRender-v1" in unknown.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "visrl_envs.cli", "play", "visrl/Jigsaw-v1", "--difficulty", "9"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "SDL_VIDEODRIVER": "dummy"},
    )
    assert bad.returncode == 2 and bad.stderr.strip() == "visrl play: difficulty must be an integer in [0, 3], got 9"
    version = subprocess.run([sys.executable, "-m", "visrl_envs.cli", "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"visrl {__import__('visrl_envs').__version__}"
