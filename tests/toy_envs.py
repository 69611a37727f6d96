"""Small unregistered envs, one per capability of contract v3, each run through the whole contract
(:mod:`visrl_envs.testing`) by tests/test_contract_toys.py:

- :class:`TallyEnv`: a *stateful* backend in a real process. One tally server per process (the
  shared parent, as one Chromium per process), one session per env (the child, as a browser
  context) holding the episode's running total; killed, hung, discarded or lost by pickling, it is
  rebuilt and the episode replayed onto it. Declares a reset option (``target``).
- :class:`ZoomToyEnv`: images of three sizes in one episode (a variable frame), a zoom tool whose
  box is checked by the tool table (x1 < x2, y1 < y2, inside the image it names), a custom example.
- :class:`NudgeEnv`: a ``Box`` action space (float actions on both interfaces).
- :class:`BarsRenderEnv`: code with rendering feedback on a non-square frame, a renderer that
  returns extras, and an extra quality term in ``reward_terms``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from visrl_envs.core import (
    ActionError,
    AnswerFormat,
    Arg,
    BackendCrash,
    BackendError,
    Outcome,
    Tool,
    ToolCall,
    ToolSet,
    VisualEnv,
)
from visrl_envs.core.backend import SharedParent, call_with_blame
from visrl_envs.core.feedback import ProgramError, Rendered, Renderer, RenderFeedbackEnv
from visrl_envs.core.images import resize
from visrl_envs.core.tools import BoxInsideImage, OrderedBox, answer_text, tool_call_text

# -- TallyEnv: a stateful backend in a real process ----------------------------------------------------
_SERVER = r"""
import sys, time
sessions, next_id = {}, 0
for line in sys.stdin:
    word, *rest = line.split()
    if word == "open":
        next_id += 1
        sessions[next_id] = 0
        print(next_id, flush=True)
    elif word == "add" and int(rest[0]) in sessions:
        sessions[int(rest[0])] += int(rest[1])
        print(sessions[int(rest[0])], flush=True)
    elif word == "total" and int(rest[0]) in sessions:
        print(sessions[int(rest[0])], flush=True)
    elif word == "close":
        sessions.pop(int(rest[0]), None)
        print("ok", flush=True)
    elif word == "drop":
        sessions.pop(int(rest[0]), None)
        print("ok", flush=True)
    elif word == "sleep":
        time.sleep(float(rest[0]))
    else:
        print("error no such session", flush=True)
"""
SERVER_NAME = "tally"


class TallyServer:
    """The shared parent: one server process holding the tallies of every session of this process."""

    pids: list[int] = []  # noqa: RUF012 - every server started in this process (tests check none outlive close)

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        TallyServer.pids.append(self.proc.pid)
        self._hang_next = False

    def request(self, line: str) -> str:
        """Send one command, read one answer line; a dead server is a crash of the parent."""
        wait = self.timeout_s
        if self._hang_next:
            self._hang_next, wait = False, 0.2
            line = "sleep 3600"
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise BackendCrash("the tally server is gone", SERVER_NAME, scope="parent") from None
        if not select.select([self.proc.stdout], [], [], wait)[0]:
            self.kill()
            raise BackendCrash(f"the tally server did not answer within {wait:g} s", SERVER_NAME, scope="parent")
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise BackendCrash("the tally server died", SERVER_NAME, scope="parent")
        return answer

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def hang(self) -> None:
        self._hang_next = True

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdout,):
            if stream is not None:
                stream.close()


class TallySession:
    """The child: one session of the server, holding this env's running total (episode state)."""

    def __init__(self, server: TallyServer) -> None:
        self.server = server
        self.id = int(server.request("open"))

    def _ask(self, line: str) -> int:
        answer = self.server.request(line)
        if answer.startswith("error"):
            raise BackendCrash(f"session {self.id} is gone", SERVER_NAME)
        return int(answer)

    def reset(self) -> None:
        self.add(-self.total())

    def add(self, amount: int) -> int:
        return self._ask(f"add {self.id} {amount}")

    def total(self) -> int:
        return self._ask(f"total {self.id}")

    def kill(self) -> None:
        """This session dies (its state is lost); the server and the other sessions live on."""
        with contextlib.suppress(BackendError):
            self.server.request(f"drop {self.id}")

    def hang(self) -> None:
        self.server.hang()

    def close(self) -> None:
        if self.server.proc.poll() is None:
            with contextlib.suppress(BackendError):
                self.server.request(f"close {self.id}")


