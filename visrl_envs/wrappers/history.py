"""Wrappers that remember earlier observations: frame stacking (numeric), an image budget (text)."""

from __future__ import annotations

from collections import deque
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import FrameStackObservation

from visrl_envs.core.base import image_sequence
from visrl_envs.core.prompt import split_at_markers
from visrl_envs.core.spaces import ImageSequence
from visrl_envs.wrappers._util import box_like, ordered_dict_space, require_numeric

#: Most images :class:`ImageBudget` can keep (the cap of :class:`ImageSequence`).
MAX_IMAGE_BUDGET = 64


def _positive_int(value: Any, name: str, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{name} must be at most {most}, got {value!r}")
    return int(value)


def _stack_last_axis(batch: np.ndarray) -> np.ndarray:
    """``(k, *shape)`` oldest first -> ``(*shape[:-1], k * shape[-1])``: frame ``j`` fills channels
    ``j*C .. (j+1)*C - 1`` of the last axis; ``(k,)`` (scalars) stays as it is."""
    if batch.ndim == 1:
        return np.array(batch, copy=True)
    moved = np.moveaxis(batch, 0, -2)  # (*shape[:-1], k, C)
    return np.ascontiguousarray(moved).reshape(*moved.shape[:-2], moved.shape[-2] * moved.shape[-1])


class FrameStack(FrameStackObservation[Any, Any, Any]):
    """Stack the last ``k`` numeric observations along the last (channel) axis, oldest first.

    Spaces: an image ``Box`` (H, W, C) -> (H, W, k*C); on a ``Dict`` every ``Box`` entry likewise:
    images (H, W, C) -> (H, W, k*C), vectors (n,) -> (k*n,), e.g. Jigsaw's ``Dict("image": (84, 84,
    3))`` -> ``Dict("image": (84, 84, 3k))``. The newest observation is the last C channels. After
    ``reset`` every slot holds the first observation (``padding_type="reset"``; ``"zero"`` pads with
    zeros). Channels-last stacking is what SB3's ``CnnPolicy`` takes (its own ``VecFrameStack`` stacks
    the same way) and what :class:`ChannelFirst` turns into CleanRL's (k*C, H, W); apply
    :class:`ChannelFirst` after this wrapper. The text interface is refused: use
    :class:`ImageBudget`.

    Gymnasium's ``FrameStackObservation`` does the bookkeeping (queue, padding, copies); this
    subclass only moves its new leading axis ``(k, H, W, C)`` onto the channels, because neither
    SB3's ``CnnPolicy`` nor a 2-D convolution accepts a 4-D image.

    Example::

        env = FrameStack(gym.make("visrl/Jigsaw-v1", action_mode="numeric"), 4)
        env.observation_space  # Dict('image': Box(0, 255, (84, 84, 12), uint8))
    """

    def __init__(self, env: gym.Env[Any, Any], k: int, *, padding_type: str = "reset"):
        gym.utils.RecordConstructorArgs.__init__(self, k=k, padding_type=padding_type)
        k = _positive_int(k, "k")
        require_numeric(env, "FrameStack", " (or use ImageBudget on the text interface)")
        if padding_type not in ("reset", "zero"):
            raise ValueError(f"padding_type must be 'reset' or 'zero', got {padding_type!r}")
        space = env.observation_space
        if isinstance(space, spaces.Dict):
            self.keys: tuple[str, ...] | None = tuple(space.spaces)
            subspaces = list(space.spaces.values())
        else:
            self.keys = None
            subspaces = [space]
        if not all(isinstance(s, spaces.Box) and s.shape for s in subspaces):
            raise ValueError(f"FrameStack stacks Box observations (or a Dict of them), got {space!r}")
        super().__init__(env, k, padding_type=padding_type)
        self.k = k
        batched = self.observation_space  # Gymnasium's (k, ...) spaces
        if isinstance(batched, spaces.Dict):
            self.observation_space = ordered_dict_space(
                (key, box_like(sub, _stack_last_axis))  # type: ignore[arg-type]
                for key, sub in batched.spaces.items()
            )
        else:
            self.observation_space = box_like(batched, _stack_last_axis)  # type: ignore[arg-type]

    def _restack(self, observation: Any) -> Any:
        if self.keys is None:
            return _stack_last_axis(observation)
        return {key: _stack_last_axis(observation[key]) for key in self.keys}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        return self._restack(obs), info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        return self._restack(obs), reward, terminated, truncated, info


class ImageBudget(
    gym.Wrapper[dict[str, Any], Any, dict[str, Any], Any],
    gym.utils.RecordConstructorArgs,
):
    """On the text interface, show the last ``k`` images of the episode every turn, not only the
    new ones: for agents that send each turn to a model without the conversation so far.

    Spaces: ``{"images": ImageSequence(frame, n), "text": Text}`` -> ``{"images":
    ImageSequence(frame, k), "text": Text}``. ``images`` is the last ``k`` images of the episode,
    this turn's new ones included, oldest first. When some images are not new this turn, or older
    ones were dropped, the text starts with one line saying so, e.g. ``Images: the last 3 of this
    episode, oldest first (2 from earlier turns, 1 older not shown).``; otherwise it is the env's
    text unchanged. ``k`` is 1..64. The numeric interface is refused: use :class:`FrameStack`.

    Gymnasium's ``FrameStackObservation`` does not fit: it stacks one observation per step, while
    a text turn brings 0..n images (none after a malformed action), and it cannot edit the text.

    Example::

        env = ImageBudget(gym.make("visrl/Jigsaw-v1"), 3)
        obs, info = env.reset(seed=0)  # obs["images"]: the first board
        obs, *_ = env.step(action)  # obs["images"]: the first board, then the new one
    """

    def __init__(self, env: gym.Env[dict[str, Any], Any], k: int):
        gym.utils.RecordConstructorArgs.__init__(self, k=k)
        k = _positive_int(k, "k", MAX_IMAGE_BUDGET)
        sequence = image_sequence(env.observation_space)
        space = env.observation_space
        if sequence is None or not isinstance(space, spaces.Dict):
            raise ValueError(
                f"ImageBudget works on the text interface ({{'images', 'text'}} observations), got {space!r}; "
                "make the env with action_mode='text', or use FrameStack on the numeric interface"
            )
        gym.Wrapper.__init__(self, env)
        self.k = k
        self.observation_space = ordered_dict_space(
            (key, ImageSequence(sequence.frame, k, fixed=sequence.fixed) if key == "images" else sub)
            for key, sub in space.spaces.items()
        )
        text_space = space.spaces.get("text")
        self._max_text = text_space.max_length if isinstance(text_space, spaces.Text) else None
        self._recent: deque[np.ndarray] = deque(maxlen=k)
        self._seen = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._recent.clear()
        self._seen = 0
        return self._budget(obs), info

    def step(self, action: Any) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._budget(obs), reward, terminated, truncated, info

    def _budget(self, obs: dict[str, Any]) -> dict[str, Any]:
        new = tuple(obs["images"])
        self._recent.extend(new)
        self._seen += len(new)
        # Copies: an image kept for later turns must not be shared between two observations.
        images = tuple(np.array(image, dtype=np.uint8, copy=True) for image in self._recent)
        earlier = len(images) - min(len(new), self.k)
        dropped = self._seen - len(images)
        text = obs["text"]
        if earlier and split_at_markers(text, min(len(new), self.k)) is not None:
            # the env announces each image with a marker: give the earlier ones theirs, in order
            text = "An image from an earlier turn\n<image>\n" * earlier + text
        if earlier or dropped:
            parts = [f"{earlier} from earlier turns"] if earlier else []
            if dropped:
                parts.append(f"{dropped} older not shown")
            note = f"Images: the last {len(images)} of this episode, oldest first ({', '.join(parts)})."
            if self._max_text is not None:
                text = text[: max(0, self._max_text - len(note) - 1)]
            text = f"{note}\n{text}"
        return {**obs, "images": images, "text": text}
