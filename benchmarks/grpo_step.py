"""GRPO trainer step time with the tiny policy: ``python -m benchmarks.grpo_step`` (``make bench-grpo``).

One :class:`~agents.vlm.grpo.trainer.GRPOTrainer` per env family's text interface (ShapeColor at
56 px, one turn; Jigsaw at 84 px and SvgRender at 64 px, up to 3 turns), B=4 tasks x G=8 samples
per step, ``max_new_tokens`` 32, full fine-tuning in fp32 on CPU. After one warm-up step, each of
``--steps`` steps is split as the trainer's :class:`~agents.vlm.grpo.trainer.StepReport` records it:

- **generate**: the batched ``generate`` calls of the rollout (prefill + decode, all turns);
- **env**: env stepping, chat formatting and token bookkeeping of the rollout;
- **update**: the training forward, the loss, backward and the optimizer step (``loss+backward``).

Figures are medians over the steps; the shares divide by the same step's total, so they compare
timings taken together (the machine is shared). ``model tokens/s`` counts the tokens the policy
generated per second of the whole step. Torch runs one thread (``--threads``), as in
``benchmarks/vlm_rollout.py``. Writes its section of ``benchmarks/RESULTS.md`` (``grpo-step``) and
``benchmarks/grpo_step.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.sections import replace_section

HERE = Path(__file__).parent
SECTION = "grpo-step"
#: The env of each family and its kwargs (small images: the tiny model's cost, not the renderer's).
ENVS: dict[str, dict[str, Any]] = {
    "visrl/ShapeColor-v0": {"size": 56, "max_attempts": 1},
    "visrl/Jigsaw-v1": {"size": 84},
    "visrl/SvgRender-v1": {"size": 64},
}


@dataclass
class Row:
    """Median figures of one env's measured steps."""

    env_id: str
    steps: int
    trajectories: int
    model_tokens: float  #: generated tokens per step
    seconds_generate: float
    seconds_env: float
    seconds_update: float
    share_generate: float
    share_env: float
    share_update: float
    tokens_per_second: float

    @property
    def seconds_total(self) -> float:
        return self.seconds_generate + self.seconds_env + self.seconds_update


def measure(env_id: str, env_kwargs: dict[str, Any], steps: int, workdir: Path, advance: Any = None) -> Row:
    """Run one warm-up step and ``steps`` measured steps of GRPO on ``env_id``."""
    from agents.vlm.grpo.config import TrainConfig
    from agents.vlm.grpo.trainer import GRPOTrainer

    config = TrainConfig(
        model="tiny",
        env_id=env_id,
        env_kwargs=env_kwargs,
        output_dir=str(workdir / env_id.replace("/", "_")),
        tasks_per_step=4,
        group_size=8,
        max_turns=3,
        max_new_tokens=32,
        steps=steps + 1,
        learning_rate=1e-4,
        micro_batch=8,
        save_every=0,
        report_to=(),
    )
    trainer = GRPOTrainer(config)
    trainer.train_step()  # warm-up: first-call costs (kernels, caches) are not a step's cost
    reports = []
    for _ in range(steps):
        reports.append(trainer.train_step())
        if advance is not None:
            advance()

    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    totals = [r.seconds_generate + r.seconds_env + r.seconds_update for r in reports]
    return Row(
        env_id=env_id,
        steps=steps,
        trajectories=reports[0].trajectories,
        model_tokens=median([float(r.model_tokens) for r in reports]),
        seconds_generate=median([r.seconds_generate for r in reports]),
        seconds_env=median([r.seconds_env for r in reports]),
        seconds_update=median([r.seconds_update for r in reports]),
        share_generate=median([r.seconds_generate / t for r, t in zip(reports, totals, strict=True)]),
        share_env=median([r.seconds_env / t for r, t in zip(reports, totals, strict=True)]),
        share_update=median([r.seconds_update / t for r, t in zip(reports, totals, strict=True)]),
        tokens_per_second=median([r.tokens_per_second for r in reports]),
    )


def section(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        "## GRPO trainer step time (tiny policy)",
        "",
        f"`python -m benchmarks.grpo_step` on {meta['date']} ({meta['machine']}, torch {meta['threads']} thread(s)): "
        "B=4 tasks x G=8 samples per step, up to 3 turns of at most 32 new tokens, full fine-tuning in fp32, "
        f"micro-batches of 8; medians over {rows[0].steps} steps after a warm-up step. Shares are of the same "
        "step's total.",
        "",
        "| env | trajectories | model tokens / step | generate s | env s | loss+backward s | step s | "
        "generate | env | loss+backward | model tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r.env_id}` | {r.trajectories} | {r.model_tokens:.0f} | {r.seconds_generate:.2f} | "
            f"{r.seconds_env:.2f} | {r.seconds_update:.2f} | {r.seconds_total:.2f} | {r.share_generate:.0%} | "
            f"{r.share_env:.0%} | {r.share_update:.0%} | {r.tokens_per_second:.0f} |"
        )

    def span(values: list[float]) -> str:
        return f"{min(values):.0%}-{max(values):.0%}"

    lines += [
        "",
        f"Generation takes {span([r.share_generate for r in rows])} of a step, the update (one forward and "
        f"backward over each trajectory's whole sequence) {span([r.share_update for r in rows])}, the env side "
        f"(stepping, chat formatting, token bookkeeping) {span([r.share_env for r in rows])}. Within a step, "
        "generation encodes only each turn's new tokens (the policy's prefix cache, see the rollout section); "
        "the cache is emptied by each update, since the weights change.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="measured steps per env (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    console = Console()
    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with tempfile.TemporaryDirectory() as tmp, Progress(*columns, console=console) as progress:
        for env_id, kwargs in ENVS.items():
            task = progress.add_task(env_id, total=args.steps)
            rows.append(measure(env_id, kwargs, args.steps, Path(tmp), lambda t=task: progress.advance(t)))
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": platform.machine(),
        "threads": args.threads,
    }
    table = Table("env", "generate s", "env s", "loss+backward s", "model tokens/s", title="GRPO step")
    for r in rows:
        table.add_row(
            r.env_id,
            f"{r.seconds_generate:.2f}",
            f"{r.seconds_env:.2f}",
            f"{r.seconds_update:.2f}",
            f"{r.tokens_per_second:.0f}",
        )
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpo_step.json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1))
    replace_section(args.out / "RESULTS.md", SECTION, section(rows, meta))
    return rows


if __name__ == "__main__":
    main()