def bar_image(total: int, target: int, size: int = 64) -> np.ndarray:
    """The total as a blue bar against the target's black line (so the state is in the pixels)."""
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    scale = (size - 4) / 30
    image[size // 3 : 2 * size // 3, : min(size, int(total * scale))] = (30, 70, 220)
    image[:, min(size - 1, int(target * scale))] = 0
    return image


class TallyEnv(VisualEnv):
    """Reach the target total by adding 1..5 a turn; the total lives in a backend process.

    Text: ``<tool_call>{"name": "add", "arguments": {"amount": 3}}</tool_call>``; numeric
    ``Discrete(5)`` (amount - 1). Reward: ``1`` when the total reaches the target exactly (ends),
    ``0`` otherwise; overshooting ends the episode with score 0.
    """

    family = "toy"
    reset_options = {"target": "the total to reach (5..20) instead of one drawn from the task seed"}  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tools = ToolSet([Tool("add", "add an amount to the total", (Arg("amount", "int", "1..5", 1, 5),))])
        self.tally = self.add_backend(
            "tally", TallySession, parent=SharedParent("tests-tally-server", TallyServer), stateful=True
        )
        image = spaces.Box(0, 255, (64, 64, 3), dtype=np.uint8)
        self._set_spaces((64, 64, 3), spaces.Dict({"image": image}), spaces.Discrete(5))
        self.target = 5
        self.total = 0

    horizon = 12

    def _check_reset_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if "target" in options and not (isinstance(options["target"], int) and 5 <= options["target"] <= 20):
            raise ValueError(f"reset option 'target' is an integer in 5..20, got {options['target']!r}")
        return options

    def _new_task(self, rng: np.random.Generator) -> None:
        drawn = int(rng.integers(5, 21))
        self.target = self.episode_options.get("target", drawn)
        self.tally.get().reset()
        self.total = self.tally.get().total()
        self.show(bar_image(self.total, self.target))

    def _task_text(self) -> str:
        return f"Reach a total of exactly {self.target} (the black line) by adding 1 to 5 each turn."

    def _parse_text(self, text: Any) -> int:
        call = self.tools.parse(text)
        assert isinstance(call, ToolCall)
        return int(call.arguments["amount"]) - 1

    def _action_text(self, action: int) -> str:
        return tool_call_text("add", {"amount": action + 1})

    def _apply(self, action: int, backend_result: Any) -> Outcome:
        # a crash is retried once on a fresh session, onto which the episode is replayed first
        self.total = call_with_blame(self.tally, lambda session: session.add(action + 1), "your addition")
        done = self.total >= self.target
        self.show(bar_image(self.total, self.target))
        return Outcome({"reached": float(self.total == self.target)}, terminated=done, feedback=f"Total {self.total}.")

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        return {"image": bar_image(self.tally.get().total(), self.target)}

    def _score(self) -> float:
        return float(self.total == self.target)

    def _render_frame(self) -> np.ndarray:
        return bar_image(self.total, self.target)

    def null_text(self) -> str:
        return self._action_text(0)

    def oracle_numeric(self) -> int:
        return int(min(5, max(1, self.target - self.total))) - 1

    def oracle_text(self) -> str:
        return self._action_text(self.oracle_numeric())


# -- ZoomToyEnv: images of three sizes, a box-validated zoom tool ----------------------------------------
SCENE_W, SCENE_H = 320, 240
THUMB = (80, 60)


class ZoomToyEnv(VisualEnv):
    """Which quadrant holds the red dot? The dot is too small to see in the 80x60 thumbnail; zoom.

    Text: ``zoom(bbox_2d=[x1, y1, x2, y2], image=k)`` returns the crop of image ``k`` (a new image of
    the crop's own size), then ``<answer>B</answer>`` (A top-left, B top-right, C bottom-left, D
    bottom-right). Images: the 320x240 scene and its 80x60 thumbnail first, then crops of any size.
    Numeric: ``Discrete(8)``: 0-3 zoom into a quadrant of the scene, 4-7 answer A-D; observation the
    scene and the last crop resized to 64x64.
    """

    family = "toy"
    max_images_per_turn = 2

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        box = Arg("bbox_2d", "ints", "x1, y1, x2, y2 in pixels of the image", 0, max(SCENE_W, SCENE_H), length=4)
        image = Arg("image", "int", "which image the box refers to (1 = the scene)", 1, 64, default=1)
        zoom = Tool(
            "zoom",
            "crop a region of an image and see it at full resolution",
            (box, image),
            constraints=(OrderedBox("bbox_2d"), BoxInsideImage("bbox_2d", "image")),
            example_arguments={"bbox_2d": [0, 0, 160, 120], "image": 1},
        )
        self.tools = ToolSet(
            [zoom], AnswerFormat("choice", "the quadrant of the red dot", options=("A", "B", "C", "D"))
        )
        scene = spaces.Box(0, 255, (SCENE_H, SCENE_W, 3), dtype=np.uint8)
        crop = spaces.Box(0, 255, (64, 64, 3), dtype=np.uint8)
        self._set_spaces(
            (SCENE_H, SCENE_W, 3), spaces.Dict({"scene": scene, "crop": crop}), spaces.Discrete(8), fixed_frame=False
        )
        self.images: list[np.ndarray] = []

    horizon = 4

    def _new_task(self, rng: np.random.Generator) -> None:
        scene = rng.integers(150, 230, (SCENE_H, SCENE_W, 3)).astype(np.uint8)
        self.quadrant = int(rng.integers(4))
        x = int(rng.integers(10, SCENE_W // 2 - 10)) + (SCENE_W // 2) * (self.quadrant % 2)
        y = int(rng.integers(10, SCENE_H // 2 - 10)) + (SCENE_H // 2) * (self.quadrant // 2)
        scene[y - 1 : y + 2, x - 1 : x + 2] = (255, 0, 0)
        self.images = [scene, resize(scene, THUMB[1], THUMB[0])]
        self.crop = resize(scene, 64, 64)
        self.answered: int | None = None
        self.show(scene, caption="the scene")
        self.show(self.images[1], caption="a thumbnail of the scene")

    def _task_text(self) -> str:
        return "Which quadrant of the scene holds the small red dot? A top-left, B top-right, C bottom-left, D bottom-right."

    def _parse_text(self, text: Any) -> int | tuple[int, tuple[int, ...]]:
        """An int as the numeric interface has it (a quadrant zoom or an answer), or (image, box)."""
        action = self.tools.parse(text, self._tool_context())
        if isinstance(action, ToolCall):
            box, index = tuple(action.arguments["bbox_2d"]), action.arguments["image"]
            for k in range(4):
                qx, qy = (SCENE_W // 2) * (k % 2), (SCENE_H // 2) * (k // 2)
                if index == 1 and box == (qx, qy, qx + SCENE_W // 2, qy + SCENE_H // 2):
                    return k
            return index, box
        return 4 + "ABCD".index(action.value)

    def _action_text(self, action: int) -> str:
        if action < 4:
            qx, qy = (SCENE_W // 2) * (action % 2), (SCENE_H // 2) * (action // 2)
            return tool_call_text("zoom", {"bbox_2d": [qx, qy, qx + SCENE_W // 2, qy + SCENE_H // 2], "image": 1})
        return answer_text("ABCD"[action - 4])

    def _apply(self, action: int | tuple[int, tuple[int, ...]], backend_result: Any) -> Outcome:
        if isinstance(action, tuple):
            index, (x1, y1, x2, y2) = action
        elif action >= 4:
            self.answered = action - 4
            right = self.answered == self.quadrant
            return Outcome({"accuracy": float(right)}, terminated=True, feedback="Right." if right else "Wrong.")
        else:
            qx, qy = (SCENE_W // 2) * (action % 2), (SCENE_H // 2) * (action // 2)
            index, (x1, y1, x2, y2) = 1, (qx, qy, qx + SCENE_W // 2, qy + SCENE_H // 2)
        crop = np.ascontiguousarray(self.images[index - 1][y1:y2, x1:x2])
        self.images.append(crop)
        self.crop = resize(crop, 64, 64)
        self.show(crop, caption=f"zoom of image {index}, box [{x1}, {y1}, {x2}, {y2}]")
        return Outcome({}, feedback="Here is the crop.")

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        return {"scene": self.images[0].copy(), "crop": self.crop.copy()}

    def _score(self) -> float:
        return float(self.answered == self.quadrant)

    def _render_frame(self) -> np.ndarray:
        return self.images[0].copy()

    def null_text(self) -> str:
        return answer_text("A")

    def oracle_numeric(self) -> int:
        return 4 + self.quadrant

    def oracle_text(self) -> str:
        return self._action_text(self.oracle_numeric())


# -- NudgeEnv: a Box action space -----------------------------------------------------------------------
class NudgeEnv(VisualEnv):
    """Move a dot onto the target: each action is a nudge (dx, dy) in [-1, 1]^2 (x 8 px).

    Text: ``move(dx, dy)`` (floats in [-1, 1]); numeric ``Box(-1, 1, (2,), float32)``. Reward: the
    decrease in distance to the target (px / 64); success within 4 px.
    """

    family = "toy"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        args = (Arg("dx", "float", "right is positive", -1.0, 1.0), Arg("dy", "float", "down is positive", -1.0, 1.0))
        self.tools = ToolSet([Tool("move", "nudge the dot by (dx, dy) x 8 px", args)])
        image = spaces.Box(0, 255, (64, 64, 3), dtype=np.uint8)
        self._set_spaces((64, 64, 3), spaces.Dict({"image": image}), spaces.Box(-1.0, 1.0, (2,), dtype=np.float32))

    horizon = 20

    def _new_task(self, rng: np.random.Generator) -> None:
        self.dot = rng.uniform(8, 56, 2)
        self.goal = rng.uniform(8, 56, 2)
        self.show(self._image())

    def _image(self) -> np.ndarray:
        image = np.full((64, 64, 3), 255, dtype=np.uint8)
        gx, gy = (int(v) for v in self.goal)
        image[max(0, gy - 2) : gy + 3, max(0, gx - 2) : gx + 3] = (0, 160, 0)
        dx, dy = (int(np.clip(v, 0, 63)) for v in self.dot)
        image[max(0, dy - 1) : dy + 2, max(0, dx - 1) : dx + 2] = (220, 0, 0)
        return image

    def _task_text(self) -> str:
        return "Move the red dot onto the green square."

    def _parse_text(self, text: Any) -> np.ndarray:
        call = self.tools.parse(text)
        assert isinstance(call, ToolCall)
        return np.array([call.arguments["dx"], call.arguments["dy"]], dtype=np.float32)

    def _action_text(self, action: np.ndarray) -> str:
        return tool_call_text("move", {"dx": float(action[0]), "dy": float(action[1])})

    def _apply(self, action: np.ndarray, backend_result: Any) -> Outcome:
        before = float(np.linalg.norm(self.dot - self.goal))
        self.dot = np.clip(self.dot + 8.0 * action.astype(np.float64), 0, 63)
        after = float(np.linalg.norm(self.dot - self.goal))
        self.show(self._image())
        return Outcome({"progress": (before - after) / 64}, terminated=after <= 4, feedback=f"Distance {after:.1f} px.")

    def _numeric_observation(self) -> dict[str, np.ndarray]:
        return {"image": self._image()}

    def _score(self) -> float:
        return float(np.linalg.norm(self.dot - self.goal) <= 4)

    def _render_frame(self) -> np.ndarray:
        return self._image()

    def null_text(self) -> str:
        return tool_call_text("move", {"dx": 0.0, "dy": 0.0})

    def oracle_numeric(self) -> np.ndarray:
        return np.clip((self.goal - self.dot) / 8.0, -1, 1).astype(np.float32)

    def oracle_text(self) -> str:
        return self._action_text(self.oracle_numeric())


# -- BarsRenderEnv: rendering feedback on a non-square frame, with renderer extras ----------------------
class BarsRenderer:
    """Renders ``bars h1 h2 ...`` (heights 0..9) as black bars on white at any (width, height), and
    says how many bars it drew (an extra). Trusted, in-process: the program is a few integers."""

    def render(self, program: str, frame: tuple[int, int]) -> Rendered:
        words = program.split()
        if not words or words[0] != "bars" or not all(w.isdigit() and len(w) == 1 for w in words[1:]) or len(words) > 9:
            raise ProgramError("a program is 'bars' then up to 8 digits, e.g. 'bars 3 5 2'")
        width, height = frame
        image = np.full((height, width, 3), 255, dtype=np.uint8)
        heights = [int(w) for w in words[1:]]
        slot = width // 8
        for k, h in enumerate(heights):
            image[height - h * height // 10 :, k * slot + 2 : (k + 1) * slot - 2] = 0
        return Rendered(image, {"bars": len(heights)})

    def render_batch(self, programs: Sequence[str], frame: tuple[int, int]) -> list[Any]:
        out: list[Any] = []
        for program in programs:
            try:
                out.append(self.render(program, frame))
            except ProgramError as err:
                out.append(err)
        return out

    def close(self) -> None:
        pass


class BarsRenderEnv(RenderFeedbackEnv):
    """Write ``bars h1 h2 ...`` that reproduces the target bar chart (a 160x96 frame, not square).

    Reward: the gain in normalised similarity (as every rendering-feedback env) plus the term
    ``count``: 0.2 when the render has as many bars as the target (from the renderer's extras).
    Numeric: ``MultiDiscrete([8, 10])``: set bar k to height h.
    """

    family = "toy"
    language = "bars"
    default_size = {"text": (160, 96), "numeric": (160, 96)}  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        self.tools = ToolSet(answer=AnswerFormat("code", "the bars program", language="bars"))
        super().__init__(**kwargs)
        self.heights = [0] * 8

    def _renderer_factory(self) -> Callable[[], Renderer]:
        return BarsRenderer

    def _generate_target(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        self.target_bars = int(rng.integers(2, 6))
        code = "bars " + " ".join(str(int(v)) for v in rng.integers(1, 10, self.target_bars))
        return BarsRenderer().render(code, self.frame_size).image, code

    def _find_program(self, content: str) -> str:
        if not content.strip().startswith("bars"):
            raise ActionError("the program starts with 'bars'")
        return content.strip()

    def _empty_program(self) -> str:
        return "bars"

    def _numeric_space(self) -> spaces.Space:
        return spaces.MultiDiscrete([8, 10])

    def _clear_canvas(self) -> None:
        self.heights = [0] * 8

    def _canvas_program(self, heights: list[int]) -> str:
        last = max((k for k, h in enumerate(heights) if h), default=-1)
        return "bars " + " ".join(str(h) for h in heights[: last + 1]) if last >= 0 else "bars"

    def _draw_numeric(self, action: Any) -> tuple[Rendered, int]:
        self.heights[int(action[0])] = int(action[1])
        program = self._canvas_program(self.heights)
        return BarsRenderer().render(program, self.frame_size), len(program)

    def _action_text(self, action: Any) -> str:
        if isinstance(action, tuple):
            heights = list(self.heights)
            heights[int(action[0])] = int(action[1])
            return answer_text(self._canvas_program(heights))
        return super()._action_text(action)

    def _extra_quality(self, image: np.ndarray, extras: Mapping[str, Any]) -> dict[str, float]:
        return {"count": 0.2 * float(extras.get("bars") == self.target_bars)}

    def _extras_feedback(self, extras: Mapping[str, Any]) -> str:
        return f"Your program drew {extras.get('bars', 0)} bars."

    def oracle_numeric(self) -> np.ndarray:
        assert self.target_code is not None
        wanted = [int(w) for w in self.target_code.split()[1:]]
        for k, h in enumerate(wanted):
            if self.heights[k] != h:
                return np.array([k, h], dtype=np.int64)
        return np.array([7, 0], dtype=np.int64)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
