"""Train on visrl envs with TRL's ``GRPOTrainer`` (targets TRL 1.16), rolling out with our collector.

Three pieces, used together::

    from agents.vlm.grpo.trl_adapter import visrl_env_reward, visrl_prompt_dataset, visrl_rollout_func

    trainer = GRPOTrainer(
        model=model,
        processing_class=processor,
        reward_funcs=visrl_env_reward,
        train_dataset=visrl_prompt_dataset("visrl/ShapeColor-v0", 512),
        rollout_func=visrl_rollout_func("visrl/ShapeColor-v0"),
        args=GRPOConfig(num_generations=8, use_vllm=False, ...),
    )

- :func:`visrl_prompt_dataset`: one row per task: the env's first chat turn (``prompt``), its images
  (``images``, the column TRL reads pixels from), and the reset seed (``seed``; also inside the
  prompt's first message under :data:`TASK_KEY`, because TRL hands a rollout function only the
  prompts). TRL's sampler repeats each row ``num_generations`` times: those copies are our group.
- :data:`visrl_rollout_func` (:class:`VisrlRollout`): TRL 1.16 calls ``rollout_func(prompts, trainer)`` with the prompts of
  this process's generation batch (already repeated per generation) and wants one completion per
  prompt. It resets one env slot per prompt with the prompt's seed and runs
  :func:`agents.vlm.rollout.collect` with an :class:`~agents.vlm.policies.hf.HFPolicy` around the model being
  trained, so the ids are token-exact; model turns, env turns and the mask come back as
  ``prompt_ids``, ``completion_ids``, ``logprobs`` and ``env_mask`` (TRL's name for the mask of
  non-model tokens: 0 keeps env tokens out of the loss). Env outcomes come back as extra fields
  (``env_reward``, ``env_score``, ...), which TRL passes to reward functions as keyword arguments.
- :func:`visrl_env_reward`: the env's return of each trajectory, so TRL's advantages are the env's.
  A trajectory the env failed on (``env_error``) gets reward ``None`` (TRL gives it no advantage)
  and an all-zero ``env_mask``.

What TRL 1.16 cannot do (each is checked, with an error that says so):

- **Images after the first turn.** TRL builds the pixels of its forward pass from the dataset's
  ``images`` and its own rendering of the prompt; a rollout function cannot add images, and image
  tokens on the completion side get no pixels (the model raises). Multi-turn envs therefore work
  while the env's feedback is text; when the env shows a new image, ``feedback_images="error"``
  (default) stops with an explanation and ``"truncate"`` ends the episode at that step (its reward
  kept). Our own trainer (:mod:`agents.vlm.grpo.trainer`) has no such limit.
- **Tool schemas in the chat template.** TRL renders the prompt with ``tools=trainer.tools`` and
  passing ``tools`` starts TRL's own tool loop (which ignores ``env_mask``), so the env's tools are
  written into the prompt text (``ChatFormatter(tools_in_template=False)``).
- **vLLM generation**, ``min_p``, ``repetition_penalty`` and ``generation_kwargs``: generation is
  the in-process transformers model through :class:`~agents.vlm.policies.hf.HFPolicy`.

The prompt ids must be the ids TRL scores the prompt's pixels against: every call checks that our
ids equal TRL's rendering of the same prompt and that the env showed the dataset's images.
Log-probabilities are those of our sampling distribution (vision special tokens removed, see
:mod:`agents.vlm.policies.hf`); TRL recomputes its own and, without vLLM, uses ours only for the optional
off-policy mask.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agents.vlm.policies.hf import HFPolicy
from agents.vlm.policies.policy import Message, Sampling
from agents.vlm.rollout import ENV_RUNNERS, RolloutStats, collect, json_safe, make_pool
from agents.vlm.rollout.chat import ChatFormatter
from agents.vlm.rollout.env_pool import EnvPool, StepResult, make_text_env
from agents.vlm.rollout.trajectory import Trajectory

if TYPE_CHECKING:
    from datasets import Dataset

#: The key of the prompt's first message that holds the task (JSON: env id, seed, split, difficulty, env kwargs).
TASK_KEY = "visrl_task"
#: What to do when the env shows a new image mid-episode (TRL cannot feed it to the model).
FEEDBACK_IMAGES = ("error", "truncate")
#: Env kwargs set per dataset row, not per rollout function.
_ROW_KWARGS = ("split", "difficulty")


def default_formatter() -> ChatFormatter:
    """The formatter both sides use: tool schemas in the prompt text (TRL renders without ``tools=``)."""
    return ChatFormatter(tools_in_template=False)


def _check_env_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    env_kwargs = dict(env_kwargs or {})
    clash = [k for k in _ROW_KWARGS if k in env_kwargs]
    if clash:
        raise ValueError(f"give {', '.join(clash)} to visrl_prompt_dataset (they are per row), not in env_kwargs")
    return env_kwargs


def _task(env_id: str, seed: int, split: str, difficulty: int, env_kwargs: dict[str, Any]) -> str:
    return json.dumps(
        {"env_id": env_id, "seed": seed, "split": split, "difficulty": difficulty, "env_kwargs": json_safe(env_kwargs)},
        sort_keys=True,
    )


def _dataset_messages(messages: list[Message], task: str) -> list[Message]:
    """``messages`` as dataset rows hold them: every content a part list (one Arrow type), image parts
    as bare placeholders (TRL fills them from the ``images`` column), the task on the first message."""
    out = []
    for k, message in enumerate(messages):
        content = message["content"]
        parts = (
            [{"type": "text", "text": content}]
            if isinstance(content, str)
            else [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]} for p in content]
        )
        out.append({"role": message["role"], "content": parts, TASK_KEY: task if k == 0 else None})
    return out


def visrl_prompt_dataset(
    env_id: str,
    n: int,
    split: str = "train",
    difficulty: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    *,
    seeds: Sequence[int] | None = None,
    first_seed: int = 0,
    formatter: ChatFormatter | None = None,
) -> Dataset:
    """A ``datasets.Dataset`` of ``n`` tasks of ``env_id`` in the conversational format TRL's GRPOTrainer takes.

    Row ``k`` is the env reset with seed ``seeds[k]`` (default ``first_seed + k``): ``prompt`` (the
    first chat turn, image placeholders, the task under :data:`TASK_KEY`), ``images`` (PIL), and the
    columns ``env_id``, ``seed``, ``task_seed`` (the env's id of the task), ``split``, ``difficulty``
    (TRL passes them to reward functions).
    ``formatter`` must match the rollout function's."""
    from datasets import Dataset
    from PIL import Image

    env_kwargs = _check_env_kwargs(env_kwargs)
    formatter = formatter or default_formatter()
    seeds = list(seeds) if seeds is not None else list(range(first_seed, first_seed + n))
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} rows")
    env = make_text_env(env_id, {**env_kwargs, "split": split, "difficulty": difficulty})
    rows = []
    try:
        for seed in seeds:
            obs, info = env.reset(seed=int(seed))
            spec = info["prompt_spec"]
            if formatter.tools(spec) is not None:
                raise ValueError(
                    f"{env_id} has tools and the formatter renders them in the chat template; TRL renders the "
                    "prompt without them: use ChatFormatter(tools_in_template=False)"
                )
            task = _task(env_id, int(seed), split, difficulty, env_kwargs)
            rows.append(
                {
                    "prompt": _dataset_messages(formatter.start(obs, spec), task),
                    "images": [Image.fromarray(np.asarray(image, dtype=np.uint8)) for image in obs["images"]],
                    "env_id": env_id,
                    "seed": int(seed),
                    "task_seed": int(info["task_seed"]),
                    "split": split,
                    "difficulty": difficulty,
                }
            )
    finally:
        env.close()
    return Dataset.from_list(rows)


