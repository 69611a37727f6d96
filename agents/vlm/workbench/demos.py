"""Oracle demonstrations of any visrl env as chat-format SFT data (``visrl demos``).

:func:`oracle_episode` plays one episode with the env's oracle (``env.unwrapped.oracle_text()``)
and records it as one multi-turn chat: the first user turn from :meth:`ChatFormatter.start`, then
the oracle's action text as each assistant turn and :meth:`ChatFormatter.feedback` of the next
observation as each following user turn (none after the last step). It is the same formatter a
policy sees, so a model fine-tuned on these demos is prompted exactly as it is at rollout time.

:func:`write_demos` writes episodes as a Hugging Face dataset in TRL's conversational
vision-language format, one row per episode::

    OUT/
      data/<split>-00000.parquet   # rows; the features (images as PNG) are in the parquet metadata
      README.md                    # dataset card: its YAML ``configs`` make ``load_dataset(OUT)`` work
      visrl_demos.json             # env, counts, success rate, how to load

Columns: ``messages`` (every content a list of ``{"type": "image"}`` / ``{"type": "text", "text"}``
parts, image parts in the order of ``images``), ``images`` (a list of :class:`datasets.Image`, PNG:
pixel-exact), ``tools`` (the JSON of the tool schemas the chat template renders, or null), and
metadata: ``env_id``, ``task_seed`` (``reset(options={"task_seed": k})`` replays the task),
``difficulty``, ``split``, ``seed``, ``total_reward``, ``score``, ``success``, ``turns``,
``env_error``. Load with :func:`load_demos`, ``datasets.load_dataset(OUT, split=<split>)`` or
``datasets.load_dataset("parquet", data_files=f"{OUT}/data/*.parquet", split="train")``.

Tools and TRL 1.16: its vision collator renders ``messages`` without ``tools=`` (and its trainer drops
the ``tools`` column of image datasets). Demos written with ``tools_in_template=True`` (the default,
as :class:`ChatFormatter`) therefore train with :class:`DemoCollator`, which renders each row with
its own tools, and ``SFTConfig(remove_unused_columns=False)``; demos written with
``tools_in_template=False`` list the tools in the first user turn and TRL's default collator
reproduces the policy's prompt as is.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.scripted.random_agent import RandomAgent
from agents.vlm.rollout.chat import ChatFormatter, Message, assistant_message
from agents.vlm.rollout.env_pool import env_kwargs_argument

#: The metadata file :func:`write_demos` writes next to the data.
META_FILE = "visrl_demos.json"
#: Flush a parquet shard once its encoded images pass this many bytes.
SHARD_BYTES = 256 * 2**20


def sft_messages(messages: list[Message]) -> tuple[list[Message], list[np.ndarray]]:
    """Chat messages -> TRL's structured form: every content a list of parts, image parts without
    their payload (``{"type": "image"}``), plus the images those parts stand for, in order."""
    out: list[Message] = []
    images: list[np.ndarray] = []
    for message in messages:
        content = message["content"]
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        else:
            for part in content:
                if part["type"] == "image":
                    images.append(np.array(part["image"], dtype=np.uint8, copy=True))
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    return out, images


#: Who acts in a demo: the env's oracle (solutions), or the random agent (well-formed actions at chance
#: level: data that teaches the action format and nothing of the task, e.g. to warm-start RL).
ACTORS = ("oracle", "random")


def oracle_episode(env: Any, seed: int, formatter: ChatFormatter, actor: str = "oracle") -> dict[str, Any]:
    """One oracle (or ``actor="random"``) episode of a text-mode env (``env.reset(seed=seed)``) as one chat example.

    Returns ``messages`` and ``images`` (as :func:`sft_messages`), ``tools`` (``formatter.tools``:
    a list of schemas or ``None``) and the metadata columns of :func:`write_demos` (``score`` and
    ``success`` from the last step's ``info``, ``env_error`` the first infrastructure error or ``None``).
    """
    obs, info = env.reset(seed=seed)
    if not (isinstance(obs, dict) and "images" in obs and "text" in obs):
        raise ValueError("oracle_episode needs a text-mode env (gym.make(id, action_mode='text'))")
    base = env.unwrapped
    if actor not in ACTORS:
        raise ValueError(f"actor must be one of {ACTORS}, got {actor!r}")
    random_agent = RandomAgent(seed) if actor == "random" else None
    if random_agent is not None:
        random_agent.reset(env, seed)
    spec = info.get("prompt_spec") or base.prompt_spec()
    messages = formatter.start(obs, spec)
    total, turns, env_error = 0.0, 0, None
    done = False
    while not done:
        action = base.oracle_text() if random_agent is None else str(random_agent.act(obs, info))
        messages.append(assistant_message(action))
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        turns += 1
        env_error = env_error or info.get("env_error")
        done = bool(terminated or truncated)
        if not done:
            messages.append(formatter.feedback(obs))
    chat, images = sft_messages(messages)
    return {
        "messages": chat,
        "images": images,
        "tools": formatter.tools(spec),
        "env_id": getattr(env.spec, "id", None) or getattr(base.spec, "id", None) or type(base).__name__,
        "task_seed": int(info["task_seed"]),
        "difficulty": int(base.difficulty),
        "split": str(base.split),
        "seed": int(seed),
        "total_reward": total,
        "score": float(info["score"]),
        "success": bool(info["success"]),
        "turns": turns,
        "env_error": env_error,
    }


def demo_features() -> Any:
    """The :class:`datasets.Features` of a demos dataset."""
    from datasets import Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    return Features(
        {
            "messages": List({"role": Value("string"), "content": List(part)}),
            "images": List(Image()),
            "tools": Value("string"),
            "env_id": Value("string"),
            "task_seed": Value("int64"),
            "difficulty": Value("int32"),
            "split": Value("string"),
            "seed": Value("int64"),
            "total_reward": Value("float64"),
            "score": Value("float64"),
            "success": Value("bool"),
            "turns": Value("int32"),
            "env_error": Value("string"),
        }
    )


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(episode: dict[str, Any]) -> dict[str, Any]:
    """An episode as a dataset row: images as PNG bytes, tools as JSON."""
    tools = episode["tools"]
    return {
        **episode,
        "images": [{"bytes": _png(image), "path": None} for image in episode["images"]],
        "tools": json.dumps(tools) if tools else None,
    }


def _card(meta: dict[str, Any]) -> str:
    """The dataset card: YAML ``configs`` for ``load_dataset(out_dir)``, then how to load and train."""
    split, out, first = meta["split"], meta["out_dir"], meta["seed"]
    if meta["with_tools"]:
        train = (
            "The `tools` column is set: train with `DemoCollator`, which renders each row with its tools (TRL 1.16's\n"
            "vision collator renders none, and its trainer drops the column unless `remove_unused_columns=False`):\n\n"
            "```python\nfrom trl import SFTConfig, SFTTrainer\nfrom agents.vlm.workbench.demos import DemoCollator\n"
            "trainer = SFTTrainer(model, args=SFTConfig(..., remove_unused_columns=False), train_dataset=ds,\n"
            "                     processing_class=processor, data_collator=DemoCollator(processor))\n```\n"
        )
    else:
        train = (
            "No row has template tools, so TRL's default vision collator reproduces the policy's prompt:\n\n"
            "```python\nfrom trl import SFTConfig, SFTTrainer\n"
            "trainer = SFTTrainer(model, args=SFTConfig(...), train_dataset=ds, processing_class=processor)\n```\n"
        )
    return f"""---
configs:
- config_name: default
  data_files:
  - split: {split}
    path: data/{split}-*.parquet
---

# visrl oracle demos: `{meta["env_id"]}`

{meta["episodes"]} oracle episodes of `{meta["env_id"]}` (difficulty {meta["difficulty"]}, {split} split, reset seeds
{first}..{first + meta["episodes"] - 1}): {meta["succeeded"]} succeeded, mean score {meta["mean_score"]:.3f},
{meta["turns"]} assistant turns, {meta["images"]} images. Written by `visrl demos` (`agents.vlm.workbench.demos`) in TRL's
conversational vision-language format, one row per episode.

Columns: `messages` (content parts `{{"type": "image"}}` / `{{"type": "text", "text": ...}}`), `images` (PNG, in the
order of the image parts), `tools` (JSON of the tool schemas for the chat template's `tools=`, or null), and
`env_id`, `task_seed`, `difficulty`, `split`, `seed`, `total_reward`, `score`, `success`, `turns`, `env_error`.

```python
from agents.vlm.workbench.demos import load_demos
ds = load_demos("{out}")
# or with datasets alone:
import datasets
ds = datasets.load_dataset("{out}", split="{split}")
ds = datasets.load_dataset("parquet", data_files="{out}/data/*.parquet", split="train")
```

{train}"""


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[ok]} succeeded"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def write_demos(
    env_id: str,
    episodes: int,
    out_dir: str | Path,
    difficulty: int = 0,
    split: str = "train",
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    tools_in_template: bool = True,
    system: str | None = None,
    progress: bool = True,
    actor: str = "oracle",
) -> Path:
    """Write ``episodes`` oracle episodes of ``env_id`` (reset seeds ``seed``, ``seed + 1``, ...) to
    ``out_dir`` as a dataset (see the module docstring); returns ``out_dir``.

    ``out_dir`` holds one dataset: its earlier shards, card and metadata are replaced. Episodes the
    oracle does not solve are kept (``success`` says which); the count is in ``visrl_demos.json``.
    """
    import datasets
    import gymnasium as gym
    from datasets import Dataset

    import visrl_envs  # registers the ids

    if env_id not in gym.registry:
        known = ", ".join(e.id for e in visrl_envs.REGISTRY)
        raise ValueError(f"unknown env {env_id!r}; known: {known}")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    env = gym.make(env_id, difficulty=difficulty, split=split, action_mode="text", **(env_kwargs or {}))
    out = Path(out_dir)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for stale in [*data.glob("*.parquet"), out / META_FILE, out / "README.md"]:
        stale.unlink(missing_ok=True)  # a failed run must not leave an old card describing new shards
    features = demo_features()
    formatter = ChatFormatter(tools_in_template=tools_in_template, system=system)
    stats = {"succeeded": 0, "turns": 0, "images": 0, "env_errors": 0, "score": 0.0, "with_tools": 0}
    shards: list[str] = []
    rows: list[dict[str, Any]] = []
    size = 0

    def flush() -> None:
        nonlocal rows, size
        if rows:
            name = f"{split}-{len(shards):05d}.parquet"
            Dataset.from_list(rows, features=features).to_parquet(str(data / name))
            shards.append(f"data/{name}")
            rows, size = [], 0

    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one bar (ours), not one per parquet shard
    try:
        with _progress(progress) as bar:
            task = bar.add_task(f"demos {env_id}", total=episodes, ok=0)
            for episode_seed in range(seed, seed + episodes):
                episode = oracle_episode(env, episode_seed, formatter, actor)
                stats["succeeded"] += episode["success"]
                stats["turns"] += episode["turns"]
                stats["images"] += len(episode["images"])
                stats["env_errors"] += episode["env_error"] is not None
                stats["score"] += episode["score"]
                stats["with_tools"] += bool(episode["tools"])
                row = _row(episode)
                rows.append(row)
                size += sum(len(image["bytes"]) for image in row["images"])
                if size >= SHARD_BYTES:
                    flush()
                bar.update(task, advance=1, ok=stats["succeeded"])
        flush()
    finally:
        env.close()
        if not quiet:
            datasets.enable_progress_bars()
    meta = {
        "format": "visrl-demos/1 (TRL conversational vision-language, parquet)",
        "env_id": env_id,
        "episodes": episodes,
        "actor": actor,
        "succeeded": int(stats["succeeded"]),
        "mean_score": stats["score"] / episodes,
        "turns": int(stats["turns"]),
        "images": int(stats["images"]),
        "env_errors": int(stats["env_errors"]),
        "difficulty": difficulty,
        "split": split,
        "seed": seed,
        "env_kwargs": env_kwargs or {},
        "tools_in_template": tools_in_template,
        "with_tools": int(stats["with_tools"]),
        "system": system,
        "files": shards,
        "out_dir": str(out),
        "load": [
            f"agents.vlm.workbench.demos.load_demos({str(out)!r})",
            f"datasets.load_dataset({str(out)!r}, split={split!r})",
        ],
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (out / "README.md").write_text(_card(meta))
    return out


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    """The ``visrl_demos.json`` of a demos directory."""
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} is not a visrl demos directory (no {META_FILE})")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def load_demos(out_dir: str | Path, cache_dir: str | Path | None = None) -> Any:
    """The :class:`datasets.Dataset` written by :func:`write_demos` (images decode to PIL; the arrow
    cache goes to ``cache_dir``, by default the datasets cache)."""
    from datasets import load_dataset

    out = Path(out_dir)
    files = [str(out / name) for name in read_meta(out)["files"]]
    return load_dataset(
        "parquet", data_files={"train": files}, split="train", cache_dir=None if cache_dir is None else str(cache_dir)
    )


@dataclass
class DemoCollator:
    """A TRL-compatible data collator for demos: renders each row's ``messages`` with its own
    ``tools`` (TRL 1.16's vision collator renders no tools), then tokenizes the batch and its
    images with the processor. Loss on every non-padding token, as TRL's language-modeling default.

    Use with ``SFTConfig(remove_unused_columns=False)`` so that the ``tools`` column reaches it.
    ``max_length`` truncates the end, as TRL does; the processor refuses a cut through an image's
    tokens, so keep it above the longest demo.
    """

    processor: Any
    max_length: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from PIL import Image

        texts: list[str] = []
        images: list[list[Any]] = []
        for example in examples:
            if "tools" not in example:
                raise KeyError("demo rows need their 'tools' column: use SFTConfig(remove_unused_columns=False)")
            tools = example["tools"]
            tools = json.loads(tools) if isinstance(tools, str) else tools
            texts.append(self.processor.apply_chat_template(example["messages"], tools=tools or None, tokenize=False))
            images.append(
                [Image.fromarray(im) if isinstance(im, np.ndarray) else im for im in example.get("images") or []]
            )
        batch = self.processor(
            text=texts,
            images=images if any(images) else None,
            padding=True,
            padding_side="right",
            truncation=self.max_length is not None,
            max_length=self.max_length,
            add_special_tokens=False,
            return_tensors="pt",
        )
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        batch["labels"] = labels
        return dict(batch)


# -- the ``visrl demos`` command ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``visrl demos``."""
    parser.add_argument("--env", required=True, help="env id, e.g. visrl/Jigsaw-v1")
    parser.add_argument("--episodes", type=int, required=True, help="number of oracle episodes")
    parser.add_argument("--out", required=True, help="output directory (one dataset; its old shards are replaced)")
    parser.add_argument("--difficulty", type=int, default=0)
    parser.add_argument("--split", default="train", help="train or test (the env's task seeds)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode (then +1, +2, ...)")
    parser.add_argument(
        "--env-kwargs",
        type=env_kwargs_argument,
        default={},
        help="extra gym.make keywords as JSON, e.g. '{\"size\": 56}' (train with the same ones)",
    )
    parser.add_argument(
        "--tools-in-prompt",
        action="store_true",
        help="write the tool list into the first user turn instead of the template's tools= (TRL's own collator)",
    )
    parser.add_argument(
        "--agent",
        default="oracle",
        choices=ACTORS,
        help="oracle: solutions; random: well-formed actions at chance level (format-only data to warm-start RL)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``visrl demos``: 0 on success, 2 (and one line on stderr) on a bad argument."""
    import visrl_envs

    known = [e.id for e in visrl_envs.REGISTRY]
    error = None
    if args.env not in known:
        error = f"unknown env {args.env!r}; known: {', '.join(known)}"
    elif args.episodes < 1:
        error = f"--episodes must be at least 1, got {args.episodes}"
    elif args.split not in ("train", "test"):
        error = f"--split must be train or test, got {args.split!r}"
    elif args.seed < 0:
        error = f"--seed must be non-negative, got {args.seed}"
    elif Path(args.out).exists() and not Path(args.out).is_dir():
        error = f"--out {args.out} exists and is not a directory"
    if error is None:
        try:
            out = write_demos(
                args.env,
                args.episodes,
                args.out,
                difficulty=args.difficulty,
                split=args.split,
                seed=args.seed,
                env_kwargs=args.env_kwargs,
                tools_in_template=not args.tools_in_prompt,
                actor=args.agent,
            )
        except (ValueError, TypeError) as err:  # e.g. a difficulty out of range: one line, not a traceback
            error = str(err).splitlines()[0] if str(err) else type(err).__name__
    if error is not None:
        print(f"visrl demos: {error}", file=sys.stderr)
        return 2
    meta = read_meta(out)
    rate = meta["succeeded"] / meta["episodes"]
    print(
        f"wrote {meta['episodes']} demos of {meta['env_id']} to {out}: {meta['succeeded']} succeeded "
        f"({rate:.0%}), mean score {meta['mean_score']:.3f}, {meta['turns']} turns, {meta['images']} images"
        + (f", {meta['env_errors']} with env errors" if meta["env_errors"] else "")
    )
    print(f"load: datasets.load_dataset({str(out)!r}, split={meta['split']!r})")
    return 0
