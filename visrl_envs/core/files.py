"""User-supplied files: paths or directories given to an env (targets, photos)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

PathList = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def collect_files(paths: PathList, suffixes: set[str], what: str) -> list[Path]:
    """The files named by ``paths``: files, or directories whose files end in ``suffixes`` (sorted per
    directory). Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for an empty
    argument, a named file with another suffix, or no matching file; each message lists the accepted
    suffixes."""
    accepted = ", ".join(sorted(suffixes))
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items or any(isinstance(i, str) and not i.strip() for i in items):
        raise ValueError(f"{what}s are empty ({paths!r}); give files or directories of {accepted}")
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())
        elif path.is_file():
            if path.suffix.lower() not in suffixes:
                raise ValueError(f"{what} file {path} has an unsupported type; accepted: {accepted}")
            files.append(path)
        else:
            raise FileNotFoundError(f"no {what} file or directory at {path}")
    if not files:
        raise ValueError(f"no {what} files ({accepted}) found in {[str(i) for i in items]}")
    return files
