"""Saving, loading and printing recorded trajectories (:class:`~agents.vlm.rollout.trajectory.Trajectory`).

A run directory holds::

    trajectories.jsonl   one JSON object per trajectory: every field of Trajectory and its Steps
    images/<hash>.png    every distinct image once (lossless PNG), named by a hash of its pixels
    meta.json            format, version, creation time, counts, env ids, policies, plus caller meta

In ``trajectories.jsonl`` the ``images`` field is a list of ``{"path": "images/<hash>.png",
"shape": [h, w, c]}``; identical images (the first observation every group member shares) are stored
once. Floats are written at ``repr`` precision, so ids, masks and log-probabilities come back
bit-exact (NaN and infinities as JSON's ``NaN``/``Infinity`` extension). Info values must be
JSON-like; numpy scalars are stored as Python numbers and tuples come back as lists (except
``Step.model_span``). Loading checks every field, image shape and image hash, and raises
:class:`StoreError` (a ``ValueError``) naming the file that is missing or wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from agents.vlm.rollout.trajectory import Step, Trajectory

FORMAT = "visrl-trajectories"
VERSION = 1
TRAJECTORIES = "trajectories.jsonl"
META = "meta.json"
IMAGES = "images"

_IMAGE_PATH = re.compile(r"images/[0-9a-f]{32}\.png")
_TRAJ_FIELDS = {f.name for f in dataclasses.fields(Trajectory)}
_STEP_FIELDS = {f.name for f in dataclasses.fields(Step)}


class StoreError(ValueError):
    """A run directory is missing a file or holds a file that is not what :func:`save_trajectories` wrote."""


# ---------------------------------------------------------------- saving


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (numpy scalars to Python numbers, tuples and dataclasses expanded)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StoreError(f"{where}: dict key {key!r} is not a string (JSON keys are strings)")
            out[key] = _jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value), where)
    if isinstance(value, np.ndarray):
        raise StoreError(
            f"{where}: a numpy array ({value.shape} {value.dtype}) cannot be stored here; images belong in "
            "Trajectory.images (messages refer to them by index), numbers in info must be scalars"
        )
    raise StoreError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def _image_key(image: np.ndarray) -> str:
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()[:32]


def _check_image(image: Any, where: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise StoreError(f"{where}: images must be uint8 numpy arrays, got {kind}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))) or image.size == 0:
        raise StoreError(f"{where}: images must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    return image


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    pixels = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=6)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _step_record(step: Step, where: str) -> dict[str, Any]:
    record = {f.name: _jsonable(getattr(step, f.name), f"{where}.{f.name}") for f in dataclasses.fields(Step)}
    record["reward"] = float(step.reward)
    return record


def _record(traj: Trajectory, number: int, image_refs: list[dict[str, Any]]) -> dict[str, Any]:
    where = f"trajectory {number}"
    try:
        traj.check()
    except ValueError as err:
        raise StoreError(f"{where}: {err}") from err
    record: dict[str, Any] = {}
    for field in dataclasses.fields(Trajectory):
        value = getattr(traj, field.name)
        if field.name == "images":
            record["images"] = image_refs
        elif field.name == "logprobs":  # ints would come back as ints: store floats
            record["logprobs"] = [float(x) for x in value]
        elif field.name == "steps":
            record["steps"] = [_step_record(step, f"{where}.steps[{i}]") for i, step in enumerate(value)]
        else:
            record[field.name] = _jsonable(value, f"{where}.{field.name}")
    return record


def save_trajectories(
    trajectories: Iterable[Trajectory], out_dir: str | Path, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``trajectories`` to ``out_dir`` (created if needed; a previous save there is replaced).

    ``meta`` (policy name, sampling, ...) is merged into ``meta.json``. Returns ``out_dir``.
    """
    out = Path(out_dir)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    lines: list[str] = []
    trajs = list(trajectories)
    for n, traj in enumerate(trajs):
        refs = []
        for k, raw in enumerate(traj.images):
            image = _check_image(raw, f"trajectory {n} image {k}")
            path = f"{IMAGES}/{_image_key(image)}.png"
            if path not in written:
                if not (out / path).is_file():
                    _write_png(image, out / path)
                written.add(path)
            refs.append({"path": path, "shape": list(image.shape)})
        lines.append(json.dumps(_record(traj, n, refs), allow_nan=True))  # ASCII: lone surrogates survive too
    info: dict[str, Any] = _jsonable(dict(meta or {}), "meta")
    info.update(
        format=FORMAT,
        version=VERSION,
        created=info.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        count=len(trajs),
        distinct_images=len(written),
        env_ids=sorted({t.env_id for t in trajs}),
        policies=sorted({t.policy for t in trajs if t.policy}),
    )
    _write_text(out / TRAJECTORIES, "".join(line + "\n" for line in lines))
    _write_text(out / META, json.dumps(info, indent=2) + "\n")
    return out


