"""Baseline agents across the suite: ``make run`` (``python -m benchmarks.run_baselines``).

Runs the random and oracle agents on every benchmarked env, both interfaces, every difficulty, on
the test split, and reports the mean score with a 95% bootstrap CI, the IQM, the success rate, the
mean return and episode length. Writes ``benchmarks/BASELINES.md``, ``baselines.json`` and
``baselines.png`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import visrl_envs  # noqa: F401
from agents.base import Agent
from agents.scripted import NullAgent, OracleAgent, RandomAgent
from agents.stats import bootstrap_ci, iqm

OUT = Path(__file__).parent


def raster_targets() -> list[str]:
    """Packaged photos as raster SvgRender targets (no reference SVG: the oracle can only
    approximate them, with a 32 x 32 mosaic of rectangles)."""
    from visrl_envs.core.imagery import PHOTOS, _builtin_paths

    paths = _builtin_paths()
    return [str(paths[name]) for name in PHOTOS["test"] if paths[name].suffix != ".npz"]


@dataclass(frozen=True)
class EnvConfig:
    """One benchmarked env: an id, its kwargs, a label for the variant, what to run."""

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    variant: str = "procedural"
    interfaces: tuple[str, ...] = ("text", "numeric")
    difficulties: tuple[int, ...] = (0, 1, 2, 3)


ENVS: tuple[EnvConfig, ...] = (
    EnvConfig("visrl/SvgRender-v1"),
    # raster targets: reported apart, since their "oracle" is a mosaic, not the hidden program
    EnvConfig("visrl/SvgRender-v1", {"targets": raster_targets()}, "raster photos", ("text",), (0,)),
    EnvConfig("visrl/Jigsaw-v1"),
    EnvConfig("visrl/JigsawFull-v1"),
    EnvConfig("visrl/JigsawPair-v1"),
)
AGENTS: dict[str, Callable[[], Agent]] = {"null": NullAgent, "random": RandomAgent, "oracle": OracleAgent}
#: Agents that act on one interface only.
TEXT_ONLY = {"null"}


@dataclass
class Cell:
    env_id: str
    variant: str
    interface: str
    difficulty: int
    agent: str
    episodes: int
    score: float
    score_low: float
    score_high: float
    score_iqm: float
    success_rate: float
    mean_return: float
    mean_steps: float
    seconds: float


def run_cell(
    config: EnvConfig,
    interface: str,
    difficulty: int,
    agent_name: str,
    episodes: int,
    agents: dict[str, Callable[[], Agent]] = AGENTS,
) -> Cell:
    env_id = config.env_id
    env = gym.make(env_id, action_mode=interface, difficulty=difficulty, split="test", **config.kwargs)
    agent = agents[agent_name]()
    scores, successes, returns, lengths = [], [], [], []
    start = time.perf_counter()
    for episode in range(episodes):
        obs, info = env.reset(seed=episode)
        agent.reset(env, seed=episode)
        total, steps = 0.0, 0
        while True:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            total += float(reward)
            steps += 1
            if terminated or truncated:
                break
        if info["env_error"]:
            raise RuntimeError(f"{env_id} episode {episode}: {info['env_error']}")
        scores.append(info["score"])
        successes.append(info["success"])
        returns.append(total)
        lengths.append(steps)
    env.close()
    point, low, high = bootstrap_ci(np.array(scores))
    return Cell(
        env_id,
        config.variant,
        interface,
        difficulty,
        agent_name,
        episodes,
        point,
        low,
        high,
        iqm(np.array(scores)),
        float(np.mean(successes)),
        float(np.mean(returns)),
        float(np.mean(lengths)),
        time.perf_counter() - start,
    )


def label(c: Cell) -> str:
    return f"`{c.env_id}`" + (f" ({c.variant})" if c.variant != "procedural" else "")


def agent_label(c: Cell) -> str:
    return "oracle (32x32 mosaic)" if c.agent == "oracle" and c.variant == "raster photos" else c.agent


def markdown(cells: list[Cell]) -> str:
    lines = [
        "| env | interface | difficulty | agent | score (95% CI) | IQM | success | return | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {label(c)} | {c.interface} | {c.difficulty} | {agent_label(c)} | {c.score:.3f} [{c.score_low:.3f}, "
            f"{c.score_high:.3f}] | {c.score_iqm:.3f} | {c.success_rate:.2f} | {c.mean_return:+.3f} | {c.mean_steps:.1f} |"
        )
    return "\n".join(lines)


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((c.env_id, c.variant) for c in cells))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), sharey=True, squeeze=False)
    series = sorted({(c.agent, c.interface) for c in cells})
    width = 0.8 / len(series)
    for ax, (env_id, variant) in zip(axes[0], panels, strict=True):
        for k, (agent, interface) in enumerate(series):
            sel = [
                c
                for c in cells
                if (c.env_id, c.variant) == (env_id, variant) and c.agent == agent and c.interface == interface
            ]
            if not sel:
                continue
            x = np.array([c.difficulty for c in sel]) + (k - (len(series) - 1) / 2) * width
            y = np.array([c.score for c in sel])
            err = np.array([[c.score - c.score_low for c in sel], [c.score_high - c.score for c in sel]])
            ax.bar(x, y, width, yerr=err, capsize=2, label=f"{agent_label(sel[0])} ({interface})")
        ax.set_title(env_id.removeprefix("visrl/") + ("" if variant == "procedural" else f"\n({variant})"))
        ax.set_xlabel("difficulty")
        ax.set_xticks(range(4))
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("score (mean, 95% CI)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learning_section(directory: Path) -> str:
    """The trained SB3 agents' rows (``make learning`` writes ``learning.json``), or how to make them."""
    from benchmarks.learning import Summary
    from benchmarks.learning import markdown as learning_markdown

    path = directory / "learning.json"
    if not path.exists():
        return "SB3 agents: run `make learning` (about 45 CPU-minutes) to add their rows here.\n"
    data = json.loads(path.read_text())
    return learning_markdown([Summary(**s) for s in data["summaries"]], data["command"])


