"""The system (Debian) packages each extra needs, in one table, and the check that they are there.

``make install`` reads this table before anything else is installed, so this module uses the
standard library only and runs as a script by path::

    python3 visrl_envs/sysdeps.py apt all          # the apt packages of every extra, one line
    python3 visrl_envs/sysdeps.py apt tikz web     # of some extras
    python3 visrl_envs/sysdeps.py check            # what the registered families need: present?

Each family names the extra it lives in (:data:`FAMILY_EXTRAS`); an extra lists its Debian packages
and the executables and shared libraries that prove they are installed. ``tests/test_sysdeps.py``
checks that every registered family has an entry and that its binaries and libraries are present
on the machine running the tests. Facts behind the lists: DESIGN.md section 5 (Chromium flags, the
TeX packages, Mesa for headless MuJoCo).
"""

from __future__ import annotations

import ctypes.util
import shutil
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class SystemNeeds:
    """What one extra needs of the operating system."""

    #: Debian packages (installed with ``apt-get install --no-install-recommends``).
    apt: tuple[str, ...]
    #: Executables that must be on ``PATH`` once those packages are installed.
    binaries: tuple[str, ...] = ()
    #: Shared libraries ``ctypes.util.find_library`` must find (names without ``lib`` and suffix).
    libraries: tuple[str, ...] = ()
    #: Why the extra needs them (shown when something is missing).
    why: str = ""


#: Extra -> what it needs. ``core`` is the base install (``pip install visrl-envs``).
SYSTEM_NEEDS: dict[str, SystemNeeds] = {
    "core": SystemNeeds(
        apt=("libcairo2", "fonts-dejavu-core"),
        libraries=("cairo",),
        why="cairosvg renders SVG through libcairo; DejaVu is the fallback font of rendered text",
    ),
    "web": SystemNeeds(
        apt=("chromium", "fonts-liberation", "fonts-dejavu-core"),
        binaries=("chromium",),
        why="Playwright drives Debian's Chromium (never `playwright install`); Liberation gives pages Arial/Times metrics",
    ),
    "tikz": SystemNeeds(
        apt=(
            "texlive-latex-base",
            "texlive-pictures",
            "texlive-latex-recommended",
            "texlive-latex-extra",
            "poppler-utils",
        ),
        binaries=("pdflatex", "pdftoppm"),
        why="TikZ compiles with pdflatex (never lualatex) and is rasterised by pdftoppm",
    ),
    "robot": SystemNeeds(
        apt=("libegl1", "libgl1", "libosmesa6", "libgl1-mesa-dri"),
        libraries=("EGL", "OSMesa"),
        why="MuJoCo renders headless on the CPU through EGL (Mesa llvmpipe) or OSMesa",
    ),
}

#: Family (``EnvEntry.family``) -> the extra holding its system needs.
FAMILY_EXTRAS: dict[str, str] = {
    "svg": "core",
    "jigsaw": "core",
    "toy": "core",
    "zoom": "core",
    "edit": "core",
    "web": "web",
    "tikz": "tikz",
    "robot": "robot",
}


def extras_named(names: list[str]) -> list[str]:
    """The extras ``names`` stands for (``all`` is every extra); raises ``KeyError`` for an unknown one."""
    chosen: list[str] = []
    for name in names or ["all"]:
        for extra in SYSTEM_NEEDS if name == "all" else [name]:
            if extra not in SYSTEM_NEEDS:
                raise KeyError(f"unknown extra {extra!r}; the extras are {', '.join(SYSTEM_NEEDS)}")
            if extra not in chosen:
                chosen.append(extra)
    return chosen


def apt_packages(extras: list[str]) -> list[str]:
    """The Debian packages of ``extras`` (always with ``core``), each once, in table order."""
    packages: list[str] = []
    for extra in ["core", *extras_named(extras)]:
        packages += [p for p in SYSTEM_NEEDS[extra].apt if p not in packages]
    return packages


def missing(extra: str) -> list[str]:
    """What of ``extra``'s binaries and libraries this machine lacks (empty when all are there)."""
    needs = SYSTEM_NEEDS[extra]
    gone = [f"executable {b}" for b in needs.binaries if shutil.which(b) is None]
    gone += [f"library lib{lib}" for lib in needs.libraries if ctypes.util.find_library(lib) is None]
    return gone


def missing_for_families(families: list[str]) -> dict[str, list[str]]:
    """Family -> what its extra lacks here, for the families that lack something."""
    out: dict[str, list[str]] = {}
    for family in families:
        extra = FAMILY_EXTRAS.get(family)
        if extra is None:
            out[family] = [f"no entry in visrl_envs.sysdeps.FAMILY_EXTRAS for family {family!r}"]
        elif gone := missing(extra):
            out[family] = [*gone, f"(apt-get install {' '.join(SYSTEM_NEEDS[extra].apt)}: {SYSTEM_NEEDS[extra].why})"]
    return out


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "apt":
        try:
            print(" ".join(apt_packages(argv[1:])))
        except KeyError as err:
            print(err.args[0], file=sys.stderr)
            return 2
        return 0
    if len(argv) >= 1 and argv[0] == "check":
        families = argv[1:]
        if not families:
            from visrl_envs.registry import REGISTRY  # needs the package installed

            families = sorted({e.family for e in REGISTRY})
        problems = missing_for_families(families)
        for family, gone in problems.items():
            print(f"{family}: missing {'; '.join(gone)}")
        if not problems:
            print(f"system packages present for {', '.join(families)}")
        return 1 if problems else 0
    print(__doc__.strip().splitlines()[0])
    print("usage: sysdeps.py apt [EXTRA ...|all] | check [FAMILY ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
