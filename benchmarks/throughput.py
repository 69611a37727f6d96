"""Env throughput beside each backend's raw cost, measured in the same run: ``make bench``.

Every figure is the median of ``--repeats`` timed runs. Ratios compare an env step with the bare
backend operation it cannot avoid (one cairosvg render of the same picture; one numpy tile swap),
so they mean something on a shared, noisy machine where absolute rates drift. Writes
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cairosvg
import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import visrl_envs  # noqa: F401
from benchmarks.sections import marked_sections
from visrl_envs.envs.svg.canvas import PrimitiveCanvas
from visrl_envs.envs.svg.generator import generate_svg
from visrl_envs.envs.svg.raster import render_trusted

RESULTS = Path(__file__).parent / "RESULTS.md"


@dataclass
class Row:
    what: str
    rate: float  # operations per second
    baseline: str = ""
    baseline_rate: float = 0.0
    target: str = ""

    @property
    def ratio(self) -> float:
        """Env cost over baseline cost (1.0 = free on top of the backend)."""
        return self.baseline_rate / self.rate if self.baseline_rate else float("nan")


def step_rate(env: gym.Env, actions: list, n: int, repeats: int, seed: int = 0) -> float:
    """Median steps per second over ``repeats`` runs of ``n`` steps, timing the steps alone (the
    resets between episodes are excluded; they are measured on their own rows)."""
    env.reset(seed=seed)
    it = itertools.cycle(actions)
    runs = []
    for _ in range(repeats + 1):
        spent = 0.0
        for _ in range(n):
            action = next(it)
            start = time.perf_counter()
            out = env.step(action)
            spent += time.perf_counter() - start
            if out[2] or out[3]:
                env.reset()
        runs.append(n / spent)
    return statistics.median(runs[1:])


def rate(fn: Callable[[], object], n: int, repeats: int) -> float:
    """Median operations per second of ``n`` calls, over ``repeats`` runs (after one warm-up call)."""
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append(n / (time.perf_counter() - start))
    return statistics.median(runs)


def cycling(fn: Callable[[Any], object], items: list) -> Callable[[], object]:
    """A no-argument callable applying ``fn`` to ``items`` in turn, forever."""
    it = itertools.cycle(items)
    return lambda: fn(next(it))


def stepper(env: gym.Env, actions: list, reset_seed: int = 0) -> Callable[[], object]:
    """Step ``env`` through ``actions`` in turn, resetting whenever an episode ends."""
    env.reset(seed=reset_seed)

    def step(action: Any) -> object:
        out = env.step(action)
        if out[2] or out[3]:
            env.reset()
        return out

    return cycling(step, actions)


def seeded_reset(env: gym.Env) -> Callable[[int], object]:
    return lambda seed: env.reset(seed=seed)


def render_random_target(rng: np.random.Generator, size: int) -> np.ndarray:
    """What an env reset must do at least: generate a difficulty-0 target and render it."""
    return render_trusted(generate_svg(rng, 0), size)


def svg_rows(repeats: int) -> list[Row]:
    rows = []
    for size in (64, 128, 256):
        for difficulty in (0, 2):
            env = gym.make("visrl/SvgRender-v1", size=size, difficulty=difficulty, max_turns=1000)
            env.reset(seed=1)
            base: Any = env.unwrapped
            code = base.target_code
            attempt = code.replace("</svg>", '<rect x="3" y="3" width="9" height="9" fill="#123456"/></svg>')
            n = 200 if difficulty == 0 else 60
            env_rate = rate(stepper(env, [f"<answer>{attempt}</answer>"], 1), n, repeats)
            data = attempt.encode()
            svg2png = functools.partial(
                cairosvg.svg2png, bytestring=data, output_width=size, output_height=size, background_color="white"
            )
            bare = rate(svg2png, n, repeats)
            rows.append(
                Row(
                    f"SvgRender text step, {size} px, d{difficulty}",
                    env_rate,
                    "cairosvg.svg2png of the same SVG",
                    bare,
                    "<= 1.25x" if size == 256 else "",
                )
            )
            direct = rate(functools.partial(render_trusted, attempt, size), n, repeats)
            rows.append(
                Row(
                    f"  (same) vs in-process render to array, {size} px, d{difficulty}",
                    env_rate,
                    "cairosvg surface read directly",
                    direct,
                )
            )
            env.close()
    rng = np.random.default_rng(0)
    for size in (64, 128, 256):
        env = gym.make("visrl/SvgRender-v1", action_mode="numeric", size=size, difficulty=3)
        env.reset(seed=0)
        base = env.unwrapped
        actions = [base.sample_numeric_action(rng) for _ in range(64)]
        env_rate = step_rate(env, actions, 300, repeats)
        canvas = PrimitiveCanvas(size)

        def draw(primitive: tuple[int, ...], c: PrimitiveCanvas = canvas) -> np.ndarray:
            if len(c.primitives) >= 32:
                c.clear()
            c.draw(*primitive)
            return c.array()

        rows.append(
            Row(
                f"SvgRender numeric step, {size} px, d3",
                env_rate,
                "cairo draw of one primitive + read",
                rate(cycling(draw, [tuple(int(v) for v in a) for a in actions]), 300, repeats),
                ">= 2000/s" if size == 64 else "",
            )
        )
        env.close()
    for mode in ("sync", None):  # None: the registry's vector entry point (one render call per step)
        envs: Any = gym.make_vec("visrl/SvgRender-v1", num_envs=4, vectorization_mode=mode, size=128, max_turns=1000)
        envs.reset(seed=0)
        programs = tuple(
            code.replace("</svg>", '<rect x="3" y="3" width="9" height="9" fill="#123456"/></svg>')
            for code in envs.get_attr("target_code")
        )
        name = "batched (vector entry point)" if mode is None else "gym sync"
        rows.append(
            Row(
                f"SvgRender text, make_vec {name} x4, 128 px (env steps/s)",
                4 * rate(cycling(envs.step, [programs]), 50, repeats),
            )
        )
        envs.close()
    for size in (64, 256):
        env = gym.make("visrl/SvgRender-v1", size=size, difficulty=0)
        reset_rate = rate(cycling(seeded_reset(env), list(range(10**4))), 100, repeats)
        rngs = [np.random.default_rng(seed) for seed in range(10**3)]
        bare_reset = rate(cycling(functools.partial(render_random_target, size=size), rngs), 100, repeats)
        rows.append(
            Row(
                f"SvgRender reset, d0, {size} px (ms = 1000/rate)",
                reset_rate,
                "generate + render the target",
                bare_reset,
                "<= 5 ms",
            )
        )
        env.close()
    return rows


def jigsaw_rows(repeats: int) -> list[Row]:
    rows = []
    rng = np.random.default_rng(0)
    for level in (2, 6):  # 2x2, and 4x4 with masked borders (the ladder's first and last rungs)
        env = gym.make("visrl/Jigsaw-v1", action_mode="numeric", level=level)
        base_env: Any = env.unwrapped
        actions = [base_env.sample_numeric_action(rng) for _ in range(256)]
        env_rate = step_rate(env, actions, 20000, repeats)
        raw = step_rate(base_env, actions, 20000, repeats)
        with_resets = rate(stepper(env, actions), 20000, repeats)
        tiles = base_env.grid[0]
        side = 84 // tiles

        board = np.zeros((84, 84, 3), np.uint8)

        def bare(pair: tuple[int, int], img: np.ndarray = board, t: int = side) -> np.ndarray:
            a, b = pair
            tmp = img[a * t : (a + 1) * t, :t].copy()
            img[a * t : (a + 1) * t, :t] = img[b * t : (b + 1) * t, :t]
            img[b * t : (b + 1) * t, :t] = tmp
            return img.copy()

        pairs = [(int(a), int(b)) for a, b in rng.integers(0, tiles, (256, 2))]
        bare_rate = rate(cycling(bare, pairs), 20000, repeats)
        grid = "x".join(map(str, base_env.grid))
        base = "numpy tile swap + copy"
        rows.append(Row(f"Jigsaw numeric step, 84 px, {grid} (gym.make)", env_rate, base, bare_rate, ">= 20000/s"))
        rows.append(Row(f"Jigsaw numeric step, 84 px, {grid} (unwrapped)", raw, base, bare_rate))
        rows.append(Row(f"Jigsaw numeric step, 84 px, {grid} (gym.make, resets included)", with_resets))
        env.close()
    env = gym.make("visrl/Jigsaw-v1", level=3)  # 3x3
    env.reset(seed=0)
    jigsaw: Any = env.unwrapped
    texts = [jigsaw.sample_text_action(rng) for _ in range(64)]
    rows.append(Row("Jigsaw text step, 336 px, 3x3 (parse + swap + obs)", rate(stepper(env, texts), 3000, repeats)))
    seeds = iter(range(10**6))
    rows.append(
        Row(
            "Jigsaw reset, 336 px, 3x3 (scene or augmented photo + cut + shuffle)",
            rate(lambda: env.reset(seed=next(seeds)), 300, repeats),
        )
    )
    env.close()
    for mode in ("sync", "async"):
        envs = gym.make_vec("visrl/Jigsaw-v1", num_envs=2, vectorization_mode=mode, action_mode="numeric", level=6)
        envs.reset(seed=0)
        acts = [envs.action_space.sample() for _ in range(64)]
        vector_rate = 2 * rate(cycling(envs.step, acts), 3000, repeats)
        rows.append(Row(f"Jigsaw numeric, make_vec {mode} x2 (env steps/s)", vector_rate))
        envs.close()
    return rows


def write(rows: list[Row], repeats: int) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# visrl throughput",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on `{platform.node()}` ({cpu}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, gymnasium {gym.__version__}, cairosvg {cairosvg.__version__}), "
        f"median of {repeats} runs, one process. `python -m benchmarks.throughput` regenerates this file.",
        "",
        "`cost ratio` = env time per step / baseline time per operation, both measured in this run. Step rows time",
        "the steps alone; resets have their own rows (and one row per env includes them).",
        "",
        "| what | env rate (/s) | baseline | baseline rate (/s) | cost ratio | target |",
        "|---|---:|---|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.baseline_rate else ""
        base_rate = f"{r.baseline_rate:,.0f}" if r.baseline_rate else ""
        lines.append(f"| {r.what} | {r.rate:,.0f} | {r.baseline} | {base_rate} | {ratio} | {r.target} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 150))
    rows: list[Row] = []
    with Progress(console=console) as progress:
        task = progress.add_task("throughput", total=2)
        rows += svg_rows(args.repeats)
        progress.advance(task)
        rows += jigsaw_rows(args.repeats)
        progress.advance(task)
    table = Table(title="visrl throughput")
    for col in ("what", "env /s", "baseline", "baseline /s", "ratio", "target"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.what,
            f"{r.rate:,.0f}",
            r.baseline,
            f"{r.baseline_rate:,.0f}" if r.baseline_rate else "",
            f"{r.ratio:.2f}x" if r.baseline_rate else "",
            r.target,
        )
    console.print(table)
    text = write(rows, args.repeats)
    kept = marked_sections(args.out.read_text()) if args.out.exists() else ""  # other benchmarks' sections
    args.out.write_text(text.rstrip("\n") + ("\n\n" + kept + "\n" if kept else "\n"))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