def main(argv: list[str] | None = None) -> list[Cell]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=50, help="episodes (test-split seeds 0..N-1) per cell")
    parser.add_argument("--envs", nargs="*", default=list(dict.fromkeys(c.env_id for c in ENVS)))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--vlm",
        default=None,
        metavar="POLICY",
        help="also run a VLM policy on the text cells (tiny, hf:PATH, openai:MODEL@URL)",
    )
    args = parser.parse_args(argv)
    agents, text_only = dict(AGENTS), set(TEXT_ONLY)
    if args.vlm:
        from agents.vlm.workbench.agent import VlmAgent, load_policy

        policy = load_policy(args.vlm)
        agents[f"vlm:{policy.name}"] = lambda: VlmAgent(policy)
        text_only.add(f"vlm:{policy.name}")
    jobs = [
        (config, i, d, a)
        for config in ENVS
        if config.env_id in args.envs
        for i in config.interfaces
        for d in config.difficulties
        for a in agents
        if i == "text" or a not in text_only
    ]
    console = Console(width=max(Console().width, 150))
    cells: list[Cell] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("baselines", total=len(jobs))
        for config, interface, difficulty, agent in jobs:
            progress.update(task, description=f"{config.env_id} ({config.variant}) {interface} d{difficulty} {agent}")
            cells.append(run_cell(config, interface, difficulty, agent, args.episodes, agents))
            progress.advance(task)
    table = Table(title=f"visrl baselines ({args.episodes} test episodes per cell)")
    for col in ("env", "interface", "d", "agent", "score [95% CI]", "IQM", "success", "return", "steps"):
        table.add_column(col)
    for c in cells:
        table.add_row(
            label(c).replace("`", ""),
            c.interface,
            str(c.difficulty),
            agent_label(c),
            f"{c.score:.3f} [{c.score_low:.3f}, {c.score_high:.3f}]",
            f"{c.score_iqm:.3f}",
            f"{c.success_rate:.2f}",
            f"{c.mean_return:+.3f}",
            f"{c.mean_steps:.1f}",
        )
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} ({platform.processor() or platform.machine()})"
    (args.out / "BASELINES.md").write_text(
        f"# visrl baselines\n\n{stamp}. `make run` regenerates this file, `baselines.json` and `baselines.png`.\n\n"
        f"Test split, seeds 0..{args.episodes - 1} per cell; score = `info['score']` at episode end (mean, 95% "
        "percentile-bootstrap CI), IQM over episodes, success rate, mean return, mean steps.\n\n"
        f"![baselines](baselines.png)\n\n{markdown(cells)}\n\n{learning_section(args.out)}"
    )
    (args.out / "baselines.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
    plot(cells, args.out / "baselines.png")
    console.print(f"wrote {args.out}/BASELINES.md, baselines.json and baselines.png")
    return cells


if __name__ == "__main__":
    main()
