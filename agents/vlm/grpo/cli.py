"""``visrl train vlm``: GRPO from a YAML config or from flags, with a live progress display;
``visrl train sft``: the SFT warm start on ``visrl demos`` data (TRL's SFTTrainer).

    visrl train vlm --config configs/grpo_shapecolor_tiny.yaml
    visrl train vlm --model /models/Qwen2.5-VL-3B-Instruct --env visrl/Jigsaw-v1 --steps 200 --lora
    visrl train vlm --config FILE --resume runs/grpo/checkpoint-50
    visrl train vlm --config FILE --generation-server http://127.0.0.1:8001   # visrl serve --allow-weight-updates
    visrl train sft --model /models/Qwen2.5-VL-3B-Instruct --demos demos/jigsaw --output-dir runs/sft

Flags given with ``--config`` override the file's values.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from typing import Any

#: Flags that map one-to-one onto TrainConfig fields (flag name -> field, type).
FLAGS: dict[str, tuple[str, type]] = {
    "--model": ("model", str),
    "--env": ("env_id", str),
    "--difficulty": ("difficulty", int),
    "--output-dir": ("output_dir", str),
    "--steps": ("steps", int),
    "--tasks-per-step": ("tasks_per_step", int),
    "--group-size": ("group_size", int),
    "--max-new-tokens": ("max_new_tokens", int),
    "--max-turns": ("max_turns", int),
    "--learning-rate": ("learning_rate", float),
    "--micro-batch": ("micro_batch", int),
    "--save-every": ("save_every", int),
    "--eval-every": ("eval_every", int),
    "--seed": ("seed", int),
    "--env-runner": ("env_runner", str),
    "--generation-server": ("generation_server", str),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind", choices=("vlm", "sft"), help="vlm: GRPO on the text interface; sft: warm start on visrl demos data"
    )
    parser.add_argument("--demos", default=None, help="sft: a directory written by visrl demos")
    parser.add_argument("--batch-size", type=int, default=8, help="sft: sequences per step")
    parser.add_argument("--config", default=None, help="YAML file of TrainConfig fields (docs/TRAINING.md)")
    parser.add_argument("--resume", default=None, help="a checkpoint directory to go on from")
    parser.add_argument(
        "--lora", action="store_true", help="train LoRA adapters (r 16, alpha 32) instead of all weights"
    )
    for flag, (name, kind) in FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, default=None)


def config_from_args(args: argparse.Namespace) -> Any:
    from agents.vlm.grpo.config import LoraSpec, TrainConfig

    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = {name: getattr(args, name) for name, _ in FLAGS.values() if getattr(args, name) is not None}
    if args.lora:
        overrides["lora"] = LoraSpec()
    return replace(config, **overrides)


def run_sft(args: argparse.Namespace) -> int:
    from agents.vlm.grpo.sft import SFTSettings, sft_warm_start

    if not args.demos or not args.model or not args.output_dir:
        print("visrl train sft: give --model (a directory or tiny), --demos DIR and --output-dir", file=sys.stderr)
        return 2
    defaults = SFTSettings()
    settings = SFTSettings(
        steps=args.steps or defaults.steps,
        learning_rate=args.learning_rate or defaults.learning_rate,
        batch_size=args.batch_size,
        seed=args.seed or 0,
    )
    try:
        out = sft_warm_start(args.model, args.demos, args.output_dir, settings)
    except (ValueError, FileNotFoundError) as err:
        print(f"visrl train sft: {err}", file=sys.stderr)
        return 2
    print(f"warm-started model in {out} (visrl train vlm --model {out} ...)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.kind == "sft":
        return run_sft(args)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        config = config_from_args(args)
        from agents.vlm.grpo.trainer import GRPOTrainer

        trainer = GRPOTrainer(config)
        if args.resume:
            trainer.resume(args.resume)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as err:  # RuntimeError: an unreachable server
        print(f"visrl train: {err}", file=sys.stderr)
        return 2
    console = Console()
    columns = (
        TextColumn("GRPO {task.fields[env]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[line]}"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=config.steps, completed=trainer.step, env=config.env_id, line="")

        def show(report: Any) -> None:
            line = (
                f"reward {report.reward:+.3f}  score {report.score:.3f}  kl {report.kl:.4f}  "
                f"clip {report.clip_ratio:.3f}  {report.tokens_per_second:.0f} tok/s"
            )
            if math.isfinite(report.eval_score):
                line += f"  test score {report.eval_score:.3f}"
            progress.update(task, completed=report.step, line=line)

        trainer.train(on_step=show)
    console.print(f"checkpoints and metrics in {config.output_dir} (tensorboard --logdir {config.output_dir})")
    return 0
