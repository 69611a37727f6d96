"""The arrows between the project's packages and modules, read from the source.

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``, and
``importlib.import_module("a.literal.name")``. ``from pkg import name`` is an arrow to ``pkg.name``
when that is a module, to ``pkg`` otherwise. A package's ``__init__`` running before its submodules
is not an arrow (that is how Python imports, not a choice of the code).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("visrl_envs", "agents", "benchmarks")

#: The rooms of agents/vlm and the rooms each may import (docs/ARCHITECTURE.md, "VLM agents").
VLM_ROOMS: dict[str, set[str]] = {
    "policies": set(),
    "rollout": {"policies"},
    "serving": {"policies"},
    "workbench": {"policies", "rollout"},
    "grpo": {"policies", "rollout", "serving", "workbench"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(module: str, path: Path) -> set[str]:
    """The absolute names of every module ``module`` imports, anywhere in its source."""
    found: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    found.discard(module)
    return found


IMPORTS = {module: _imports(module, path) for module, path in MODULES.items()}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _offenders(source: str, targets: tuple[str, ...], allowed: tuple[str, ...] = ()) -> dict[str, list[str]]:
    return {
        module: sorted(n for n in names if any(_within(n, t) for t in targets))
        for module, names in IMPORTS.items()
        if _within(module, source) and module not in allowed and any(_within(n, t) for n in names for t in targets)
    }


def _cycles(nodes: set[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {m: sorted(n for n in IMPORTS[m] if n in nodes) for m in sorted(nodes)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in graph:
        if m not in index:
            visit(m)
    return found


def test_the_graph_is_read_from_the_source() -> None:
    # the reader sees what it must: lazy imports inside functions, re-exports, import_module literals
    assert "agents.vlm.policies.hf" in IMPORTS["agents.vlm.workbench.agent"]  # inside load_policy
    assert "agents.vlm.rollout.collector" in IMPORTS["agents.vlm.rollout"]
    assert "agents.sb3.train" in IMPORTS["agents.sb3"]  # importlib.import_module("agents.sb3.train")
    assert _cycles({"agents.sb3", "agents.sb3.train"}) == []
    assert "agents.stats" in IMPORTS["agents.vlm.workbench.evaluate"]


def test_no_two_modules_of_agents_or_benchmarks_import_each_other_even_through_others() -> None:
    nodes = {m for m in MODULES if _within(m, "agents") or _within(m, "benchmarks")}
    assert _cycles(nodes) == []


def test_agents_never_import_benchmarks() -> None:
    assert _offenders("agents", ("benchmarks",)) == {}


def test_the_env_side_never_imports_agents_benchmarks_or_torch() -> None:
    assert _offenders("visrl_envs", ("agents", "benchmarks")) == {}
    assert _offenders("visrl_envs", ("torch", "transformers")) == {}


def test_each_vlm_room_imports_only_the_rooms_below_it() -> None:
    wrong = {}
    for module, names in IMPORTS.items():
        parts = module.split(".")
        if parts[:2] != ["agents", "vlm"] or len(parts) < 3:
            continue
        room = parts[2]
        assert room in VLM_ROOMS, f"{module}: agents/vlm holds rooms only ({', '.join(VLM_ROOMS)})"
        rooms = {n.split(".")[2] for n in names if n.startswith("agents.vlm.")}
        if rooms - VLM_ROOMS[room] - {room}:
            wrong[module] = sorted(rooms - VLM_ROOMS[room] - {room})
    assert wrong == {}


def test_the_visrl_command_loads_its_vlm_subcommands_by_name() -> None:
    """cli.py is the one link from visrl_envs to agents, by module name only (it imports none of them)."""
    from agents.vlm import MOVED
    from visrl_envs.cli import VLM_COMMANDS

    for name, (module, _) in VLM_COMMANDS.items():
        target = MOVED.get(module, module)
        assert target in MODULES, (name, module)
        source = MODULES[target].read_text()
        assert "def add_arguments(" in source and "def run(" in source, (name, target)


def test_visrl_help_and_the_vlm_package_import_neither_torch_nor_transformers() -> None:
    code = (
        "import sys\n"
        "import agents.vlm, agents.vlm.policies, agents.vlm.serving, agents.vlm.workbench\n"
        "from visrl_envs.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.splitlines()[-1] == "HEAVY []"
