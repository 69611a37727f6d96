"""``visrl eval``: a VLM policy on the text interface of one env or all of them, with honest statistics.

    visrl eval --env visrl/Jigsaw-v1 --policy hf:/models/Qwen2.5-VL-3B-Instruct --episodes 50
    visrl eval --env all --policy openai:Qwen/Qwen2.5-VL-7B-Instruct@http://127.0.0.1:8000/v1

Episodes are the test split's reset seeds ``0..N-1`` (the seeds of ``make run``'s baselines, so the
rows compare), run ``--batch`` at a time through the rollout collector (one batched generation per
turn). Greedy decoding by default. The table gives the mean final score with a 95% bootstrap CI,
the IQM, the success rate, the mean return and turns, and the episodes lost to env errors (left out
of the statistics and counted, never scored as the model's failure). ``--out DIR`` also saves every
trajectory with an HTML viewer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.vlm.policies.policy import ChatPolicy, Sampling
from agents.vlm.rollout import ENV_RUNNERS, collect
from agents.vlm.rollout.env_pool import env_kwargs_argument
from agents.vlm.rollout.trajectory import Trajectory
from agents.vlm.workbench.agent import POLICY_SPECS, load_policy


@dataclass
class EvalRow:
    """One env's result for one policy."""

    env_id: str
    policy: str
    difficulty: int
    split: str
    episodes: int
    env_errors: int
    score: float
    score_low: float
    score_high: float
    score_iqm: float
    success_rate: float
    mean_return: float
    mean_turns: float
    model_tokens: int
    seconds: float


def summarize(
    env_id: str, policy: str, difficulty: int, split: str, trajectories: list[Trajectory], seconds: float
) -> EvalRow:
    """The row of ``trajectories``; env-error episodes are counted apart and left out of the statistics."""
    from agents.stats import bootstrap_ci, iqm  # scipy: imported when needed, not at `visrl` start

    healthy = [t for t in trajectories if t.finish != "env_error"]
    scores = np.array([t.score for t in healthy]) if healthy else np.array([np.nan])
    point, low, high = bootstrap_ci(scores) if healthy else (float("nan"),) * 3
    return EvalRow(
        env_id=env_id,
        policy=policy,
        difficulty=difficulty,
        split=split,
        episodes=len(healthy),
        env_errors=len(trajectories) - len(healthy),
        score=point,
        score_low=low,
        score_high=high,
        score_iqm=iqm(scores) if healthy else float("nan"),
        success_rate=float(np.mean([t.success for t in healthy])) if healthy else float("nan"),
        mean_return=float(np.mean([t.total_reward for t in healthy])) if healthy else float("nan"),
        mean_turns=float(np.mean([len(t.steps) for t in healthy])) if healthy else float("nan"),
        model_tokens=int(sum(t.model_tokens() for t in trajectories)),
        seconds=seconds,
    )


def evaluate(
    policy: ChatPolicy,
    env_id: str,
    episodes: int,
    difficulty: int = 0,
    split: str = "test",
    batch: int = 8,
    sampling: Sampling | None = None,
    max_turns: int | None = None,
    env_runner: str = "inline",
    env_kwargs: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> tuple[EvalRow, list[Trajectory]]:
    """Run ``episodes`` test episodes (reset seeds ``0..episodes-1``), ``batch`` at a time."""
    if episodes < 1 or batch < 1:
        raise ValueError(f"episodes and batch must be >= 1, got {episodes} and {batch}")
    kwargs = {"difficulty": difficulty, "split": split, **(env_kwargs or {})}
    sampling = sampling or Sampling(temperature=0)
    trajectories: list[Trajectory] = []
    task = progress.add_task(env_id, total=episodes) if progress is not None else None
    start = time.perf_counter()
    for first in range(0, episodes, batch):
        seeds = list(range(first, min(first + batch, episodes)))
        trajectories += collect(
            policy,
            env_id,
            seeds,
            sampling=sampling,
            env_kwargs=kwargs,
            max_turns=max_turns,
            env_runner=env_runner,
        )
        if progress is not None and task is not None:
            progress.advance(task, len(seeds))
    row = summarize(env_id, policy.name, difficulty, split, trajectories, time.perf_counter() - start)
    return row, trajectories


def table(rows: list[EvalRow]) -> Table:
    out = Table(title="visrl eval (test split; mean final score with 95% bootstrap CI)")
    for column in (
        "env",
        "policy",
        "d",
        "episodes",
        "score [95% CI]",
        "IQM",
        "success",
        "return",
        "turns",
        "env errors",
        "s",
    ):
        out.add_column(column)
    for r in rows:
        out.add_row(
            r.env_id,
            r.policy,
            str(r.difficulty),
            str(r.episodes),
            f"{r.score:.3f} [{r.score_low:.3f}, {r.score_high:.3f}]",
            f"{r.score_iqm:.3f}",
            f"{r.success_rate:.2f}",
            f"{r.mean_return:+.3f}",
            f"{r.mean_turns:.1f}",
            str(r.env_errors),
            f"{r.seconds:.1f}",
        )
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help="an env id, or 'all' for every registered id")
    parser.add_argument("--policy", required=True, help=POLICY_SPECS)
    parser.add_argument("--episodes", type=int, default=20, help="test-split reset seeds 0..N-1 per env")
    parser.add_argument("--difficulty", type=int, default=0)
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--batch", type=int, default=8, help="episodes generated together")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="per turn")
    parser.add_argument("--max-turns", type=int, default=None, help="default: the env's own horizon")
    parser.add_argument("--env-runner", default="inline", choices=ENV_RUNNERS)
    parser.add_argument(
        "--env-kwargs",
        type=env_kwargs_argument,
        default={},
        help="extra gym.make keywords as JSON, e.g. '{\"size\": 56}'",
    )
    parser.add_argument("--out", type=Path, default=None, help="save results, trajectories and an HTML viewer here")


def run(args: argparse.Namespace) -> int:
    from visrl_envs.registry import REGISTRY

    known = [e.id for e in REGISTRY]
    env_ids = known if args.env == "all" else [args.env]
    unknown = [e for e in env_ids if e not in known]
    if unknown:
        print(f"visrl eval: unknown env {unknown[0]!r}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    try:
        sampling = Sampling(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
        if args.episodes < 1 or args.batch < 1:
            raise ValueError(f"--episodes and --batch must be >= 1, got {args.episodes} and {args.batch}")
        policy = load_policy(args.policy)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"visrl eval: {err}", file=sys.stderr)
        return 2
    console = Console(width=max(Console().width, 140))
    rows: list[EvalRow] = []
    runs: list[Trajectory] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            for env_id in env_ids:
                row, trajectories = evaluate(
                    policy,
                    env_id,
                    args.episodes,
                    args.difficulty,
                    args.split,
                    args.batch,
                    sampling,
                    args.max_turns,
                    args.env_runner,
                    progress=progress,
                    env_kwargs=args.env_kwargs,
                )
                rows.append(row)
                runs += trajectories
    except (ValueError, TypeError) as err:  # a bad --difficulty and the like
        print(f"visrl eval: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a policy that cannot answer (e.g. an unreachable server: PolicyError)
        print(f"visrl eval: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        policy.close()
    console.print(table(rows))
    if args.out is not None:
        from agents.vlm.workbench.store import save_trajectories
        from agents.vlm.workbench.viewer import write_viewer

        save_trajectories(runs, args.out, meta={"policy": args.policy, "sampling": asdict(sampling)})
        (args.out / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
        console.print(f"wrote {args.out}/results.json and {write_viewer(args.out)}")
    return 0
