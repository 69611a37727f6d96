"""SFT warm start on ``visrl demos`` data with TRL's ``SFTTrainer`` (no SFT loop of our own).

    visrl demos --env visrl/Jigsaw-v1 --episodes 2000 --out demos/jigsaw
    visrl train sft --model /models/Qwen2.5-VL-3B-Instruct --demos demos/jigsaw --output-dir runs/sft

The demos are chat conversations in the exact format the policy sees in rollouts (the same
formatter), so the warm-started model starts GRPO on familiar turf. ``visrl demos --agent random``
writes well-formed actions at chance level: SFT on them teaches the action format and nothing of
the task, the usual way to make a small model emit parseable answers before RL.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

#: What a warm start writes beside the model: base, demos, settings, mean training loss.
SFT_RECORD = "visrl_sft.json"


@dataclass(frozen=True)
class SFTSettings:
    """The few knobs of the warm start; the rest are TRL's ``SFTConfig`` defaults."""

    steps: int = 100
    learning_rate: float = 2e-5
    batch_size: int = 8
    max_length: int = 4096
    gradient_checkpointing: bool = False
    seed: int = 0


def sft_warm_start(model: str | Path, demos: str | Path, output_dir: str | Path, settings: SFTSettings) -> Path:
    """Fine-tune ``model`` (a local directory, or ``tiny`` for the offline model) on the demos in
    ``demos`` and write the result to ``output_dir`` as a model directory ``visrl eval``,
    ``visrl train vlm --model`` and ``HFPolicy.from_pretrained`` load. Returns ``output_dir``."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from agents.vlm.policies.hf import load_processor
    from agents.vlm.workbench.demos import DemoCollator, load_demos

    output_dir = Path(output_dir)
    if str(model) == "tiny":
        from agents.vlm.policies.tiny import build_tiny_vlm

        model = build_tiny_vlm(seed=settings.seed).save_pretrained(output_dir / "initial")
    model = Path(model)
    if not (model / "config.json").exists():
        raise FileNotFoundError(f"{model} is not a model directory (no config.json)")
    processor = load_processor(model)  # image processor + tokenizer only: no torchvision
    dataset = load_demos(demos)
    on_gpu = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(output_dir / "trl"),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        max_length=settings.max_length,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        gradient_checkpointing=settings.gradient_checkpointing,
        save_strategy="no",
        report_to=[],
        logging_steps=max(1, settings.steps // 10),
        disable_tqdm=True,
        remove_unused_columns=False,  # DemoCollator needs the tools column
        seed=settings.seed,
    )
    trainer = SFTTrainer(
        model=str(model),
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        data_collator=DemoCollator(processor, max_length=settings.max_length),
    )
    result = trainer.train()
    trainer.save_model(str(output_dir))
    processor.save_pretrained(output_dir)
    record = {"base": str(model), "demos": str(demos), "settings": asdict(settings), "loss": result.training_loss}
    (output_dir / SFT_RECORD).write_text(json.dumps(record, indent=1))
    return output_dir
