"""The `visrl` command and the README's generated env table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    rewards = play("visrl/Jigsaw-v1", difficulty=1, seed=0, idle_timeout_ms=200)
    assert len(rewards) == 2  # the swap, then "done"
    assert rewards[1] == 0.0


def test_play_with_typed_actions() -> None:
    from visrl_envs.play import play

    answers = iter(["<answer>nope</answer>", "<answer>A</answer>"])
    rewards = play("visrl/JigsawPair-v1", seed=0, input_fn=lambda prompt: next(answers))
    assert rewards[0] == -0.1 and rewards[1] in (0.5, 1.5)
