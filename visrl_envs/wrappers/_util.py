"""Helpers shared by the wrappers: what counts as an image, interface checks, PIL resizing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

from visrl_envs.core.base import image_sequence


def is_image(space: spaces.Space[Any]) -> bool:
    """A 3-D ``Box`` (an image, whichever axis holds the channels)."""
    return isinstance(space, spaces.Box) and len(space.shape) == 3


def is_uint8_image(space: spaces.Space[Any]) -> bool:
    """A 3-D uint8 ``Box``: what PIL can resize and a CNN policy reads as pixels."""
    return is_image(space) and space.dtype == np.uint8


def image_keys(space: spaces.Dict, test: Callable[[spaces.Space[Any]], bool] = is_image) -> list[str]:
    """The keys of the entries of ``space`` that pass ``test``, in the space's order."""
    return [key for key, sub in space.spaces.items() if test(sub)]


def require_numeric(env: gym.Env[Any, Any], wrapper: str, hint: str = "") -> None:
    """Refuse the text interface (``{"images": ImageSequence, "text": Text}``) with a clear error."""
    sequence = image_sequence(env.observation_space)
    if sequence is not None:
        raise ValueError(
            f"{wrapper} works on the numeric interface, but this env uses the text interface (observation "
            f"{{'images': {sequence!r}, 'text': Text}}); make it with action_mode='numeric'{hint}"
        )


def ordered_dict_space(items: Iterable[tuple[str, spaces.Space[Any]]]) -> spaces.Dict:
    """A ``Dict`` of ``items`` in the given order (a sequence of pairs is never re-sorted)."""
    return spaces.Dict(list(items))


def box_like(space: spaces.Box, transform: Callable[[np.ndarray], np.ndarray]) -> spaces.Box:
    """The ``Box`` whose bounds are ``transform`` of ``space``'s bounds (same dtype)."""
    return spaces.Box(low=transform(space.low), high=transform(space.high), dtype=space.dtype)


def image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` (an int for a square, or ``(H, W)``) as ``(H, W)``; a ValueError unless both are >= 1."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer | tuple | list):
        raise ValueError(f"size must be an int or an (H, W) pair of ints >= 1, got {size!r}")
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in pair):
        raise ValueError(f"size must be an int or an (H, W) pair of ints >= 1, got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"size must be >= 1 on both sides, got {size!r}")
    return int(pair[0]), int(pair[1])


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 (H, W, C) image to ``size`` = (H', W') with PIL: BOX when neither side grows
    (the mean of the source pixels each target pixel covers, no aliasing), BILINEAR otherwise. Three
    channels go through PIL as one RGB image; any other count channel by channel (an RGBA image is
    not resized as RGBA, which PIL premultiplies by alpha)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return np.array(image, dtype=np.uint8, copy=True)
    shrink = height <= image.shape[0] and width <= image.shape[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.shape[2] == 3:
        return np.asarray(Image.fromarray(image, "RGB").resize((width, height), resample), dtype=np.uint8).copy()
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), "L").resize((width, height), resample))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1).astype(np.uint8, copy=False)
