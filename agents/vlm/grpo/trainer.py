"""GRPO for vision-language policies on any visrl env's text interface.

One step: roll out ``tasks_per_step`` tasks x ``group_size`` samples with the token-exact collector
(:func:`agents.vlm.rollout.collect`), score each trajectory by its return, turn returns into
advantages within each group (or GiGPO step credit), then ``num_iterations`` optimizer updates of
the GRPO-family loss (:mod:`agents.vlm.grpo.loss`) over micro-batches. Built on ``accelerate``
(device placement, bf16 on GPU, data parallel / FSDP2 / DeepSpeed through ``accelerate launch``),
``peft`` for LoRA, TensorBoard (and W&B when installed) for logs.

What a trainer must get right, and where it is tested (``tests/test_grpo_trainer.py``):

- the loss sees only model tokens (env tokens have mask 0) and the log-probabilities are those of the
  ids the model generated, never of a re-tokenised text;
- the ratio is exactly 1 before the first update (TRL's ``old = logprobs.detach()`` when
  ``num_iterations == 1``; computed once, without grad, otherwise);
- resume restores the model, optimizer, scheduler, RNG and data position: task seeds of step ``k``
  are a pure function of ``(seed, k)``.

GPU paths are written for bf16 and device placement by ``accelerate``; they are not exercised on
this CPU-only machine (docs/TRAINING.md says what to expect).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.vlm.grpo.config import TrainConfig
from agents.vlm.grpo.loss import (
    broadcast_step_advantages,
    dynamic_sampling_mask,
    group_advantages,
    policy_loss,
    sampling_correction,
    state_key,
    step_advantages,
)
from agents.vlm.policies.hf import HFPolicy
from agents.vlm.policies.logprobs import gather_logprobs
from agents.vlm.policies.policy import Sampling
from agents.vlm.rollout import RolloutStats, collect
from agents.vlm.rollout.trajectory import Trajectory

STATE_FILE = "trainer_state.json"


@dataclass
class StepReport:
    """What one optimizer step did (the progress line and the logs)."""

    step: int
    reward: float
    score: float
    action_errors: float  #: share of steps whose action the env could not parse
    loss: float
    kl: float
    clip_ratio: float
    grad_norm: float
    #: mean |trainer - sampler| log-probability of the model tokens (0 up to float noise when the trainer's
    #: forward matches generation; large values mean the sampler is not the policy being trained)
    logprob_gap: float
    #: mean importance weight applied (``importance_sampling_correction``), NaN when off
    importance_ratio: float
    trajectories: int
    groups_kept: int
    env_errors: int
    model_tokens: int
    seconds_generate: float
    seconds_env: float
    seconds_update: float
    learning_rate: float
    eval_score: float = float("nan")  #: mean greedy test score, on steps that evaluate (``eval_every``)
    #: share of the rollouts' prompt tokens the model encoded (the rest came from the prefix cache); near 1
    #: on multi-turn envs means ``prefix_cache_gb`` is too small to keep the turns' states. NaN without a cache
    prompt_encoded: float = float("nan")

    @property
    def tokens_per_second(self) -> float:
        total = self.seconds_generate + self.seconds_env + self.seconds_update
        return self.model_tokens / total if total > 0 else 0.0


def weight_dtype(config: TrainConfig) -> Any:
    """The dtype weights load in: ``config.dtype``, or by default bf16 for a frozen LoRA base on GPU
    and fp32 otherwise (full fine-tuning keeps fp32 master weights; accelerate autocasts to bf16)."""
    import torch

    if config.dtype != "auto":
        return getattr(torch, config.dtype)
    return torch.bfloat16 if config.lora is not None and torch.cuda.is_available() else torch.float32


def load_policy_for_training(config: TrainConfig) -> HFPolicy:
    """The policy to train: the tiny offline model or a local model directory, with LoRA if asked."""
    cache_bytes = int(config.prefix_cache_gb * 2**30)
    if config.model == "tiny" or config.model.startswith("tiny:"):
        seed = config.model.partition(":")[2]
        policy = HFPolicy.tiny(seed=int(seed or 0), prefix_cache_bytes=cache_bytes)
    else:
        policy = HFPolicy.from_pretrained(config.model, dtype=weight_dtype(config), prefix_cache_bytes=cache_bytes)
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        present = {name.rsplit(".", 1)[-1] for name, _ in policy.model.named_modules()}
        targets = [t for t in config.lora.target_modules if t in present]
        if not targets:
            raise ValueError(f"none of the LoRA target modules {config.lora.target_modules} is in the model")
        lora = LoraConfig(
            r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout, target_modules=targets
        )
        policy.model = get_peft_model(policy.model, lora)
    if config.gradient_checkpointing:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.lora is not None:
            policy.model.enable_input_require_grads()
    return policy


def completion_logprobs(
    policy: HFPolicy, model: Any, trajectories: Sequence[Trajectory], temperature: float
) -> tuple[Any, Any]:
    """``(logprobs, mask)``, each (B, T): the log-probabilities of every completion-side id under
    ``model`` (with grad), left-aligned and right-padded, and the trajectories' masks (0 on padding).
    Only the logits of the completion side are materialised (``logits_to_keep``)."""
    import torch

    sequences = [t.sequence() for t in trajectories]
    batch = policy.model_inputs(sequences)
    lengths = [len(t.completion_ids) for t in trajectories]
    longest = max(lengths)
    outputs = model(**batch, logits_to_keep=longest + 1)
    ids = batch["input_ids"][:, -longest:]
    banned = policy._banned.to(outputs.logits.device)
    every = gather_logprobs(outputs.logits[:, :-1], ids, temperature, banned)  # (B, longest), right-aligned
    rows, masks = [], []
    for row, (length, trajectory) in enumerate(zip(lengths, trajectories, strict=True)):
        values = every[row, longest - length :]
        rows.append(torch.nn.functional.pad(values, (0, longest - length)))
        mask = torch.zeros(longest, dtype=torch.float32, device=values.device)
        mask[:length] = torch.tensor(trajectory.mask, dtype=torch.float32, device=values.device)
        masks.append(mask)
    return torch.stack(rows), torch.stack(masks)


def step_states(trajectory: Trajectory) -> list[Any]:
    """A key per step of the observation it acted from: the first turn's images, then each step's
    feedback text and new images (GiGPO groups steps of a group that saw the same observation)."""
    keys = [tuple(state_key(i) for i in trajectory.images[: trajectory.prompt_images])]
    offset = trajectory.prompt_images
    for step in trajectory.steps[:-1]:
        images = trajectory.images[offset : offset + step.feedback_images]
        offset += step.feedback_images
        keys.append((step.feedback, *(state_key(i) for i in images)))
    return keys


def _action_error_share(trajectories: Sequence[Trajectory]) -> float:
    steps = [s for t in trajectories for s in t.steps]
    return float(np.mean([bool(s.info.get("action_error")) for s in steps])) if steps else float("nan")


def _truncated(trajectory: Trajectory) -> bool:
    return trajectory.finish == "token_limit" or (bool(trajectory.steps) and not trajectory.steps[-1].finished_turn)


class GRPOTrainer:
    """GRPO on ``config.env_id``. ``train()`` runs to ``config.steps``; ``resume(dir)`` first, to go on
    from a checkpoint. ``on_step(report)`` is called after every step (progress displays, tests)."""

    def __init__(self, config: TrainConfig, policy: HFPolicy | None = None) -> None:
        import torch
        from accelerate import Accelerator
        from transformers import get_scheduler

        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
        torch.manual_seed(config.seed)
        self.policy = policy or load_policy_for_training(config)
        trainable = [p for p in self.policy.model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters")
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        updates = config.steps * config.num_iterations
        scheduler = get_scheduler(
            config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=updates
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(self.policy.model, optimizer, scheduler)
        self.policy.model = self.accelerator.unwrap_model(self.model)
        self.reference = self._reference_model()
        self.sampler = self._generation_client()
        self.sync_weights()
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._writers: list[Any] = []

    # --- pieces ---------------------------------------------------------------------------

    def _reference_model(self) -> Any:
        """A frozen copy of the initial model when ``beta > 0`` and no LoRA (with LoRA the reference
        is the same model with its adapter disabled)."""
        if self.config.loss.beta == 0 or self.config.lora is not None:
            return None
        reference = copy.deepcopy(self.policy.model).eval()
        for parameter in reference.parameters():
            parameter.requires_grad_(False)
        return reference

    def _generation_client(self) -> Any:
        """A :class:`~agents.vlm.serving.client.RemotePolicy` on ``generation_server`` (None: generate in-process)."""
        if self.config.generation_server is None:
            return None
        from agents.vlm.serving.client import RemotePolicy

        return RemotePolicy(
            self.config.generation_server, self.policy.processor, api_key=self.config.generation_server_api_key
        )

    def sync_weights(self) -> None:
        """Push the trainable weights to the generation server (no-op without one). The full state is
        gathered by accelerate (FSDP / ZeRO-3 shards included) and sent from the main process."""
        if self.sampler is None:
            return
        state = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            trainable = {n for n, p in self.accelerator.unwrap_model(self.model).named_parameters() if p.requires_grad}
            self.sampler.push_weights({name: tensor for name, tensor in state.items() if name in trainable})
        self.accelerator.wait_for_everyone()

    def task_seeds(self, step: int, count: int, round_: int = 0) -> list[int]:
        """The reset seeds of step ``step`` on this process (a pure function of the run seed, the step
        and the process index: resumable, and each data-parallel rank rolls out its own tasks)."""
        rng = np.random.default_rng([self.config.seed, step, round_, self.accelerator.process_index])
        return [int(s) for s in rng.integers(0, 2**31 - 1, size=count)]

    def sampling(self, step: int, round_: int = 0) -> Sampling:
        c = self.config
        return Sampling(c.temperature, c.max_new_tokens, top_p=c.top_p, seed=c.seed * 1_000_003 + step * 101 + round_)

    def rollouts(self, step: int, stats: RolloutStats) -> tuple[list[Trajectory], int, int]:
        """The step's trajectories (env errors dropped), how many groups were kept and how many
        trajectories ended in an env error. With dynamic sampling, groups whose rewards are all
        equal are dropped and new tasks are rolled out, up to ``max_refills`` extra rounds."""
        c = self.config
        kept: list[Trajectory] = []
        groups = errors = 0
        self.policy.model.eval()
        for round_ in range(1 + (c.max_refills if c.dynamic_sampling else 0)):
            need = c.tasks_per_step - groups
            if need <= 0:
                break
            runs = collect(
                self.sampler or self.policy,
                c.env_id,
                self.task_seeds(step, need, round_),
                group_size=c.group_size,
                sampling=self.sampling(step, round_),
                env_kwargs={"difficulty": c.difficulty, "split": "train", **c.env_kwargs},
                max_turns=c.max_turns,
                max_total_tokens=c.max_total_tokens,
                env_runner=c.env_runner,
                stats=stats,
            )
            for run in runs:
                run.group += 1000 * round_  # groups of refill rounds never merge with earlier ones
            healthy = [t for t in runs if t.finish != "env_error"]
            errors += len(runs) - len(healthy)
            if c.dynamic_sampling and healthy:
                keep = dynamic_sampling_mask([t.total_reward for t in healthy], [t.group for t in healthy])
                healthy = [t for t, k in zip(healthy, keep.tolist(), strict=True) if k]
            kept += healthy
            groups += len({t.group for t in healthy})
            if not c.dynamic_sampling:
                break
        if self.sampler is None and self.policy.prefix_cache is not None:
            self.policy.prefix_cache.clear()  # the update changes the weights: free its memory for the backward
        return kept, groups, errors

    def advantages(self, trajectories: Sequence[Trajectory]) -> Any:
        """(B,) trajectory advantages, or (B, T) per-token ones with step credit."""

        c = self.config
        rewards = [t.total_reward for t in trajectories]
        groups = [t.group for t in trajectories]
        if c.credit == "trajectory":
            return group_advantages(rewards, groups, c.loss.scale_rewards)
        credit = step_advantages(
            [t.rewards for t in trajectories],
            [step_states(t) for t in trajectories],
            groups,
            gamma=c.gamma,
            omega=c.omega,
            scale_rewards=c.loss.scale_rewards,
        )
        longest = max(len(t.completion_ids) for t in trajectories)
        spans = [[s.model_span for s in t.steps] for t in trajectories]
        return broadcast_step_advantages(credit.combined, spans, longest)

    def _reference_logprobs(self, micro: Sequence[Trajectory]) -> Any:
        import torch

        if self.config.loss.beta == 0:
            return None
        with torch.no_grad():
            if self.reference is not None:
                return completion_logprobs(self.policy, self.reference, micro, self.config.temperature or 1.0)[0]
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                return completion_logprobs(self.policy, self.model, micro, self.config.temperature or 1.0)[0]

    def _sampling_weights(self, behaviour: Any, micro: Sequence[Trajectory], mask: Any) -> tuple[Any, dict[str, float]]:
        """The sampler/trainer importance weights (None unless ``importance_sampling_correction``) and the
        mismatch metric, always: the mean |trainer - sampler| log-probability over model tokens."""
        import torch

        c = self.config
        sampled = torch.zeros_like(behaviour)
        for row, t in enumerate(micro):
            sampled[row, : len(t.logprobs)] = torch.tensor(t.logprobs, dtype=behaviour.dtype)
        model = mask.bool()
        gap = (behaviour - sampled).abs()[model]
        metrics = {"sampling/logprob_gap": float(gap.mean()) if gap.numel() else 0.0}
        if not c.importance_sampling_correction:
            return None, metrics
        weights = sampling_correction(
            behaviour,
            sampled,
            mask,
            c.importance_sampling_mode,
            c.importance_sampling_clip_max,
            c.importance_sampling_clip_min,
        )
        chosen = weights.expand_as(behaviour)[model]
        metrics["sampling/importance_sampling_ratio"] = float(chosen.mean()) if chosen.numel() else 1.0
        return weights, metrics

    def update(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """``num_iterations`` optimizer updates on ``trajectories``; averaged metrics."""
        import torch

        c = self.config
        temperature = c.temperature or 1.0
        advantages = self.advantages(trajectories)
        chunks = [
            list(range(i, min(i + c.micro_batch, len(trajectories))))
            for i in range(0, len(trajectories), c.micro_batch)
        ]
        total_tokens = sum(t.model_tokens() for t in trajectories)
        truncated = torch.tensor([_truncated(t) for t in trajectories])
        old: list[Any] = [None] * len(chunks)
        self.model.train()
        if c.num_iterations > 1:
            with torch.no_grad():
                old = [
                    completion_logprobs(self.policy, self.model, [trajectories[i] for i in idx], temperature)[0]
                    for idx in chunks
                ]
        reference = [self._reference_logprobs([trajectories[i] for i in idx]) for idx in chunks]
        sums: dict[str, float] = {}
        for _ in range(c.num_iterations):
            for k, idx in enumerate(chunks):
                micro = [trajectories[i] for i in idx]
                logprobs, mask = completion_logprobs(self.policy, self.model, micro, temperature)
                adv = advantages[idx]
                if adv.dim() == 2:
                    adv = adv[:, : logprobs.shape[1]]
                    adv = torch.nn.functional.pad(adv, (0, logprobs.shape[1] - adv.shape[1]))
                dapo = c.loss.loss_type == "dapo"
                behaviour = logprobs.detach() if old[k] is None else old[k]
                weights, mismatch = self._sampling_weights(behaviour, micro, mask)
                loss, metrics = policy_loss(
                    logprobs,
                    old[k],
                    adv.to(logprobs.device),
                    mask,
                    c.loss,
                    ref_logprobs=reference[k],
                    truncated=truncated[idx].to(logprobs.device),
                    num_items_in_batch=max(total_tokens, 1) if dapo else None,
                    sampling_weights=weights,
                )
                metrics.update(mismatch)
                share = len(idx) / len(trajectories)  # this micro-batch's share of the step's trajectories
                weight = 1.0 if dapo else share  # dapo already divides by the whole step's token count
                self.accelerator.backward(loss * weight)
                for name, value in {"loss": loss.detach().item() * weight, **metrics}.items():
                    if isinstance(value, float) and math.isfinite(value):  # metrics: share-weighted means
                        sums[name] = sums.get(name, 0.0) + value * (1.0 if name == "loss" else share)
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm)
        self.model.eval()
        return {k: v / c.num_iterations for k, v in sums.items()}

    # --- the loop ---------------------------------------------------------------------------

    def train_step(self) -> StepReport:
        stats = RolloutStats()
        cache = self.policy.prefix_cache if self.sampler is None else None
        before = (cache.prompt_tokens, cache.encoded_tokens) if cache is not None else (0, 0)
        trajectories, groups, errors = self.rollouts(self.step, stats)
        prompted = cache.prompt_tokens - before[0] if cache is not None else 0
        encoded = cache.encoded_tokens - before[1] if cache is not None else 0
        start = time.perf_counter()
        metrics = self.update(trajectories) if trajectories else {}
        self.sync_weights()
        seconds_update = time.perf_counter() - start
        self.step += 1
        report = StepReport(
            step=self.step,
            reward=float(np.mean([t.total_reward for t in trajectories])) if trajectories else float("nan"),
            score=float(np.mean([t.score for t in trajectories])) if trajectories else float("nan"),
            action_errors=_action_error_share(trajectories),
            loss=metrics.get("loss", float("nan")),
            kl=metrics.get("kl", float("nan")),
            clip_ratio=metrics.get("clip_ratio/region_mean", float("nan")),
            grad_norm=metrics.get("grad_norm", float("nan")),
            logprob_gap=metrics.get("sampling/logprob_gap", float("nan")),
            importance_ratio=metrics.get("sampling/importance_sampling_ratio", float("nan")),
            trajectories=len(trajectories),
            groups_kept=groups,
            env_errors=errors,
            model_tokens=sum(t.model_tokens() for t in trajectories),
            seconds_generate=stats.generate,
            seconds_env=stats.env + stats.bookkeeping,
            seconds_update=seconds_update,
            learning_rate=float(self.scheduler.get_last_lr()[0]),
            prompt_encoded=encoded / prompted if prompted else float("nan"),
        )
        if self.config.eval_every and self.step % self.config.eval_every == 0:
            report.eval_score = self.evaluate()
        self._log(report)
        return report

    def train(self, on_step: Callable[[StepReport], None] | None = None) -> list[StepReport]:
        """Run until ``config.steps``; checkpoints every ``save_every`` steps and at the end."""
        c = self.config
        reports = []
        while self.step < c.steps:
            report = self.train_step()
            reports.append(report)
            if on_step is not None:
                on_step(report)
            if (c.save_every and self.step % c.save_every == 0) or self.step == c.steps:
                self.save_checkpoint()
        self.close_logs()
        return reports

    def evaluate(self, episodes: int | None = None) -> float:
        """Mean greedy score on the test split (the benchmark runner's seeds)."""
        from agents.vlm.workbench.evaluate import evaluate

        c = self.config
        row, _ = evaluate(
            self.policy,
            c.env_id,
            episodes or c.eval_episodes,
            difficulty=c.difficulty,
            split="test",
            sampling=Sampling(0, c.max_new_tokens),
            max_turns=c.max_turns,
            env_kwargs=c.env_kwargs,
        )
        return row.score

    # --- persistence and logs -----------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """``output_dir/checkpoint-STEP``: accelerate state (model, optimizer, scheduler, RNG), the
        trainer state, and a loadable model directory (``visrl eval --policy hf:DIR/model``)."""
        directory = self.output_dir / f"checkpoint-{self.step}"
        self.accelerator.save_state(str(directory))
        state = {"step": self.step, "config": self.config.to_dict(), "history": self.history}
        (directory / STATE_FILE).write_text(json.dumps(state, indent=1, default=str))
        self.save_model(directory / "model")
        return directory

    def save_model(self, directory: Path) -> Path:
        """The policy as a local model directory (LoRA adapters merged into a copy of the weights)."""
        model = self.accelerator.unwrap_model(self.model)
        if self.config.lora is not None:
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(directory)
        self.policy.processor.save_pretrained(directory)
        return directory

    def resume(self, directory: str | Path) -> None:
        """Go on from a checkpoint written by :meth:`save_checkpoint`."""
        directory = Path(directory)
        state_file = directory / STATE_FILE
        if not state_file.exists():
            raise FileNotFoundError(f"{directory} is not a checkpoint (no {STATE_FILE})")
        self.accelerator.load_state(str(directory))
        state = json.loads(state_file.read_text())
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.sync_weights()

    def _log(self, report: StepReport) -> None:
        record = {
            "step": report.step,
            "reward": report.reward,
            "score": report.score,
            "action_errors": report.action_errors,
            "loss": report.loss,
            "kl": report.kl,
            "clip_ratio": report.clip_ratio,
            "grad_norm": report.grad_norm,
            "logprob_gap": report.logprob_gap,
            "importance_ratio": report.importance_ratio,
            "learning_rate": report.learning_rate,
            "tokens_per_second": report.tokens_per_second,
            "groups_kept": report.groups_kept,
            "env_errors": report.env_errors,
            "seconds/generate": report.seconds_generate,
            "seconds/env": report.seconds_env,
            "seconds/update": report.seconds_update,
            "prompt_encoded": report.prompt_encoded,
        }
        if math.isfinite(report.eval_score):
            record["eval_score"] = report.eval_score
        self.history.append(record)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with (self.output_dir / "metrics.jsonl").open("a") as f:
            # strict JSON: a metric that was not computed (kl without a reference, ...) is null, not NaN
            strict = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
            f.write(json.dumps(strict, allow_nan=False) + "\n")
        if not self._writers and self.config.report_to:
            self._writers = self._open_writers()
        for writer in self._writers:
            writer(record, report.step)

    def _open_writers(self) -> list[Callable[[dict[str, Any], int], None]]:
        writers: list[Callable[[dict[str, Any], int], None]] = []
        if "tensorboard" in self.config.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                board = SummaryWriter(str(self.output_dir / "tensorboard"))
                self._board = board

                def to_board(record: dict[str, Any], step: int) -> None:
                    for key, value in record.items():
                        if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                            board.add_scalar(f"train/{key}", value, step)
                    board.flush()

                writers.append(to_board)
        if "wandb" in self.config.report_to:
            try:
                import wandb
            except ImportError:
                pass
            else:
                run = wandb.init(project="visrl", config=self.config.to_dict(), dir=str(self.output_dir))
                writers.append(lambda record, step: run.log(record, step=step))
        return writers

    def close_logs(self) -> None:
        board = getattr(self, "_board", None)
        if board is not None:
            board.close()
