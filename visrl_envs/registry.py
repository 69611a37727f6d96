"""The one registration table of visrl: every env id, its entry point, step cap and tags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym


@dataclass(frozen=True)
class EnvEntry:
    """One registered id. ``max_episode_steps`` is the ``TimeLimit`` cap: an upper bound of the env's
    own horizon (``env.unwrapped.horizon``), which depends on interface and difficulty."""

    id: str
    entry_point: str
    family: str
    max_episode_steps: int
    summary: str
    tags: tuple[str, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    interfaces: tuple[str, ...] = ("text", "numeric")
    #: ``module:function`` building the family's batched vector env (``gym.make_vec``'s default).
    vector_entry_point: str | None = None


REGISTRY: tuple[EnvEntry, ...] = (
    EnvEntry(
        "visrl/SvgRender-v1",
        "visrl_envs.envs.svg.env:SvgRenderEnv",
        "svg",
        64,
        "write SVG code that reproduces a target image; multi-turn rendering feedback",
        ("code", "rendering-feedback", "multi-turn"),
        vector_entry_point="visrl_envs.envs.svg.env:make_vector_env",
    ),
    EnvEntry(
        "visrl/Jigsaw-v1",
        "visrl_envs.envs.jigsaw.swap:JigsawSwapEnv",
        "jigsaw",
        128,
        "restore a shuffled photo by swapping tiles, one swap per turn",
        ("tool-calls", "multi-turn", "photos"),
    ),
    EnvEntry(
        "visrl/JigsawFull-v1",
        "visrl_envs.envs.jigsaw.questions:JigsawFullEnv",
        "jigsaw",
        3,
        "answer the original position of every tile of a shuffled photo",
        ("answer", "single-turn", "photos"),
    ),
    EnvEntry(
        "visrl/JigsawPair-v1",
        "visrl_envs.envs.jigsaw.questions:JigsawPairEnv",
        "jigsaw",
        3,
        "answer the original relative position of two tiles",
        ("answer", "single-turn", "photos"),
    ),
    EnvEntry(
        "visrl/ShapeColor-v0",
        "visrl_envs.envs.toy.shape_color:ShapeColorEnv",
        "toy",
        8,
        "name the colour of the single shape in the image (2-4 options; a trainer-test fixture)",
        ("answer", "single-turn", "fixture"),
    ),
)


def register_all() -> None:
    """Register every entry with Gymnasium (idempotent)."""
    for entry in REGISTRY:
        if entry.id not in gym.registry:
            gym.register(
                id=entry.id,
                entry_point=entry.entry_point,
                max_episode_steps=entry.max_episode_steps,
                kwargs=dict(entry.kwargs),
                disable_env_checker=False,
                vector_entry_point=entry.vector_entry_point,
            )


def entry(env_id: str) -> EnvEntry:
    for e in REGISTRY:
        if e.id == env_id:
            return e
    raise KeyError(f"{env_id} is not a visrl env; known: {[e.id for e in REGISTRY]}")


def markdown_table() -> str:
    """The README's env table, generated from :data:`REGISTRY`."""
    rows = ["| id | family | interfaces | step cap | tags | task |", "|---|---|---|---|---|---|"]
    for e in REGISTRY:
        rows.append(
            f"| `{e.id}` | {e.family} | {', '.join(e.interfaces)} | {e.max_episode_steps} | {', '.join(e.tags)} | {e.summary} |"
        )
    return "\n".join(rows)


def env_page(e: EnvEntry) -> str:
    """A markdown page for one id, generated from its entry and its class docstring and signature."""
    import importlib
    import inspect

    module, _, name = e.entry_point.partition(":")
    cls = getattr(importlib.import_module(module), name)
    doc = inspect.cleandoc(cls.__doc__ or "")
    params: dict[str, str] = {}
    for klass in cls.__mro__:  # every constructor up the hierarchy: subclasses forward **kwargs
        if "__init__" in vars(klass) and klass.__module__.startswith("visrl_envs"):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD:
                    params.setdefault(p.name, f"- `{p.name}={p.default!r}`")
    header = (
        f"# `{e.id}`\n\n{e.summary}.\n\n| family | interfaces | step cap | tags | class |\n|---|---|---|---|---|\n"
        f"| {e.family} | {', '.join(e.interfaces)} | {e.max_episode_steps} | {', '.join(e.tags)} | `{e.entry_point}` |\n"
    )
    body = doc.replace("## ", "### ")
    return f"{header}\n{body}\n\n### Constructor arguments (defaults)\n\n" + "\n".join(params.values()) + "\n"


def env_page_name(e: EnvEntry) -> str:
    return e.id.split("/")[-1] + ".md"
