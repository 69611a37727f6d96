"""System packages per extra: one table for make install, and what the registered families need is here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from visrl_envs import sysdeps
from visrl_envs.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_family_has_its_system_needs_present() -> None:
    families = sorted({e.family for e in REGISTRY})
    assert all(f in sysdeps.FAMILY_EXTRAS for f in families), "a family without an entry in FAMILY_EXTRAS"
    assert sysdeps.missing_for_families(families) == {}


def test_the_table_runs_by_path_before_anything_is_installed() -> None:
    """make install calls it with the bare interpreter, before the package or its dependencies exist."""
    out = subprocess.run(
        [sys.executable, "-S", str(ROOT / "visrl_envs" / "sysdeps.py"), "apt", "tikz", "web"],
        capture_output=True,
        text=True,
        check=True,
    )
    packages = out.stdout.split()
    assert packages[:2] == ["libcairo2", "fonts-dejavu-core"], "core first, always"
    assert {"texlive-latex-extra", "poppler-utils", "chromium"} <= set(packages) and len(set(packages)) == len(packages)
    bad = subprocess.run(
        [sys.executable, str(ROOT / "visrl_envs" / "sysdeps.py"), "apt", "gpu"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown extra 'gpu'" in bad.stderr


def test_the_makefile_reads_the_table() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "visrl_envs/sysdeps.py apt $(EXTRAS)" in makefile
    dry = subprocess.run(["make", "-n", "-B", "install", "EXTRAS=tikz"], capture_output=True, text=True, cwd=ROOT)
    assert "texlive-pictures" in dry.stdout and "chromium" not in dry.stdout and ".[tikz,dev]" in dry.stdout


def test_what_is_missing_is_named_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysdeps.shutil, "which", lambda name: None)
    problems = sysdeps.missing_for_families(["tikz", "nope"])
    assert problems["tikz"][:2] == ["executable pdflatex", "executable pdftoppm"]
    assert "apt-get install texlive-latex-base" in problems["tikz"][-1]
    assert "no entry" in problems["nope"][0]
