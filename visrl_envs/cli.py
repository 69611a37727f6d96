"""The ``visrl`` command: ``list``, ``table``, ``docs``, ``play ID``, and for VLM agents ``eval``,
``serve``, ``demos``, ``view`` and ``train vlm`` (their options live beside their code in ``agents/vlm``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from visrl_envs.registry import REGISTRY, env_page, env_page_name, markdown_table


def _list() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="visrl environments")
    for column in ("id", "family", "interfaces", "step cap", "tags", "task"):
        table.add_column(column)
    for e in REGISTRY:
        table.add_row(e.id, e.family, ", ".join(e.interfaces), str(e.max_episode_steps), ", ".join(e.tags), e.summary)
    Console(width=max(120, Console().width)).print(table)


def _docs(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for e in REGISTRY:
        (out / env_page_name(e)).write_text(env_page(e))
        print(f"wrote {out / env_page_name(e)}")


#: VLM-agent subcommands: name -> (module with ``add_arguments`` and ``run``, help).
VLM_COMMANDS = {
    "eval": (
        "agents.vlm.workbench.evaluate",
        "evaluate a VLM policy (tiny, hf:PATH, openai:MODEL@URL) on one env or all",
    ),
    "serve": ("agents.vlm.serving.server", "serve a local model over an OpenAI-compatible HTTP API on 127.0.0.1"),
    "demos": ("agents.vlm.workbench.demos", "oracle episodes of an env as chat-format SFT data (datasets / TRL)"),
    "view": ("agents.vlm.workbench.viewer", "write the HTML viewer of a saved run (and print transcripts)"),
    "train": ("agents.vlm.grpo.cli", "train a VLM policy with GRPO on an env's text interface (visrl train vlm)"),
}


def main(argv: list[str] | None = None) -> int:
    from visrl_envs import __version__

    parser = argparse.ArgumentParser(prog="visrl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"visrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every registered id with its family, interfaces and tags")
    sub.add_parser("table", help="the env table as markdown (for the README)")
    docs = sub.add_parser("docs", help="write one markdown page per env from its docstring")
    docs.add_argument("--out", default="docs/envs")
    play_parser = sub.add_parser("play", help="play an env in its window (mouse for jigsaw swaps, else typed actions)")
    play_parser.add_argument("env_id")
    play_parser.add_argument("--difficulty", type=int, default=0)
    play_parser.add_argument("--seed", type=int, default=0)
    for name, (module, help_text) in VLM_COMMANDS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    if args.command in VLM_COMMANDS:
        return int(importlib.import_module(VLM_COMMANDS[args.command][0]).run(args))
    if args.command == "list":
        _list()
    elif args.command == "table":
        print(markdown_table())
    elif args.command == "docs":
        _docs(Path(args.out))
    else:
        known = [e.id for e in REGISTRY]
        if args.env_id not in known:
            print(f"visrl play: unknown env {args.env_id!r}; known: {', '.join(known)}", file=sys.stderr)
            return 2
        from visrl_envs.play import play

        try:
            play(args.env_id, args.difficulty, args.seed)
        except (ValueError, TypeError) as err:  # a bad --difficulty and the like: one line, not a traceback
            print(f"visrl play: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
