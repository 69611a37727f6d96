"""The ``visrl`` command: ``visrl list``, ``visrl table``, ``visrl docs``, ``visrl play ID``."""

from __future__ import annotations

import argparse
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


def _play(env_id: str, difficulty: int, seed: int) -> None:
    """Play an env in a pygame window by typing text actions in the terminal."""
    import gymnasium as gym

    import visrl_envs  # noqa: F401

    env = gym.make(env_id, difficulty=difficulty, render_mode="human")
    obs, info = env.reset(seed=seed)
    print(obs["text"])
    while True:
        try:
            action = input("action> ")
        except EOFError:
            break
        obs, reward, terminated, truncated, info = env.step(action)
        print(obs["text"])
        print(f"reward {reward:+.3f}  score {info['score']:.3f}  success {info['success']}")
        if terminated or truncated:
            break
    env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="visrl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every registered id with its family, interfaces and tags")
    sub.add_parser("table", help="the env table as markdown (for the README)")
    docs = sub.add_parser("docs", help="write one markdown page per env from its docstring")
    docs.add_argument("--out", default="docs/envs")
    play = sub.add_parser("play", help="play an env in a window, typing text actions")
    play.add_argument("env_id")
    play.add_argument("--difficulty", type=int, default=0)
    play.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "list":
        _list()
    elif args.command == "table":
        print(markdown_table())
    elif args.command == "docs":
        _docs(Path(args.out))
    else:
        _play(args.env_id, args.difficulty, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
