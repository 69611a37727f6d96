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
