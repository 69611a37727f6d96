"""VLM rollout throughput with the tiny policy: ``python -m benchmarks.vlm_rollout``.

Measures, in one run and on ``visrl/Jigsaw-v1`` (84 px) and ``visrl/SvgRender-v1`` (default size),
the collector of :mod:`agents.vlm.rollout` against the issue's targets:

(a) rollout overhead (env stepping + formatting + bookkeeping) / batched generation time per turn, at
    B=4 tasks x G=8 samples: target <= 20% (judged on the worst turn; the whole rollout, resets and
    first prompts included, is reported beside it);
(b) batched generation over the B x G trajectories vs one trajectory at a time (same episodes, same
    ``max_new_tokens``, same turn budget): speed-up target >= 4x;
(c) the same with the env side in Gymnasium ``AsyncVectorEnv`` subprocesses: 32 workers (one per
    slot, what ``env_runner="vector"`` builds), 4 workers hosting 8 slots each, and the literal
    "4 async workers" pool with B x G = 1 x 4.

The policy keeps a prefix cache (:mod:`agents.vlm.policies.prefix_cache`), batched and one at a time alike; one
row turns it off on both sides (``prefix_cache_bytes=0``: every turn re-encodes the conversation) to
show what it is worth, and the notes give the share of prompt tokens that went through the model.

Every setting runs ``--repeats`` times, interleaved (setting order rotates each repeat) so the
drift of a shared machine hits all of them alike; figures are medians and every ratio compares two
timings taken in the same run. Each collection uses fresh task seeds, so no task is seen twice; what
the prefix cache carries from one collection to the next is what every task of an env shares (the
system turn and tool schemas), batched and one at a time alike. Pools are built once per env and
reused; their start-up cost is reported on its own.
Torch runs one thread by default (``--threads``): with two on a shared two-core machine, every op
stalls whenever another process takes a core. One inline row repeats the measurement with two threads
(the machine's cores), which is faster when the machine is quiet and erratic when it is not.
Writes its section of ``benchmarks/RESULTS.md`` (between ``<!-- vlm-rollout:start -->`` and
``<!-- vlm-rollout:end -->``; the rest of the file is kept) and ``benchmarks/vlm_rollout.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from agents.vlm.policies.hf import HFPolicy
from agents.vlm.policies.policy import Sampling
from agents.vlm.rollout import RolloutStats, collect
from agents.vlm.rollout.env_pool import EnvPool, HostedEnvs, InlineEnvs, VectorEnvs, make_text_env
from benchmarks.sections import replace_section

HERE = Path(__file__).parent
RESULTS = HERE / "RESULTS.md"
JSON_OUT = HERE / "vlm_rollout.json"
SECTION = "vlm-rollout"  #: its marked section of RESULTS.md (benchmarks/sections.py)

#: The envs measured and their kwargs (Jigsaw at 84 px; SvgRender at its default 256 px).
ENVS: dict[str, dict[str, Any]] = {"visrl/Jigsaw-v1": {"size": 84}, "visrl/SvgRender-v1": {}}
OVERHEAD_TARGET = 0.20
SPEEDUP_TARGET = 4.0


# --- measurement -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """How one row is measured: the batched pool, the one-at-a-time pool, and the B x G shape."""

    name: str
    runner: str  # label: inline / vector
    workers: int  # env subprocesses of the batched pool (0: inline)
    tasks: int  # B
    group: int  # G
    batched: Callable[[str, dict[str, Any], int], EnvPool]  # (env_id, kwargs, size) -> pool
    single: Callable[[str, dict[str, Any]], EnvPool]  # one-slot pool for the sequential baseline
    single_label: str
    threads: int = 0  # torch threads for this row (0: the run's --threads)
    prefix_cache: bool = True  # the policy keeps key/value states between calls

    @property
    def size(self) -> int:
        return self.tasks * self.group


def _inline(env_id: str, kwargs: dict[str, Any], size: int = 1) -> EnvPool:
    return InlineEnvs(partial(make_text_env, env_id, kwargs), size)


def _vector(env_id: str, kwargs: dict[str, Any], size: int = 1) -> EnvPool:
    return VectorEnvs(partial(make_text_env, env_id, kwargs), size)


def _hosted(workers: int) -> Callable[[str, dict[str, Any], int], EnvPool]:
    return lambda env_id, kwargs, size: HostedEnvs(partial(make_text_env, env_id, kwargs), size, workers)


SETTINGS = (
    Setting("inline", "inline", 0, 4, 8, _inline, _inline, "inline, 1 slot"),
    Setting("inline, 2 torch threads", "inline", 0, 4, 8, _inline, _inline, "inline, 1 slot", threads=2),
    Setting("inline, no prefix cache", "inline", 0, 4, 8, _inline, _inline, "inline, 1 slot", prefix_cache=False),
    Setting("vector 32 workers", "vector", 32, 4, 8, _vector, _vector, "AsyncVectorEnv, 1 worker"),
    Setting("vector 4 workers x 8 slots", "vector", 4, 4, 8, _hosted(4), _vector, "AsyncVectorEnv, 1 worker"),
    Setting("vector 4 workers (B*G=4)", "vector", 4, 1, 4, _vector, _vector, "AsyncVectorEnv, 1 worker"),
)


@dataclass
class Timing:
    """One timed collection (several, summed, for the one-at-a-time baseline)."""

    wall: float = 0.0
    generate: float = 0.0
    env: float = 0.0
    bookkeeping: float = 0.0
    tokens: int = 0
    turns: int = 0
    episodes: int = 0
    turn_overheads: list[float] = field(default_factory=list)  # per model turn: (env + bookkeeping) / generate
    prompt_tokens: int = 0  # prompt tokens of every generation call (prefix-cache policies only)
    encoded_tokens: int = 0  # of which went through the model

    @property
    def overhead(self) -> float:
        """(env + bookkeeping) / generate over the whole rollout, resets and first prompts included."""
        return (self.env + self.bookkeeping) / self.generate

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall


@dataclass(frozen=True)
class Budget:
    """What every collection of a run generates: the same sampling and turn budget."""

    sampling: Sampling
    max_turns: int


def timed_collect(
    policy: HFPolicy,
    env_id: str,
    seeds: list[int],
    group: int,
    pool: EnvPool,
    budget: Budget,
) -> Timing:
    """One collection, with the per-turn split read off ``on_turn`` snapshots of the stats."""
    stats = RolloutStats()
    cache = policy.prefix_cache
    before = (cache.prompt_tokens, cache.encoded_tokens) if cache is not None else (0, 0)
    marks: list[tuple[float, float, float]] = []

    def snapshot(turn: int, live: int) -> None:
        marks.append((stats.generate, stats.env, stats.bookkeeping))

    start = time.perf_counter()
    trajectories = collect(
        policy,
        env_id,
        seeds,
        group_size=group,
        sampling=budget.sampling,
        max_turns=budget.max_turns,
        pool=pool,
        stats=stats,
        on_turn=snapshot,
    )
    wall = time.perf_counter() - start
    after = (cache.prompt_tokens, cache.encoded_tokens) if cache is not None else (0, 0)
    marks.append((stats.generate, stats.env, stats.bookkeeping))
    # segment k (between the snapshots before turns k and k+1): turn k's generation, its step and record
    per_turn = [(b[1] - a[1] + b[2] - a[2]) / (b[0] - a[0]) for a, b in itertools.pairwise(marks) if b[0] > a[0]]
    return Timing(
        wall,
        stats.generate,
        stats.env,
        stats.bookkeeping,
        stats.model_tokens,
        stats.turns,
        len(trajectories),
        per_turn,
        after[0] - before[0],
        after[1] - before[1],
    )


def one_at_a_time(policy: HFPolicy, env_id: str, seeds: list[int], group: int, pool: EnvPool, budget: Budget) -> Timing:
    """The same ``len(seeds) x group`` episodes, each collected alone on a one-slot pool."""
    total = Timing()
    for seed in seeds:
        for _ in range(group):
            one = timed_collect(policy, env_id, [seed], 1, pool, budget)
            total.wall += one.wall
            total.generate += one.generate
            total.env += one.env
            total.bookkeeping += one.bookkeeping
            total.tokens += one.tokens
            total.turns += one.turns
            total.episodes += one.episodes
            total.turn_overheads += one.turn_overheads
            total.prompt_tokens += one.prompt_tokens
            total.encoded_tokens += one.encoded_tokens
    return total


@dataclass
class Row:
    """The medians of one (env, setting)."""

    env_id: str
    setting: str
    runner: str
    workers: int
    tasks: int
    group: int
    startup_s: float
    batched: list[Timing]
    single: list[Timing]
    single_label: str
    max_new_tokens: int

    def median(self, which: str, value: Callable[[Timing], float]) -> float:
        return statistics.median(value(t) for t in (self.batched if which == "batched" else self.single))

    @property
    def overhead(self) -> float:
        return self.median("batched", lambda t: t.overhead)

    @property
    def worst_turn_overhead(self) -> float:
        return self.median("batched", lambda t: max(t.turn_overheads))

    def paired(self, value: Callable[[Timing], float]) -> float:
        """The median over repeats of ``value(one at a time) / value(batched)``: each pair was measured
        back to back, so slow drift of the machine cancels."""
        return statistics.median(value(s) / value(b) for s, b in zip(self.single, self.batched, strict=True))

    @property
    def speedup(self) -> float:
        """Wall time of the one-at-a-time episodes / wall time of the batched collection."""
        return self.paired(lambda t: t.wall)

    @property
    def generate_speedup(self) -> float:
        """The same, generation time only."""
        return self.paired(lambda t: t.generate)

    @property
    def token_rate_ratio(self) -> float:
        """Model tokens/s batched / tokens/s one at a time (robust to unequal sampled lengths)."""
        return 1 / self.paired(lambda t: t.tokens_per_s)

    def summary(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "setting": self.setting,
            "runner": self.runner,
            "workers": self.workers,
            "B": self.tasks,
            "G": self.group,
            "pool_startup_s": round(self.startup_s, 3),
            "batched_wall_s": self.median("batched", lambda t: t.wall),
            "batched_generate_s_per_turn": self.median("batched", lambda t: t.generate / t.turns),
            "batched_env_s": self.median("batched", lambda t: t.env),
            "batched_bookkeeping_s": self.median("batched", lambda t: t.bookkeeping),
            "batched_tokens_per_s": self.median("batched", lambda t: t.tokens_per_s),
            "single_wall_s": self.median("single", lambda t: t.wall),
            "single_tokens_per_s": self.median("single", lambda t: t.tokens_per_s),
            "single_baseline": self.single_label,
            "overhead_fraction": self.overhead,
            "worst_turn_overhead_fraction": self.worst_turn_overhead,
            "speedup_wall": self.speedup,
            "speedup_generate": self.generate_speedup,
            "token_rate_ratio": self.token_rate_ratio,
            "overhead_target_met": self.worst_turn_overhead <= OVERHEAD_TARGET,
            "speedup_target_met": self.speedup >= SPEEDUP_TARGET,
            "batched_encoded_fraction": self.encoded("batched"),
            "single_encoded_fraction": self.encoded("single"),
        }

    def encoded(self, which: str) -> float | None:
        """The share of prompt tokens that went through the model (``None`` without a prefix cache)."""
        timings = self.batched if which == "batched" else self.single
        if not any(t.prompt_tokens for t in timings):
            return None
        return sum(t.encoded_tokens for t in timings) / sum(t.prompt_tokens for t in timings)


def measure(
    policies: dict[bool, HFPolicy],
    settings: Sequence[Setting],
    envs: dict[str, dict[str, Any]],
    repeats: int,
    budget: Budget,
    progress: Progress,
) -> list[Row]:
    """Every (env, setting) ``repeats`` times, interleaved; batched and one-at-a-time back to back.
    ``policies``: the policy with (``True``) and without (``False``) a prefix cache."""
    import torch

    threads = torch.get_num_threads()
    seeds: Iterator[int] = itertools.count(1000)
    rows: dict[tuple[str, str], Row] = {}
    pools: dict[tuple[str, str], tuple[EnvPool, EnvPool]] = {}
    task = progress.add_task("vlm rollout", total=repeats * len(envs) * len(settings) + len(envs) * len(settings))
    try:
        for env_id, kwargs in envs.items():
            for s in settings:
                t0 = time.perf_counter()
                batched_pool = s.batched(env_id, kwargs, s.size)
                startup = time.perf_counter() - t0
                single_pool = s.single(env_id, kwargs)
                pools[env_id, s.name] = batched_pool, single_pool
                rows[env_id, s.name] = Row(
                    env_id,
                    s.name,
                    s.runner,
                    s.workers,
                    s.tasks,
                    s.group,
                    startup,
                    [],
                    [],
                    s.single_label,
                    budget.sampling.max_new_tokens,
                )
                # warm-up: resets over distinct seeds (envs load their assets once per process: Jigsaw's
                # photos take ~0.2 s), then one small collection per pool (first forwards, lazy envs)
                for pool in (batched_pool, single_pool):
                    for _ in range(3):
                        pool.reset([next(seeds) for _ in range(pool.size)])
                policy = policies[s.prefix_cache]
                timed_collect(policy, env_id, [next(seeds)], s.size, batched_pool, budget)
                timed_collect(policy, env_id, [next(seeds)], 1, single_pool, budget)
                progress.advance(task)
        order = [(e, s) for e in envs for s in settings]
        for repeat in range(repeats):
            shift = repeat % len(order)
            for env_id, s in order[shift:] + order[:shift]:
                torch.set_num_threads(s.threads or threads)
                row = rows[env_id, s.name]
                batched_pool, single_pool = pools[env_id, s.name]
                progress.update(task, description=f"{env_id.split('/')[1]} · {s.name} · repeat {repeat + 1}")
                task_seeds = [next(seeds) for _ in range(s.tasks)]
                policy = policies[s.prefix_cache]
                torch.manual_seed(repeat)
                row.batched.append(timed_collect(policy, env_id, task_seeds, s.group, batched_pool, budget))
                task_seeds = [next(seeds) for _ in range(s.tasks)]
                torch.manual_seed(repeat)
                row.single.append(one_at_a_time(policy, env_id, task_seeds, s.group, single_pool, budget))
                progress.advance(task)
    finally:
        for batched_pool, single_pool in pools.values():
            batched_pool.close()
            single_pool.close()
    return list(rows.values())


# --- report ----------------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def notes(rows: list[Row]) -> list[str]:
    """What the settings are, what the prefix cache is worth, and the verdict, from the figures."""
    lines = [
        'Env sides: *inline* = envs in the collector\'s process. *vector 32 workers* = `env_runner="vector"` as the',
        "collector builds it: one `AsyncVectorEnv` subprocess per slot, so B x G = 32 subprocesses on this machine's",
        "cores (their start-up is the pool column; they idle while the model generates). *vector 4 workers x 8 slots* =",
        "4 `AsyncVectorEnv` subprocesses each hosting 8 slots (`env_runner='hosted'`, driven through gymnasium's",
        "`call`). *vector 4 workers (B*G=4)* = the issue's literal 4 async workers with one slot each, so 1 task x 4",
        "samples; its baseline is those 4 episodes one at a time, so batching cannot win more than ~4x there. The",
        "one-at-a-time baselines of the vector rows step a 1-worker `AsyncVectorEnv`. *inline, 2 torch threads* =",
        "the inline row with torch on both cores (batched and one-at-a-time alike); it is the fastest when the machine",
        "is quiet and the most disturbed when other jobs run (a second OpenMP thread that loses its core stalls).",
        "",
    ]
    cached = {(r.env_id, r.setting): r for r in rows}
    for r in rows:
        if r.setting.endswith("no prefix cache") and (r.env_id, "inline") in cached:
            with_cache = cached[r.env_id, "inline"]
            lines.append(
                f"Prefix cache, {r.env_id.split('/')[1]}, inline: batched generation takes "
                f"{with_cache.median('batched', lambda t: t.generate / t.turns):.3f} s a turn with it and "
                f"{r.median('batched', lambda t: t.generate / t.turns):.3f} s without "
                f"({r.median('batched', lambda t: t.generate) / with_cache.median('batched', lambda t: t.generate):.1f}x);"
                f" one at a time {r.median('single', lambda t: t.generate) / with_cache.median('single', lambda t: t.generate):.1f}x."
                f" With it the model encodes {100 * (with_cache.encoded('batched') or 0):.0f}% of the prompt tokens"
                f" batched (a group's shared first prompt once) and {100 * (with_cache.encoded('single') or 0):.0f}%"
                " one at a time."
            )
    lines += [
        "",
        "The *no prefix cache* row is the collector as it was before `agents/vlm/policies/prefix_cache.py` (each turn"
        " re-encodes the whole conversation), kept for comparison.",
    ]
    worst = max(rows, key=lambda r: r.overhead)
    lines += [
        f"Over the whole rollout the overhead is {100 * min(r.overhead for r in rows):.0f}%-{100 * worst.overhead:.0f}%"
        f" (the most: {worst.env_id.split('/')[1]}, {worst.setting}); the difference from the per-turn figure is"
        " the resets (each env draws and renders its task) and the first prompts, which the target leaves out.",
        "",
    ]

    def why(r: Row) -> str:
        if r.setting.endswith("no prefix cache"):
            return " (the comparison row)"
        return " (bounded by 4x)" if r.tasks * r.group <= SPEEDUP_TARGET else ""

    missed = [
        f"{target} on {r.env_id.split('/')[1]}, {r.setting}{why(r)}"
        for r in rows
        for target, ok in (("(a)", r.worst_turn_overhead <= OVERHEAD_TARGET), ("(b)", r.speedup >= SPEEDUP_TARGET))
        if not ok
    ]
    lines.append("Targets missed: " + "; ".join(missed) + "." if missed else "Every target is met.")
    return lines


def section(rows: list[Row], meta: dict[str, Any]) -> str:
    """The markdown of this benchmark's section of RESULTS.md."""
    lines = [
        "## VLM rollout collector (tiny policy)",
        "",
        f"Measured {meta['date']} on `{meta['host']}` ({meta['cpus']} cores, Python {meta['python']}, torch "
        f"{meta['torch']} with {meta['torch_threads']} thread(s) except where a row says otherwise, transformers "
        f"{meta['transformers']}, gymnasium "
        f"{meta['gymnasium']}); median of {meta['repeats']} interleaved repeats. `python -m benchmarks.vlm_rollout` "
        "regenerates this section and `benchmarks/vlm_rollout.json`.",
        "",
        f"`HFPolicy.tiny()` (random Qwen2.5-VL, fp32 CPU), temperature {meta['temperature']}, "
        f"max_new_tokens {meta['max_new_tokens']}, max_turns {meta['max_turns']} (fixed, so every episode has the "
        "same turn budget); fresh task seeds for every collection. Jigsaw-v1 at 84 px, SvgRender-v1 at 256 px."
        " The policy keeps a prefix cache (`agents/vlm/policies/prefix_cache.py`: a turn encodes only what is new), batched"
        " and one at a time alike, except in the *no prefix cache* row.",
        "",
        "- **overhead per turn** = (env step time + collector bookkeeping: formatting, codec, records) / batched"
        " generation time of the same turn; the worst turn of the rollout is shown and judged. Target <= 20%."
        " *Whole rollout* = the same ratio over the whole collection, the resets (the env drawing and rendering"
        " each task) and first prompts included, which the target leaves out.",
        "- **speed-up** = wall time of the same B x G episodes collected one at a time (one-slot pool, batch 1) /"
        " wall time of the batched collection. Target >= 4x. *gen only* compares generation time alone;"
        " *tok/s ratio* compares model tokens per second (robust to sampled lengths differing).",
        "",
        "| env | env side | B x G | pool start-up (s) | batched s/turn (gen) | batched tok/s | one-at-a-time tok/s "
        "| overhead per turn (worst) | (a) <= 20% | whole rollout | speed-up | gen only | tok/s ratio | (b) >= 4x |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        s = r.summary()
        lines.append(
            f"| {r.env_id.split('/')[1]} | {r.setting} | {r.tasks} x {r.group} | {s['pool_startup_s']:.2f} "
            f"| {s['batched_generate_s_per_turn']:.3f} | {s['batched_tokens_per_s']:,.0f} "
            f"| {s['single_tokens_per_s']:,.0f} | {100 * r.worst_turn_overhead:.1f}% | {_met(s['overhead_target_met'])} "
            f"| {100 * r.overhead:.1f}% | {r.speedup:.2f}x | {r.generate_speedup:.2f}x "
            f"| {r.token_rate_ratio:.2f}x | {_met(s['speedup_target_met'])} |"
        )
    lines += ["", *notes(rows)]
    return "\n".join(lines) + "\n"


def rows_from_json(raw: dict[str, Any]) -> list[Row]:
    """The rows of a saved run (what :func:`main` writes to ``--json``)."""
    return [
        Row(
            summary["env_id"],
            summary["setting"],
            summary["runner"],
            summary["workers"],
            summary["B"],
            summary["G"],
            summary["pool_startup_s"],
            [Timing(**t) for t in run["batched"]],
            [Timing(**t) for t in run["single"]],
            summary["single_baseline"],
            raw["meta"]["max_new_tokens"],
        )
        for summary, run in zip(raw["rows"], raw["runs"], strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default). One by default: on a shared machine a second OpenMP thread "
        "that loses its core stalls every op, and timings swing tenfold",
    )
    parser.add_argument("--settings", nargs="*", default=None, help="names of settings to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--json", type=Path, default=JSON_OUT)
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the section from the saved --json run, measuring nothing"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        raw = json.loads(args.json.read_text())
        replace_section(args.out, SECTION, section(rows_from_json(raw), raw["meta"]))
        print(f"wrote {args.out} from {args.json}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    settings = [s for s in SETTINGS if args.settings is None or s.name in args.settings]
    sampling = Sampling(temperature=1.0, max_new_tokens=args.max_new_tokens)
    console = Console(width=max(Console().width, 160))
    policy = HFPolicy.tiny(seed=0)
    policies = {True: policy, False: HFPolicy(policy.model, policy.processor, prefix_cache_bytes=0)}
    with Progress(console=console) as progress:
        rows = measure(policies, settings, ENVS, args.repeats, Budget(sampling, args.max_turns), progress)
    meta: dict[str, Any] = {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "transformers": transformers.__version__,
        "gymnasium": gym.__version__,
        "repeats": args.repeats,
        "temperature": sampling.temperature,
        "max_new_tokens": sampling.max_new_tokens,
        "max_turns": args.max_turns,
    }
    table = Table(title="VLM rollout collector (tiny policy)")
    for col in (
        "env",
        "env side",
        "BxG",
        "gen s/turn",
        "tok/s",
        "1-at-a-time tok/s",
        "overhead/turn",
        "(a)",
        "whole rollout",
        "speed-up",
        "gen only",
        "(b)",
    ):
        table.add_column(col)
    for r in rows:
        s = r.summary()
        table.add_row(
            r.env_id.split("/")[1],
            r.setting,
            f"{r.tasks}x{r.group}",
            f"{s['batched_generate_s_per_turn']:.3f}",
            f"{s['batched_tokens_per_s']:,.0f}",
            f"{s['single_tokens_per_s']:,.0f}",
            f"{100 * r.worst_turn_overhead:.1f}%",
            _met(s["overhead_target_met"]).strip("*"),
            f"{100 * r.overhead:.1f}%",
            f"{r.speedup:.2f}x",
            f"{r.generate_speedup:.2f}x",
            _met(s["speedup_target_met"]).strip("*"),
        )
    console.print(table)
    replace_section(args.out, SECTION, section(rows, meta))
    raw = {
        "meta": meta,
        "rows": [r.summary() for r in rows],
        "runs": [
            {
                "env_id": r.env_id,
                "setting": r.setting,
                "batched": [asdict(t) for t in r.batched],
                "single": [asdict(t) for t in r.single],
            }
            for r in rows
        ],
    }
    args.json.write_text(json.dumps(raw, indent=1, default=float) + "\n")
    console.print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