# ---------------------------------------------------------------- loading


def load_meta(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``meta.json`` (``{}`` when the directory has none)."""
    path = Path(run_dir) / META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(meta, dict):
        raise StoreError(f"{path}: expected a JSON object")
    if meta.get("format", FORMAT) != FORMAT or meta.get("version", VERSION) != VERSION:
        raise StoreError(
            f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}; this code reads {FORMAT} v{VERSION}"
        )
    return meta


def read_records(run_dir: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The raw JSON records of ``trajectories.jsonl`` (fields checked, images not decoded)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise StoreError(f"{run}: no such run directory")
    load_meta(run)
    path = run / TRAJECTORIES
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise StoreError(f"{path}: missing (not a saved run directory?)") from err
    except (OSError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: not readable ({err})") from err
    records: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if limit is not None and len(records) >= limit:
            break
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise StoreError(f"{where}: invalid JSON ({err})") from err
        _check_record(record, where)
        records.append(record)
    return records


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise StoreError(f"{where}: expected a JSON object")
    if set(record) != _TRAJ_FIELDS:
        raise StoreError(
            f"{where}: fields differ from Trajectory's "
            f"(missing {sorted(_TRAJ_FIELDS - set(record))}, unknown {sorted(set(record) - _TRAJ_FIELDS)})"
        )
    kinds: dict[str, Callable[[Any], bool]] = {
        "env_id": lambda v: isinstance(v, str),
        "task_seed": _is_int,
        "group": _is_int,
        "member": _is_int,
        "prompt_images": _is_int,
        "env_kwargs": lambda v: isinstance(v, dict),
        "prompt_spec": lambda v: isinstance(v, dict),
        "messages": lambda v: isinstance(v, list) and all(isinstance(m, dict) for m in v),
        "tools": lambda v: v is None or isinstance(v, list),
        "prompt_ids": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
        "completion_ids": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
        "mask": lambda v: isinstance(v, list) and all(x in (0, 1) and _is_int(x) for x in v),
        "logprobs": lambda v: isinstance(v, list) and all(isinstance(x, float) for x in v),
        "images": lambda v: isinstance(v, list) and all(_is_image_ref(r) for r in v),
        "steps": lambda v: isinstance(v, list),
        "finish": lambda v: isinstance(v, str),
        "env_error": lambda v: v is None or isinstance(v, str),
        "policy": lambda v: isinstance(v, str),
    }
    for name, ok in kinds.items():
        if name in record and not ok(record[name]):
            raise StoreError(f"{where}: field {name!r} has the wrong type or values")
    for i, step in enumerate(record["steps"]):
        _check_step(step, f"{where} step {i}")


def _is_image_ref(ref: Any) -> bool:
    return (
        isinstance(ref, dict)
        and set(ref) == {"path", "shape"}
        and isinstance(ref["path"], str)
        and _IMAGE_PATH.fullmatch(ref["path"]) is not None
        and isinstance(ref["shape"], list)
        and len(ref["shape"]) in (2, 3)
        and all(_is_int(x) and x > 0 for x in ref["shape"])
    )


def _check_step(step: Any, where: str) -> None:
    if not isinstance(step, dict) or set(step) != _STEP_FIELDS:
        raise StoreError(f"{where}: expected an object with the fields {sorted(_STEP_FIELDS)}")
    span = step["model_span"]
    ok = (
        isinstance(step["action"], str)
        and isinstance(step["reward"], (int, float))
        and not isinstance(step["reward"], bool)
        and all(isinstance(step[k], bool) for k in ("terminated", "truncated", "finished_turn"))
        and isinstance(step["info"], dict)
        and isinstance(step["feedback"], str)
        and _is_int(step["feedback_images"])
        and isinstance(span, list)
        and len(span) == 2
        and all(_is_int(x) for x in span)
    )
    if not ok:
        raise StoreError(f"{where}: a field has the wrong type")


def _read_png(run: Path, ref: dict[str, Any], where: str) -> np.ndarray:
    from PIL import Image

    path = run / ref["path"]
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise StoreError(f"{path} ({where}): not a PNG file")
            pixels = np.asarray(image)
    except FileNotFoundError as err:
        raise StoreError(f"{path} ({where}): missing image file") from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, StoreError):
            raise
        raise StoreError(f"{path} ({where}): not a readable PNG ({err})") from err
    shape = tuple(ref["shape"])
    if pixels.dtype != np.uint8 or pixels.size != math.prod(shape):
        raise StoreError(f"{path} ({where}): holds {pixels.shape} {pixels.dtype}, expected {shape} uint8")
    pixels = pixels.reshape(shape)
    if f"{IMAGES}/{_image_key(pixels)}.png" != ref["path"]:
        raise StoreError(f"{path} ({where}): pixels do not match the file's hash (corrupt or edited)")
    return pixels


def steps_of(record: dict[str, Any]) -> list[Step]:
    """The :class:`Step` objects of a checked record."""
    return [Step(**{**s, "reward": float(s["reward"]), "model_span": tuple(s["model_span"])}) for s in record["steps"]]


def trajectory_from_record(
    record: dict[str, Any], run_dir: str | Path, cache: dict[str, np.ndarray] | None = None, where: str = "record"
) -> Trajectory:
    """A checked record of :func:`read_records` as a :class:`Trajectory` (its PNGs decoded)."""
    run = Path(run_dir)
    cache = {} if cache is None else cache
    images = []
    for k, ref in enumerate(record["images"]):
        if ref["path"] not in cache:
            cache[ref["path"]] = _read_png(run, ref, f"{where} image {k}")
        images.append(cache[ref["path"]].copy())
    traj = Trajectory(**{**record, "images": images, "steps": steps_of(record)})
    try:
        traj.check()
    except ValueError as err:
        raise StoreError(f"{where}: {err}") from err
    return traj


def load_trajectories(run_dir: str | Path, limit: int | None = None) -> list[Trajectory]:
    """The trajectories of a directory written by :func:`save_trajectories` (the first ``limit`` if given)."""
    run = Path(run_dir)
    cache: dict[str, np.ndarray] = {}
    return [
        trajectory_from_record(record, run, cache, f"{run / TRAJECTORIES} trajectory {n}")
        for n, record in enumerate(read_records(run, limit))
    ]


# ---------------------------------------------------------------- reading a trajectory as turns


@dataclasses.dataclass
class Turn:
    """One turn of a conversation: what the model was shown, what it wrote, what the env answered.

    ``user`` holds ``("system" | "text", str)`` and ``("image", k)`` parts (``k`` indexes
    ``Trajectory.images``); ``assistant``/``step`` are None for a trailing env turn.
    """

    number: int
    user: list[tuple[str, Any]]
    assistant: str | None
    step: Step | None


def _parts(message: dict[str, Any], counter: list[int]) -> list[tuple[str, Any]]:
    role = str(message.get("role", ""))
    content = message.get("content")
    label = "system" if role == "system" else "text"
    prefix = "" if role in ("user", "system") else f"[{role}] "
    if isinstance(content, str):
        return [(label, prefix + content)]
    parts: list[tuple[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image":
            index = part.get("index", counter[0])
            parts.append(("image", index if isinstance(index, int) else counter[0]))
            counter[0] += 1
        elif "text" in part:
            parts.append((label, prefix + str(part["text"])))
    return parts


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def turns(messages: Sequence[dict[str, Any]], steps: Sequence[Step], prompt_images: int = 0) -> list[Turn]:
    """Pair the conversation's messages with the steps: turn ``i`` is the env's text and images, the
    model's reply and ``steps[i]``. Without messages the turns are rebuilt from the steps alone."""
    out: list[Turn] = []
    pending: list[tuple[str, Any]] = []
    counter = [0]
    for message in messages:
        if message.get("role") == "assistant":
            i = len(out)
            out.append(Turn(i + 1, pending, _text(message.get("content")), steps[i] if i < len(steps) else None))
            pending = []
        else:
            pending += _parts(message, counter)
    if not messages:
        shown = prompt_images
        pending = [("image", k) for k in range(shown)]
        for step in steps:
            out.append(Turn(len(out) + 1, pending, step.action, step))
            pending = [("image", k) for k in range(shown, shown + step.feedback_images)]
            pending += [("text", step.feedback)] if step.feedback else []
            shown += step.feedback_images
        return out + ([Turn(len(out) + 1, pending, None, None)] if pending else [])
    for step in steps[len(out) :]:  # steps whose reply is not in the messages
        out.append(Turn(len(out) + 1, pending, step.action, step))
        pending = []
    return out + ([Turn(len(out) + 1, pending, None, None)] if pending else [])


# ---------------------------------------------------------------- transcript


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _size(images: Sequence[Any], k: int) -> str:
    if not 0 <= k < len(images):
        return "missing"
    shape = images[k].shape if isinstance(images[k], np.ndarray) else images[k]["shape"]
    return f"{shape[1]}x{shape[0]}"


def step_notes(step: Step) -> list[str]:
    """Reward, reward terms, flags and errors of a step, one short line each."""
    info = step.info
    terms = info.get("reward_terms") or {}
    line = f"reward {_num(step.reward)}"
    if terms:
        line += " (" + ", ".join(f"{name} {_num(v)}" for name, v in terms.items()) + ")"
    if "score" in info:
        line += f"; score {_num(info['score'])}"
    if info.get("success"):
        line += "; success"
    flags = [name for name in ("terminated", "truncated") if getattr(step, name)]
    if not step.finished_turn:
        flags.append("cut at max_new_tokens")
    if flags:
        line += "; " + ", ".join(flags)
    notes = [line]
    for key in ("action_error", "env_error"):
        if info.get(key):
            notes.append(f"{key.upper().replace('_', ' ')}: {info[key]}")
    return notes


def transcript(trajectory: Trajectory, tokenizer: Any = None) -> str:
    """A readable plain-text transcript of one trajectory.

    ``tokenizer`` (anything with ``decode(ids)``: a tokenizer or a ChatCodec) adds a token summary and,
    per turn, the model's tokens decoded when they differ from the recorded text.
    """
    t = trajectory
    out = [
        f"=== {t.env_id}  seed {t.task_seed}  group {t.group} member {t.member}",
        f"policy {t.policy or '-'}  finish {t.finish or '-'}  total reward {_num(t.total_reward)}  "
        f"score {_num(t.score)}  steps {len(t.steps)}  images {len(t.images)}",
    ]
    if t.env_kwargs:
        out.append("env kwargs " + json.dumps(t.env_kwargs, sort_keys=True, default=str))
    if t.env_error:
        out.append(f"ENV ERROR: {t.env_error}")
    if tokenizer is not None:
        model = t.model_tokens()
        out.append(
            f"tokens: prompt {len(t.prompt_ids)}, completion {len(t.completion_ids)} "
            f"(model {model}, env {len(t.completion_ids) - model})"
        )
    for turn in turns(t.messages, t.steps, t.prompt_images):
        out.append(f"\n--- turn {turn.number}")
        for kind, value in turn.user:
            if kind == "image":
                out.append(f"[image {value}: {_size(t.images, value)}]")
            else:
                out.append(("SYSTEM: " if kind == "system" else "") + value)
        if turn.assistant is not None:
            out.append(">>> assistant")
            out.append(turn.assistant)
        if turn.step is not None:
            start, end = turn.step.model_span
            if tokenizer is not None and end > start:
                line = f"<<< {end - start} model tokens [{start}:{end}]"
                decoded = str(tokenizer.decode(t.completion_ids[start:end]))
                text = turn.assistant or ""
                if decoded.startswith(text):  # the text, maybe with the end-of-turn token after it
                    out.append(line + (f" = the text + {decoded[len(text) :]!r}" if decoded != text else " = the text"))
                else:
                    out += [line + " decode to a different text:", decoded]
            out += ["  " + note for note in step_notes(turn.step)]
    return "\n".join(out) + "\n"
