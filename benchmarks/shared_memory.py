"""What the image-size contract costs an ``AsyncVectorEnv``: shared memory and step time.

A text observation's images travel from the workers through one shared buffer per env, sized for
``max_images`` images of the largest frame the env declares (:mod:`visrl_envs.core.spaces`), whatever
the images' real sizes. This benchmark builds 8-env ``AsyncVectorEnv``\\ s of a minimal env that
shows images of a declared frame and measures, per frame and image cap:

- the shared memory the buffer takes (the parent's ``RssShmem`` after building, minus before: the
  buffer is zero-filled on creation, so every page of it is resident);
- the time to build the vector env (workers started, buffer allocated);
- the step time when every env shows images as large as the frame, and when it shows 256x256
  images only (a variable frame's usual case), beside a ``SyncVectorEnv`` of the same envs.

``python -m benchmarks.shared_memory`` rewrites its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from benchmarks.sections import replace_section
from visrl_envs.core import AnswerFormat, Outcome, ToolSet, VisualEnv

RESULTS = Path(__file__).parent / "RESULTS.md"
SECTION = "shared-memory"


class Screens(VisualEnv):
    """Shows ``count`` noise images of ``shown`` (width, height) per turn, in a ``frame`` (width, height)."""

    family = "bench"
    horizon = 1000

    def __init__(
        self, frame: tuple[int, int] = (256, 256), shown: tuple[int, int] = (256, 256), count: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.tools = ToolSet(answer=AnswerFormat("text", "anything"))
        self.shown, self.count = shown, count
        box = spaces.Box(0, 255, (64, 64, 3), dtype=np.uint8)
        width, height = frame
        self._set_spaces(
            (height, width, 3), spaces.Dict({"image": box}), spaces.Discrete(2), max_images=count, fixed_frame=False
        )

    def _new_task(self, rng: np.random.Generator) -> None:
        width, height = self.shown
        self.image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for _ in range(self.count):
            self.show(self.image)

    def _task_text(self) -> str:
        return "Say anything."

    def _apply(self, action: Any, backend_result: Any) -> Outcome:
        for _ in range(self.count):
            self.show(self.image)
        return Outcome({})

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        return {"image": np.zeros((64, 64, 3), np.uint8)}

    def _score(self) -> float:
        return 0.0

    def _render_frame(self) -> np.ndarray:
        return np.zeros((64, 64, 3), np.uint8)

    def null_text(self) -> str:
        return "<answer>x</answer>"

    oracle_text = null_text

    def oracle_numeric(self) -> int:
        return 0


def _shmem_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssShmem:"):
            return int(line.split()[1]) * 1024
    return 0


def _steps_per_second(envs: gym.vector.VectorEnv, steps: int) -> float:
    actions = ("<answer>x</answer>",) * envs.num_envs
    envs.reset(seed=0)
    envs.step(actions)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(actions)
    return steps / (time.perf_counter() - start)


def measure(frame: tuple[int, int], count: int, num_envs: int, steps: int) -> dict[str, Any]:
    def fns(shown: tuple[int, int]) -> list[Any]:
        return [lambda: Screens(frame=frame, shown=shown, count=count)] * num_envs

    gc.collect()
    before = _shmem_bytes()
    start = time.perf_counter()
    envs = gym.vector.AsyncVectorEnv(fns(frame))
    build = time.perf_counter() - start
    shared = _shmem_bytes() - before
    full = _steps_per_second(envs, steps)
    envs.close()
    small_shown = (min(256, frame[0]), min(256, frame[1]))
    envs = gym.vector.AsyncVectorEnv(fns(small_shown))
    small = _steps_per_second(envs, steps)
    envs.close()
    sync = gym.vector.SyncVectorEnv(fns(frame))
    sync_full = _steps_per_second(sync, steps)
    sync.close()
    return {
        "frame": f"{frame[0]}x{frame[1]}",
        "images": count,
        "expected_mib": num_envs * count * frame[0] * frame[1] * 3 / 2**20,
        "shared_mib": shared / 2**20,
        "build_s": build,
        "async_full": full,
        "async_small": small,
        "sync_full": sync_full,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [
        measure(frame, count, args.envs, args.steps)
        for frame, count in (((256, 256), 1), ((1920, 1080), 1), ((1920, 1080), 2), ((1920, 1080), 4))
    ]
    lines = [
        f"## Shared memory of the image-size contract ({args.envs} async envs)",
        "",
        f"{date.today()}, {platform.machine()}, {args.steps} timed steps per cell. Each env's buffer holds "
        "`max_images` images of the largest declared frame; smaller images fill a corner of it. "
        '"full": every image as large as the frame; "256 px": images of at most 256x256 in the same buffer. '
        "Steps/s of the whole vector env (8 envs per step).",
        "",
        "| frame | images/turn | buffer (computed) MiB | shared memory measured MiB | build s | async full | async 256 px | sync full |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['frame']} | {r['images']} | {r['expected_mib']:.0f} | {r['shared_mib']:.0f} | {r['build_s']:.2f} | "
            f"{r['async_full']:.0f} | {r['async_small']:.0f} | {r['sync_full']:.0f} |"
        )
    replace_section(args.out, SECTION, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