def _prompt_images(prompt: list[Message]) -> list[Any]:
    """The images TRL put into the prompt's image parts, in order."""
    return [
        part["image"]
        for message in prompt
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image" and part.get("image") is not None
    ]


class _FirstTurnImagesOnly:
    """An :class:`EnvPool` whose episodes show images in their first turn only (TRL 1.16's limit): a
    step whose observation carries images raises (``mode="error"``) or ends the episode as truncated,
    its reward kept (``mode="truncate"``)."""

    def __init__(self, pool: EnvPool, env_id: str, mode: str) -> None:
        self.pool = pool
        self.size = pool.size
        self.env_id = env_id
        self.mode = mode
        self.seeds: list[int] = []

    def reset(self, seeds: Sequence[int]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        self.seeds = [int(s) for s in seeds]
        return self.pool.reset(seeds)

    def step(self, actions: dict[int, str]) -> dict[int, StepResult]:
        results = self.pool.step(actions)
        for slot, (obs, reward, terminated, truncated, info) in results.items():
            if not obs["images"] or terminated or truncated:
                continue
            if self.mode == "error":
                raise ValueError(
                    f"{self.env_id} (seed {self.seeds[slot]}) shows a new image after an action. TRL 1.16 takes "
                    "images only from the dataset's first turn, so its image tokens would get no pixels. Pass "
                    "feedback_images='truncate' (the episode ends at that step) or use visrl's own GRPO trainer."
                )
            results[slot] = (obs, reward, terminated, True, {**info, "trl_feedback_image_cut": True})
        return results

    def close(self) -> None:
        self.pool.close()


class VisrlRollout:
    """A TRL 1.16 ``rollout_func`` (``(prompts, trainer) -> dict``, TRL's ``RolloutFunc``) that plays
    ``env_id`` (text interface) with the model being trained.

    ``env_kwargs`` must be the dataset's (``split``/``difficulty`` come from each row). ``max_turns``
    and ``max_total_tokens`` bound an episode; ``max_new_tokens`` bounds one turn (default: the
    trainer's ``max_completion_length``). ``env_runner``: one of :data:`~agents.vlm.rollout.ENV_RUNNERS`.
    ``feedback_images``: ``"error"`` or ``"truncate"`` (see the module doc). ``check_prompts``:
    verify our prompt ids equal TRL's rendering (one processor call per distinct prompt).

    After a call, :attr:`last_trajectories` holds the trajectories in prompt order, :attr:`stats` their
    timing; :attr:`calls` counts calls."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        max_turns: int | None = None,
        env_runner: str = "inline",
        *,
        max_new_tokens: int | None = None,
        max_total_tokens: int | None = None,
        formatter: ChatFormatter | None = None,
        feedback_images: Literal["error", "truncate"] = "error",
        check_prompts: bool = True,
    ) -> None:
        if env_runner not in ENV_RUNNERS:
            raise ValueError(f"unknown env runner {env_runner!r}; choose one of {', '.join(ENV_RUNNERS)}")
        if feedback_images not in FEEDBACK_IMAGES:
            raise ValueError(f"feedback_images must be one of {FEEDBACK_IMAGES}, got {feedback_images!r}")
        self.env_id = env_id
        self.env_kwargs = _check_env_kwargs(env_kwargs)
        self.max_turns = max_turns
        self.env_runner = env_runner
        self.max_new_tokens = max_new_tokens
        self.max_total_tokens = max_total_tokens
        self.formatter = formatter or default_formatter()
        self.feedback_images = feedback_images
        self.check_prompts = check_prompts
        self.calls = 0
        self.last_trajectories: list[Trajectory] = []
        self.stats = RolloutStats()
        self._policy: HFPolicy | None = None

    # --- what TRL passes ------------------------------------------------------------------------

    def _tasks(self, prompts: Sequence[Any]) -> list[dict[str, Any]]:
        tasks = []
        expected = json.dumps(json_safe(self.env_kwargs), sort_keys=True)
        for prompt in prompts:
            raw = (
                prompt[0].get(TASK_KEY) if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict) else None
            )
            if not raw:
                raise ValueError(
                    f"a prompt carries no {TASK_KEY!r}: build the train dataset with visrl_prompt_dataset "
                    "(TRL gives a rollout function only the prompts, so the task rides in the first message)"
                )
            task = json.loads(raw)
            if task["env_id"] != self.env_id:
                raise ValueError(f"the dataset's task is of {task['env_id']}, the rollout function runs {self.env_id}")
            if json.dumps(task["env_kwargs"], sort_keys=True) != expected:
                raise ValueError(
                    f"the dataset was built with env_kwargs {task['env_kwargs']}, the rollout function has "
                    f"{json_safe(self.env_kwargs)}"
                )
            tasks.append(task)
        return tasks

    @staticmethod
    def _check_trainer(trainer: Any) -> None:
        problems = []
        if getattr(trainer, "use_vllm", False):
            problems.append("use_vllm=True (generation is the in-process model; set use_vllm=False)")
        if getattr(trainer, "tools", None):
            problems.append("tools (TRL's tool loop would run on the env's turns and ignore env_mask)")
        if getattr(trainer, "environment_factories", None):
            problems.append("environment_factory")
        if getattr(trainer, "min_p", None) is not None:
            problems.append("min_p")
        if getattr(trainer, "repetition_penalty", 1.0) != 1.0:
            problems.append("repetition_penalty != 1")
        if getattr(trainer.args, "generation_kwargs", None):
            problems.append("generation_kwargs")
        if problems:
            raise ValueError(f"visrl_rollout_func does not support: {'; '.join(problems)}")

    def sampling(self, trainer: Any) -> Sampling:
        """TRL's sampling settings as ours (per-turn ``max_new_tokens`` defaults to ``max_completion_length``)."""
        return Sampling(
            temperature=float(trainer.temperature),
            max_new_tokens=int(self.max_new_tokens or trainer.max_completion_length),
            top_p=float(trainer.top_p),
            top_k=int(trainer.top_k or 0),
        )

    def policy(self, model: Any, processor: Any) -> HFPolicy:
        """An :class:`HFPolicy` over the (unwrapped) model being trained; its codec and image caches persist."""
        if self._policy is None or self._policy.processor is not processor:
            self._policy = HFPolicy(model, processor, name="trl")
        self._policy.model = model
        return self._policy

    # --- the rollout ----------------------------------------------------------------------------

    def _collect(self, policy: HFPolicy, sampling: Sampling, tasks: list[dict[str, Any]]) -> list[Trajectory]:
        """One collection per (split, difficulty), group size 1: TRL already repeated each prompt."""
        out: list[Trajectory | None] = [None] * len(tasks)
        batches: dict[tuple[str, int], list[int]] = {}
        for i, task in enumerate(tasks):
            batches.setdefault((task["split"], int(task["difficulty"])), []).append(i)
        for (split, difficulty), rows in batches.items():
            env_kwargs = {**self.env_kwargs, "split": split, "difficulty": difficulty}
            pool = _FirstTurnImagesOnly(
                make_pool(self.env_runner, self.env_id, len(rows), env_kwargs), self.env_id, self.feedback_images
            )
            try:
                runs = collect(
                    policy,
                    self.env_id,
                    [int(tasks[i]["seed"]) for i in rows],
                    group_size=1,
                    sampling=sampling,
                    formatter=self.formatter,
                    env_kwargs=env_kwargs,
                    max_turns=self.max_turns,
                    max_total_tokens=self.max_total_tokens,
                    pool=pool,
                    stats=self.stats,
                )
            finally:
                pool.close()
            for i, run in zip(rows, runs, strict=True):
                out[i] = run
        return [t for t in out if t is not None]

    def _check_prompt(self, trainer: Any, prompt: list[Message], trajectory: Trajectory) -> None:
        """Raise unless ``trajectory`` starts with the ids and images TRL will score for ``prompt``."""
        from trl.data_utils import apply_chat_template

        processor = trainer.processing_class
        images = _prompt_images(prompt)
        shown = trajectory.images[: trajectory.prompt_images]
        same_images = len(images) == len(shown) and all(
            np.array_equal(np.asarray(a.convert("RGB")), b) for a, b in zip(images, shown, strict=True)
        )
        if not same_images:
            raise ValueError(
                f"the env (task seed {trajectory.task_seed}) shows other images than the dataset row: were the dataset "
                "and the rollout function made with the same env_kwargs?"
            )
        template_kwargs = getattr(trainer, "chat_template_kwargs", None) or {}
        rendered = apply_chat_template(
            {"prompt": prompt}, processor, tools=getattr(trainer, "tools", None), **template_kwargs
        )
        text = rendered["prompt"]
        batch = processor(images=[images] if images else None, text=[text], padding=True, return_tensors="np")
        theirs = [int(i) for i in batch["input_ids"][0]]
        if theirs != trajectory.prompt_ids:
            at = next((k for k, (a, b) in enumerate(zip(theirs, trajectory.prompt_ids, strict=False)) if a != b), None)
            at = min(len(theirs), len(trajectory.prompt_ids)) if at is None else at
            raise ValueError(
                f"TRL renders the prompt as {len(theirs)} ids, the env's first turn is {len(trajectory.prompt_ids)}; "
                f"they differ from position {at} ({theirs[at : at + 8]} vs {trajectory.prompt_ids[at : at + 8]}). "
                "Build the dataset with the rollout function's formatter and env_kwargs."
            )

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        """Roll out one episode per prompt; see the module doc for the fields."""
        import torch
        from trl.distributed import DistributedBackend
        from trl.models import unwrap_model_for_generation

        self._check_trainer(trainer)
        tasks = self._tasks(prompts)
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
            ) as model,
            torch.no_grad(),
            DistributedBackend(trainer.accelerator).summon_full_params(trainer.model_wrapped, recurse=False),
        ):
            was_training = model.training
            model.eval()
            try:
                trajectories = self._collect(
                    self.policy(model, trainer.processing_class), self.sampling(trainer), tasks
                )
            finally:
                model.train(was_training)
                if self._policy is not None and self._policy.prefix_cache is not None:
                    self._policy.prefix_cache.clear()  # the next update changes the weights; free the memory
        self.calls += 1
        self.last_trajectories = trajectories
        if self.check_prompts:
            checked: set[str] = set()
            for prompt, task, trajectory in zip(prompts, tasks, trajectories, strict=True):
                key = json.dumps(task, sort_keys=True)
                if key not in checked:
                    self._check_prompt(trainer, prompt, trajectory)
                    checked.add(key)
        return rollout_fields(trajectories)


