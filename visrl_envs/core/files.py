"""User-supplied files: paths or directories given to an env (targets, photos)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

PathList = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def collect_files(paths: PathList, suffixes: set[str], what: str) -> list[Path]:
    """The files named by ``paths`` (files, or directories whose files end in ``suffixes``), sorted
    per directory; raises ``FileNotFoundError`` for a missing path, ``ValueError`` when none match."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no {what} file or directory at {path}")
    if not files:
        raise ValueError(f"no {what} files found in {items}")
    return files
