"""ShapeColor: name the colour of the one shape in a small image (a toy fixture for trainer tests)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces
from PIL import Image, ImageDraw

from visrl_envs.core import checks
from visrl_envs.core.base import Outcome, VisualEnv
from visrl_envs.core.tools import Answer, AnswerFormat, ToolSet, answer_text

#: The colours a shape can have: names and RGB, at least 100 apart in RGB from each other and far from
#: every (light) background.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 30, 30)),
    ("green", (30, 160, 50)),
    ("blue", (30, 70, 220)),
    ("yellow", (240, 220, 0)),
    ("purple", (140, 40, 170)),
    ("orange", (255, 120, 0)),
)
SHAPES = ("circle", "square", "triangle")
#: Number of options at difficulty 0..3.
OPTIONS_BY_DIFFICULTY = (2, 3, 4, 4)
#: Smallest ``size`` of the text interface (one 28 px patch of a Qwen2.5-VL vision tower); the
#: numeric interface keeps the contract's 64 px.
MIN_TEXT_SIZE = 28
DEFAULT_SIZE = 64
LETTERS = "ABCD"
#: Most turns an episode may have (the registered step cap).
MAX_ATTEMPTS = 8


class ShapeColorEnv(VisualEnv):
    """Name the colour of the single shape in the image (a toy fixture for trainer tests).

    ## Description
    One question: the image shows one filled shape (circle, square or triangle; random position and
    size) on a light background; the agent picks its colour from 2-4 lettered options drawn from a
    palette of far-apart colours (red, green, blue, yellow, purple, orange). Cheap to draw (PIL,
    in-process, no backend), so a trainer test can run thousands of episodes.

    ## Action Space
    - text: ``<answer>B</answer>`` (one option letter; ``(b).`` counts as ``B``: the ``"choice"``
      answer format of :mod:`visrl_envs.core.tools`). A bare ``B`` without tags is malformed, as
      for every choice answer.
    - numeric: ``Discrete(n_options)``, the index of the chosen option (0 = A).

    ## Observation Space
    - text: ``{"images": (image,), "text": prompt}``; the prompt lists the options
      (``A. red``, ``B. blue``, ...).
    - numeric: ``{"image": uint8 (S, S, 3), "options": float32 (n_options * 6,)}``: the image and,
      per option, a one-hot over the palette (in :data:`PALETTE` order).

    ## Rewards
    ``r = correct`` (term ``accuracy``: 1 for the right option, 0 for a wrong one); a malformed
    answer gets ``format = -0.1`` and no accuracy. ``info["score"]`` = correct, ``info["success"]``
    = correct. Chance: 1 / n_options.

    ## Starting State
    Shape kind, colour, position, size and background tint drawn from the task seed; the options are
    the right colour and ``n_options - 1`` others of the palette, in random order. With
    ``fixed_options=True`` the options are always the first ``n_options`` palette colours in palette
    order (A = red, B = green, ...): the answer then depends on the image alone, the easiest form of
    the task (what the trainer's learning test starts from).

    ## Episode End
    The first well-formed answer terminates the episode; malformed ones cost ``-0.1`` each and may
    be retried until ``max_attempts`` (2) turns, then the episode is truncated. ``max_attempts=1``
    makes every episode one turn (Gymnasium's checker then warns that it truncates after one step,
    hence the default 2).

    ## Arguments
    ``size`` (image side, default 64; >= 28 in text mode, >= 64 in numeric mode), ``max_attempts``
    (1..8, default 2), ``fixed_options`` (default False), ``difficulty``
    0..3: 2, 3, 4 options, and at 3 four options with smaller shapes (7-15 % of the side instead
    of 15-35 % as radius), Gaussian pixel noise (sigma 18) and grey specks; ``split``,
    ``action_mode``, ``render_mode`` as every env.

    ## Anchors
    None: a fixture for the GRPO trainer's tests, not a benchmark. Its answer format is the lettered
    multiple choice of Jigsaw-R1 / R1-V.

    ## Version History
    - v0: initial release.
    """

    family = "toy"

    def __init__(
        self, *, size: int = DEFAULT_SIZE, max_attempts: int = 2, fixed_options: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.max_attempts = checks.integer("max_attempts", max_attempts, 1, MAX_ATTEMPTS)
        self.fixed_options = checks.flag("fixed_options", fixed_options)
        low = MIN_TEXT_SIZE if self.action_mode == "text" else checks.MIN_IMAGE_SIDE
        try:
            self.size = checks.integer("size", size, low, checks.MAX_IMAGE_SIDE)
        except ValueError as err:
            hint = f"the numeric interface needs >= {checks.MIN_IMAGE_SIDE} px, the text one >= {MIN_TEXT_SIZE}"
            raise ValueError(f"{err} ({hint})") from None
        self.n_options = OPTIONS_BY_DIFFICULTY[self.difficulty]
        self.letters = tuple(LETTERS[: self.n_options])
        self.tools = ToolSet(answer=AnswerFormat("choice", "the letter of the shape's colour", options=self.letters))
        s = self.size
        self._set_spaces(
            (s, s, 3),
            spaces.Dict(
                {
                    "image": spaces.Box(0, 255, (s, s, 3), dtype=np.uint8),
                    "options": spaces.Box(0.0, 1.0, (self.n_options * len(PALETTE),), dtype=np.float32),
                }
            ),
            spaces.Discrete(self.n_options),
        )
        self.image = np.zeros((s, s, 3), dtype=np.uint8)
        self.options: list[int] = []
        self.truth = 0
        self.shape = SHAPES[0]
        self._correct = False

    @property
    def horizon(self) -> int:
        return self.max_attempts

    def interface_twin_kwargs(self) -> dict[str, Any]:
        return {"size": self.size}

    # -- the task ----------------------------------------------------------------------------------
    def _new_task(self, rng: np.random.Generator) -> None:
        if self.fixed_options:
            self.options = list(range(self.n_options))
        else:
            self.options = [int(c) for c in rng.choice(len(PALETTE), size=self.n_options, replace=False)]
        self.truth = int(rng.integers(self.n_options))
        self.shape = SHAPES[int(rng.integers(len(SHAPES)))]
        self.image = draw_shape(rng, self.size, self.shape, PALETTE[self.options[self.truth]][1], self.difficulty >= 3)
        self._correct = False
        self.show(self.image)

    def _task_text(self) -> str:
        listed = "\n".join(f"{letter}. {PALETTE[c][0]}" for letter, c in zip(self.letters, self.options, strict=True))
        return f"What colour is the shape in the image?\n{listed}"

    # -- actions -----------------------------------------------------------------------------------
    def _parse_text(self, text: Any) -> int:
        action = self.tools.parse(text)
        assert isinstance(action, Answer)
        return self.letters.index(action.value)

    def _action_text(self, choice: int) -> str:
        return answer_text(self.letters[choice])

    def _apply(self, choice: int, backend_result: Any) -> Outcome:
        self._correct = choice == self.truth
        right = f"{self.letters[self.truth]} ({PALETTE[self.options[self.truth]][0]})"
        return Outcome(
            {"accuracy": float(self._correct)},
            terminated=True,
            feedback="Correct." if self._correct else f"Wrong: the answer is {right}.",
        )

    # -- observation, score, rendering -----------------------------------------------------------------
    def _numeric_observation(self) -> dict[str, np.ndarray]:
        options = np.zeros((self.n_options, len(PALETTE)), dtype=np.float32)
        options[np.arange(self.n_options), self.options] = 1.0
        return {"image": self.image.copy(), "options": options.ravel()}

    def _score(self) -> float:
        return float(self._correct)

    def _render_frame(self) -> np.ndarray:
        return self.image.copy()

    # -- baselines ---------------------------------------------------------------------------------
    def null_text(self) -> str:
        """Always the first option, A."""
        return answer_text("A")

    def oracle_text(self) -> str:
        return self._action_text(self.truth)

    def oracle_numeric(self) -> int:
        return self.truth


def draw_shape(
    rng: np.random.Generator, size: int, shape: str, colour: tuple[int, int, int], hard: bool = False
) -> np.ndarray:
    """A ``size`` px image of one filled ``shape`` in ``colour`` (jittered by up to 12 per channel) on a
    light background (each channel 215-255). ``hard``: a smaller shape, grey specks and Gaussian
    pixel noise. All randomness from ``rng``."""
    background = tuple(int(v) for v in rng.integers(215, 256, size=3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    if hard:  # achromatic specks under the shape: clutter that carries no colour
        for _ in range(int(rng.integers(4, 9))):
            grey = int(rng.integers(90, 181))
            x, y = (float(v) for v in rng.uniform(0, size, size=2))
            r = max(1.0, size / 40)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(grey, grey, grey))
    low, high = (0.07, 0.15) if hard else (0.15, 0.35)
    radius = max(2.5, float(rng.uniform(low, high)) * size)
    cx, cy = (float(v) for v in rng.uniform(radius, size - radius, size=2))
    fill = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in colour)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif shape == "square":
        half = radius * 0.85
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:
        spin = float(rng.uniform(0, 2 * math.pi))
        corners = [
            (cx + radius * math.cos(spin + k * 2 * math.pi / 3), cy + radius * math.sin(spin + k * 2 * math.pi / 3))
            for k in range(3)
        ]
        draw.polygon(corners, fill=fill)
    pixels = np.asarray(image, dtype=np.uint8)
    if hard:
        noisy = pixels + rng.normal(0.0, 18.0, size=pixels.shape)
        pixels = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return np.array(pixels, dtype=np.uint8)