def rollout_fields(trajectories: Sequence[Trajectory]) -> dict[str, list[Any]]:
    """The dict TRL 1.16 wants from a rollout function. A trajectory the env failed on (``env_error``)
    gets an all-zero ``env_mask`` and ``env_reward`` ``None`` (TRL gives it no advantage)."""
    failed = [t.finish == "env_error" for t in trajectories]
    return {
        "prompt_ids": [list(t.prompt_ids) for t in trajectories],
        "completion_ids": [list(t.completion_ids) for t in trajectories],
        "logprobs": [list(t.logprobs) for t in trajectories],
        "env_mask": [[0] * len(t.mask) if bad else list(t.mask) for t, bad in zip(trajectories, failed, strict=True)],
        "env_reward": [None if bad else t.total_reward for t, bad in zip(trajectories, failed, strict=True)],
        "env_score": [t.score for t in trajectories],
        "env_success": [t.success for t in trajectories],
        "env_turns": [len(t.steps) for t in trajectories],
        "env_finish": [t.finish for t in trajectories],
    }


#: TRL's ``rollout_func`` for ``env_id``: ``visrl_rollout_func(env_id, env_kwargs, max_turns, ...)`` is
#: :class:`VisrlRollout` (its constructor's arguments are documented there).
visrl_rollout_func = VisrlRollout


def visrl_env_reward(
    prompts: list[Any],
    completions: list[Any],
    env_reward: list[float | None] | None = None,
    log_metric: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    """A TRL reward function: each completion's env return (``env_reward``, from :data:`visrl_rollout_func`
    through TRL 1.16's extra-field kwargs). ``None`` (an env error) makes TRL skip the completion.
    Logs ``env/score`` and ``env/success`` when TRL passes ``log_metric``."""
    if env_reward is None:
        raise ValueError("no env_reward: visrl_env_reward scores completions of visrl_rollout_func only")
    if len(env_reward) != len(completions):
        raise ValueError(f"{len(env_reward)} env rewards for {len(completions)} completions")
    if log_metric is not None and "env_score" in kwargs and "env_success" in kwargs:
        log_metric("env/score", float(np.mean(kwargs["env_score"])))
        log_metric("env/success", float(np.mean(kwargs["env_success"])))
    return [None if r is None else float(r) for r in env_reward]
