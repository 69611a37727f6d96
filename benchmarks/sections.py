"""Benchmarks that share benchmarks/RESULTS.md each own a marked section of it.

A section is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. A benchmark
rewrites only its own (:func:`replace_section`); the throughput benchmark, which owns the head of the
file, keeps every marked section after it (:func:`marked_sections`).
"""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- ([\w.-]+):start -->.*?<!-- \1:end -->\n?", re.DOTALL)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def splice(document: str, name: str, body: str) -> str:
    """``document`` with section ``name`` replaced by ``body`` (appended when absent)."""
    start, end = markers(name)
    block = f"{start}\n{body.strip(chr(10))}\n{end}"
    first, last = document.find(start), document.find(end)
    if first >= 0 and last > first:
        return document[:first] + block + document[last + len(end) :]
    return (document.rstrip("\n") + "\n\n" if document.strip() else "") + block + "\n"


def replace_section(path: Path, name: str, body: str) -> None:
    """Rewrite section ``name`` of the file at ``path`` (created if missing)."""
    path.write_text(splice(path.read_text() if path.exists() else "", name, body))


def marked_sections(document: str) -> str:
    """Every marked section of ``document``, in order (what a rewrite of the rest must keep)."""
    return "\n".join(m.group(0).rstrip("\n") for m in _SECTION.finditer(document))
