"""The GRPO trainer's configuration: one dataclass, every field documented, loadable from YAML.

``visrl train vlm --config FILE`` reads a YAML mapping whose keys are the fields of
:class:`TrainConfig`; the ``loss`` key holds :class:`~agents.vlm.grpo.loss.LossConfig`'s fields and
``lora`` holds :class:`LoraSpec`'s (or ``null`` for full fine-tuning). Unknown keys are refused by
name, so a typo never trains with a silent default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from agents.vlm.grpo.loss import SAMPLING_CORRECTION_MODES, LossConfig

CREDIT = ("trajectory", "step")
SCHEDULERS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapters through peft (the reference policy is then the adapter switched off)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    #: Module names to adapt; the default covers the language model's attention and MLP projections.
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    """GRPO on one env's text interface. Defaults follow TRL where TRL has the same knob."""

    # --- what to train, where ---
    model: str = "tiny"  #: ``tiny[:SEED]`` (random offline model) or a local model directory
    env_id: str = "visrl/ShapeColor-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)  #: extra ``gym.make`` keywords
    difficulty: int = 0
    dtype: str = "auto"  #: weights: auto (bf16 LoRA base on GPU, else fp32) | bfloat16 | float32
    output_dir: str = "runs/grpo"
    seed: int = 0
    # --- rollouts ---
    tasks_per_step: int = 4  #: B: distinct tasks per optimizer step
    group_size: int = 8  #: G: samples per task (TRL's num_generations)
    max_turns: int | None = None  #: default: the env's horizon
    max_new_tokens: int = 256  #: per turn (TRL's max_completion_length for one turn)
    max_total_tokens: int | None = None  #: per trajectory, prompt included
    temperature: float = 1.0
    top_p: float = 1.0
    env_runner: str = "inline"  #: inline | vector | ray
    #: generate on this server (``visrl serve --model SAME --allow-weight-updates``, agents/vlm/serving/) instead of
    #: in-process; the trainable weights are pushed to it after every update. None: in-process ``generate``
    generation_server: str | None = None
    generation_server_api_key: str | None = None
    dynamic_sampling: bool = False  #: DAPO: drop groups whose rewards are all equal and refill
    max_refills: int = 4  #: extra rollout rounds per step when refilling
    credit: str = "trajectory"  #: trajectory (GRPO) | step (GiGPO sub-groups of shared env states)
    gamma: float = 0.95  #: step credit: discount of the return-to-go
    omega: float = 1.0  #: step credit: weight of the step advantage
    # --- optimisation ---
    steps: int = 100  #: optimizer steps
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"  #: constant | linear | cosine (after warmup)
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    num_iterations: int = 1  #: TRL's mu: updates per batch of rollouts
    #: weight each token's policy loss by exp(trainer - sampler logprob), TRL's vllm_importance_sampling_correction:
    #: corrects the mismatch between the engine that sampled (bf16 generate, a server) and the trainer's forward
    importance_sampling_correction: bool = False
    importance_sampling_mode: str = "sequence_mask"  #: token_truncate | token_mask | sequence_truncate | sequence_mask
    importance_sampling_clip_max: float | None = 3.0  #: upper bound (truncate: clip; mask: zero above)
    importance_sampling_clip_min: float | None = None  #: lower bound, None: open
    micro_batch: int = 8  #: trajectories per forward/backward (gradient accumulation inside a step)
    #: GiB for the rollout's key/value states kept between turns (agents/vlm/policies/prefix_cache.py), so that a turn
    #: encodes only what is new; about (trajectories x tokens x the model's KV bytes per token) keeps them all; 0: off
    prefix_cache_gb: float = 1.0
    gradient_checkpointing: bool = False
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraSpec | None = None
    # --- bookkeeping ---
    log_every: int = 1
    save_every: int = 50  #: steps between checkpoints (0: only at the end)
    eval_every: int = 0  #: steps between evaluations on the test split (0: never)
    eval_episodes: int = 16
    report_to: tuple[str, ...] = ("tensorboard",)  #: tensorboard and/or wandb (when installed); () for none

    def __post_init__(self) -> None:
        positive = ("tasks_per_step", "group_size", "max_new_tokens", "steps", "num_iterations", "micro_batch")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.credit not in CREDIT:
            raise ValueError(f"credit must be one of {CREDIT}, got {self.credit!r}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {SCHEDULERS}, got {self.lr_scheduler!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.prefix_cache_gb >= 0:
            raise ValueError(f"prefix_cache_gb must be >= 0, got {self.prefix_cache_gb}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2: GRPO's advantage compares samples of one task")
        if self.importance_sampling_mode not in SAMPLING_CORRECTION_MODES:
            raise ValueError(
                f"importance_sampling_mode must be one of {SAMPLING_CORRECTION_MODES}, got {self.importance_sampling_mode!r}"
            )
        if self.generation_server is not None and self.lora is not None:
            raise ValueError("generation_server with LoRA is not supported yet (the server would need merged weights)")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"dtype must be auto, bfloat16 or float32, got {self.dtype!r}")
        unknown = set(self.report_to) - {"tensorboard", "wandb"}
        if unknown:
            raise ValueError(f"report_to takes tensorboard and/or wandb, got {sorted(unknown)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        if isinstance(data.get("loss"), dict):
            loss_known = {f.name for f in fields(LossConfig)}
            bad = sorted(set(data["loss"]) - loss_known)
            if bad:
                raise ValueError(f"unknown loss keys {bad}; known: {sorted(loss_known)}")
            data["loss"] = LossConfig(**data["loss"])
        if isinstance(data.get("lora"), dict):
            lora_known = {f.name for f in fields(LoraSpec)}
            bad = sorted(set(data["lora"]) - lora_known)
            if bad:
                raise ValueError(f"unknown lora keys {bad}; known: {sorted(lora_known)}")
            lora = dict(data["lora"])
            if "target_modules" in lora:
                lora["target_modules"] = tuple(lora["target_modules"])
            data["lora"] = LoraSpec(**lora)
        if "report_to" in data:
            data["report_to"] = tuple(data["report_to"] or ())
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"cannot read config {path}: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"config {path} must be a YAML mapping of TrainConfig fields")
        return cls.from_dict(data)
