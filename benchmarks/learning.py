"""Can an SB3 agent learn each env and generalise? ``python -m benchmarks.learning`` (``make learning``).

For each env at difficulty 0 (numeric interface), PPO trains on the train split for ``--seeds``
seeds (two at a time, one per core, one torch thread each) and is evaluated on the first
``--episodes`` task seeds of the test split, beside the random agent (one run per training seed) and
the oracle. Scores are ``info["score"]`` at episode end; the 95% CIs are stratified bootstrap
intervals over seeds x episodes (rliable's method). The CPU seconds spent on training are measured,
so the budget (the issue's 15 CPU-minutes per env) can be checked.

Writes ``benchmarks/learning.json`` and ``benchmarks/learning.png``; ``make run`` folds them into
``benchmarks/BASELINES.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

OUT = Path(__file__).parent
#: Training steps per seed, chosen to fit 5 seeds in 15 CPU-minutes per env on this machine class.
STEPS = {"visrl/Jigsaw-v1": 40_000, "visrl/JigsawPair-v1": 36_000, "visrl/SvgRender-v1": 40_000}
ENV_KWARGS: dict[str, dict[str, Any]] = {env_id: {"difficulty": 0} for env_id in STEPS}


@dataclass
class Run:
    env_id: str
    agent: str
    seed: int
    scores: list[float]
    train_cpu_s: float = 0.0
    train_wall_s: float = 0.0
    steps: int = 0


def train_and_evaluate(env_id: str, seed: int, steps: int, episodes: int) -> list[Run]:
    """One training seed (runs in a worker process), evaluated with the policy's most likely action
    (``ppo``) and with actions sampled from it (``ppo sampled``: a swap puzzle policy that is unsure
    can loop on its argmax, swapping a pair back and forth)."""
    from agents.sb3.train import SB3Agent, evaluate_episodes, train

    kwargs = ENV_KWARGS[env_id]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    model = train(env_id, "ppo", total_timesteps=steps, seed=seed, **kwargs)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - wall0
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    runs = []
    for name, deterministic in (("ppo", True), ("ppo sampled", False)):
        model.set_random_seed(seed)
        scores = evaluate_episodes(SB3Agent(model, name, deterministic), env_id, episodes, **kwargs).scores
        runs.append(Run(env_id, name, seed, scores.tolist(), cpu, wall, steps))
    return runs


def scripted(env_id: str, agent_name: str, seed: int, episodes: int) -> list[Run]:
    from agents.sb3.train import evaluate_episodes
    from agents.scripted import OracleAgent, RandomAgent

    agent = RandomAgent(seed=seed) if agent_name == "random" else OracleAgent()
    scores = evaluate_episodes(agent, env_id, episodes, **ENV_KWARGS[env_id]).scores
    return [Run(env_id, agent_name, seed, scores.tolist())]


@dataclass
class Summary:
    env_id: str
    agent: str
    seeds: int
    score: float
    low: float
    high: float
    train_cpu_s: float
    steps: int


def summarise(runs: list[Run]) -> list[Summary]:
    from agents.stats import bootstrap_ci

    out = []
    for env_id in dict.fromkeys(r.env_id for r in runs):
        for agent in ("random", "ppo", "ppo sampled", "oracle"):
            sel = [r for r in runs if r.env_id == env_id and r.agent == agent]
            if not sel:
                continue
            # stratified over seeds: the episodes of each seed resampled within it
            point, low, high = bootstrap_ci([np.array(r.scores) for r in sel])
            out.append(
                Summary(env_id, agent, len(sel), point, low, high, sum(r.train_cpu_s for r in sel), sel[0].steps)
            )
    return out


def verdict(summaries: list[Summary], env_id: str, agent: str = "ppo") -> str:
    by = {s.agent: s for s in summaries if s.env_id == env_id}
    ppo, random = by.get(agent), by.get("random")
    if ppo is None or random is None:
        return ""
    if ppo.low > random.high:
        return "beats random (CIs do not overlap)"
    if ppo.high < random.low:
        return "below random (CIs do not overlap)"
    return "not separated from random (CIs overlap)"


def markdown(summaries: list[Summary], command: str) -> str:
    lines = [
        "## SB3 agents trained on the train split, evaluated on the test split",
        "",
        f"`{command}` (numeric interface, difficulty 0; PPO with `agents/sb3/train.py`'s defaults). 95% CIs:",
        "stratified bootstrap over seeds x episodes.",
        "",
        "![learning](learning.png)",
        "",
        "| env | agent | seeds | score (95% CI) | PPO steps/seed | training CPU-min (all seeds) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        trained = (
            (f"{s.steps}", f"{s.train_cpu_s / 60:.1f}", verdict(summaries, s.env_id, s.agent))
            if s.agent.startswith("ppo")
            else ("",) * 3
        )
        lines.append(
            f"| `{s.env_id}` | {s.agent} | {s.seeds} | {s.score:.3f} [{s.low:.3f}, {s.high:.3f}] | "
            + " | ".join(trained)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(summaries: list[Summary], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(s.env_id for s in summaries))
    fig, ax = plt.subplots(figsize=(2.6 * len(envs) + 1, 3.4))
    agents = ("random", "ppo", "ppo sampled", "oracle")
    width = 0.2
    for k, agent in enumerate(agents):
        sel = [next((s for s in summaries if s.env_id == e and s.agent == agent), None) for e in envs]
        x = np.arange(len(envs)) + (k - 1.5) * width
        y = [s.score if s else 0.0 for s in sel]
        err = [[s.score - s.low if s else 0 for s in sel], [s.high - s.score if s else 0 for s in sel]]
        ax.bar(x, y, width, yerr=err, capsize=3, label=agent)
    ax.set_xticks(range(len(envs)), [e.removeprefix("visrl/") for e in envs])
    ax.set_ylabel("test score (mean, 95% CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[Summary]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=list(STEPS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=None, help="PPO steps per seed (default: per env)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    command = "python -m benchmarks.learning" + "".join(
        f" --{k} {v}" for k, v in (("seeds", args.seeds), ("episodes", args.episodes)) if v != parser.get_default(k)
    )
    runs: list[Run] = []
    console = Console(width=max(Console().width, 140))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        Progress(*columns, console=console) as progress,
        ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool,
    ):
        futures = []
        for env_id in args.envs:
            steps = args.steps or STEPS[env_id]
            futures += [
                pool.submit(train_and_evaluate, env_id, seed, steps, args.episodes) for seed in range(args.seeds)
            ]
            futures += [pool.submit(scripted, env_id, "random", seed, args.episodes) for seed in range(args.seeds)]
            futures.append(pool.submit(scripted, env_id, "oracle", 0, args.episodes))
        task = progress.add_task("train + evaluate", total=len(futures))
        for future in futures:
            runs += future.result()
            progress.advance(task)
    previous = args.out / "learning.json"
    if set(args.envs) != set(STEPS) and previous.exists():  # a subset: keep the other envs' runs
        kept = [Run(**r) for r in json.loads(previous.read_text())["runs"] if r["env_id"] not in args.envs]
        runs = [r for env_id in STEPS for r in kept + runs if r.env_id == env_id]
    summaries = summarise(runs)
    table = Table(title="SB3 PPO (train split) vs random and oracle (test split)")
    for column in ("env", "agent", "seeds", "score [95% CI]", "CPU-min", "verdict"):
        table.add_column(column)
    for s in summaries:
        table.add_row(
            s.env_id,
            s.agent,
            str(s.seeds),
            f"{s.score:.3f} [{s.low:.3f}, {s.high:.3f}]",
            f"{s.train_cpu_s / 60:.1f}" if s.agent.startswith("ppo") else "",
            verdict(summaries, s.env_id, s.agent) if s.agent.startswith("ppo") else "",
        )
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "summaries": [asdict(s) for s in summaries], "runs": [asdict(r) for r in runs]}
    (args.out / "learning.json").write_text(json.dumps(payload, indent=1))
    plot(summaries, args.out / "learning.png")
    console.print(f"wrote {args.out}/learning.json and learning.png")
    return summaries


if __name__ == "__main__":
    main()
