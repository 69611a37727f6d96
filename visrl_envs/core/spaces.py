"""Spaces of the text interface: the images of a turn and the turn's text.

A text observation is ``{"images": tuple of uint8 (H, W, 3) arrays, "text": str}``: the images that
are new this turn (none after a malformed action, one board, a target and a render, a thumbnail and
a crop...). Every image of one env shares its frame ``(H, W)``, so a VLM formatter gets a plain list
and vector envs can batch them.

:class:`ImageSequence` is a :class:`gymnasium.spaces.Sequence` of one ``Box`` with a cap on the
count. Gymnasium refuses to put a ``Sequence`` in ``AsyncVectorEnv``'s shared memory (its length is
dynamic); with the cap it has a fixed-size buffer, so we register the three shared-memory functions
for it (the extension point Gymnasium's error message names) and ``gym.make_vec(...,
vectorization_mode="async")`` works with its defaults.

``AsyncVectorEnv`` reads its shared memory once, when it is built, and keeps what that read returned:
views for arrays, but plain strings for ``Text`` (so every later text observation came back as the
zero-filled buffer decoded: 8192 newlines). The text space of the text interface
(:class:`~visrl_envs.core.text.CharsetText`) gets a reader that returns a lazy view instead.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from collections.abc import Sequence as AbcSequence
from copy import deepcopy
from types import ModuleType
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import shared_memory as _shm

from visrl_envs.core.text import MAX_ACTION_TEXT, MAX_OBSERVATION_TEXT, CharsetText, text_space

#: Most images one text observation may carry.
MAX_IMAGES_PER_TURN = 4


class ImageSequence(spaces.Sequence):
    """Between 0 and ``max_images`` uint8 images of one frame ``shape`` (H, W, 3), as a tuple."""

    def __init__(self, shape: tuple[int, int, int], max_images: int = MAX_IMAGES_PER_TURN, seed: Any = None) -> None:
        if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < 1:
            raise ValueError(f"image frames are (H, W, 3), got {shape}")
        if not 1 <= max_images <= 64:
            raise ValueError(f"max_images must be in 1..64, got {max_images}")
        self.image_space = spaces.Box(0, 255, tuple(int(s) for s in shape), dtype=np.uint8)
        self.max_images = int(max_images)
        super().__init__(self.image_space, seed=seed, stack=False)

    @property
    def frame(self) -> tuple[int, int, int]:
        return self.image_space.shape  # type: ignore[return-value]

    def contains(self, x: Any) -> bool:
        return isinstance(x, tuple) and len(x) <= self.max_images and all(self.image_space.contains(im) for im in x)

    def sample(self, mask: Any = None, probability: Any = None) -> tuple[np.ndarray, ...]:
        """Between 1 and ``max_images`` random images."""
        count = int(self.np_random.integers(1, self.max_images + 1))
        return tuple(self.image_space.sample() for _ in range(count))

    def __repr__(self) -> str:
        return f"ImageSequence({self.frame}, max_images={self.max_images})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageSequence) and other.frame == self.frame and other.max_images == self.max_images

    def __hash__(self) -> int:
        return hash((self.frame, self.max_images))


def text_observation_space(frame: tuple[int, int, int], max_images: int = MAX_IMAGES_PER_TURN) -> spaces.Dict:
    """``{"images": ImageSequence(frame), "text": Text}``: the observation space of every text interface."""
    return spaces.Dict({"images": ImageSequence(frame, max_images), "text": text_space(MAX_OBSERVATION_TEXT)})


def text_action_space() -> spaces.Text:
    """The action space of every text interface (agents may send longer text; it is parsed anyway)."""
    return text_space(MAX_ACTION_TEXT)


# -- AsyncVectorEnv shared memory -----------------------------------------------------------------
class SharedBatch(AbcSequence):
    """A view of ``n`` envs' values in shared memory, read when indexed (the memory changes every
    step). ``AsyncVectorEnv`` deep-copies observations by default (``copy=True``): the copy is a plain
    tuple, as a synchronous vector env returns."""

    def __init__(self, n: int) -> None:
        self._n = n

    def _read(self, index: int) -> Any:
        raise TypeError("a SharedBatch subclass defines _read")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self._read(i) for i in range(*index.indices(self._n)))
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._read(index % self._n)

    def __iter__(self) -> Iterator[Any]:
        return (self._read(i) for i in range(self._n))

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[Any, ...]:
        return deepcopy(tuple(self), memo)


class SharedImageBatch(SharedBatch):
    """Each env's tuple of images."""

    def __init__(self, data: np.ndarray, counts: np.ndarray) -> None:
        super().__init__(len(counts))
        self._data = data
        self._counts = counts

    def _read(self, index: int) -> tuple[np.ndarray, ...]:
        return tuple(self._data[index, k] for k in range(int(self._counts[index])))


def _views(space: ImageSequence, memory: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    data, counts = memory
    images = np.frombuffer(data.get_obj(), dtype=np.uint8).reshape(-1, space.max_images, *space.frame)
    return images, np.frombuffer(counts.get_obj(), dtype=np.int64)


@_shm.create_shared_memory.register(ImageSequence)
def _create_image_sequence_memory(space: ImageSequence, n: int = 1, ctx: ModuleType = mp) -> tuple[Any, Any]:
    size = int(np.prod(space.frame)) * space.max_images
    return ctx.Array(np.ctypeslib.as_ctypes_type(np.uint8), n * size), ctx.Array(
        np.ctypeslib.as_ctypes_type(np.int64), n
    )


@_shm.read_from_shared_memory.register(ImageSequence)
def _read_image_sequence_memory(space: ImageSequence, memory: tuple[Any, Any], n: int = 1) -> SharedImageBatch:
    return SharedImageBatch(*_views(space, memory))


@_shm.write_to_shared_memory.register(ImageSequence)
def _write_image_sequence_memory(
    space: ImageSequence, index: int, value: tuple[np.ndarray, ...], memory: tuple[Any, Any]
) -> None:
    images, counts = _views(space, memory)
    if len(value) > space.max_images:
        raise ValueError(f"{len(value)} images exceed the space's cap of {space.max_images}")
    for k, image in enumerate(value):
        images[index, k] = image
    counts[index] = len(value)


class SharedTextBatch(SharedBatch):
    """Each env's text, decoded from the shared character codes."""

    def __init__(self, codes: np.ndarray, characters: np.ndarray) -> None:
        super().__init__(len(codes))
        self._codes = codes
        self._characters = characters

    def _read(self, index: int) -> str:
        row = self._codes[index]
        return "".join(self._characters[row[row < len(self._characters)]].tolist())


@_shm.read_from_shared_memory.register(CharsetText)
def _read_text_memory(space: CharsetText, memory: Any, n: int = 1) -> SharedTextBatch:
    codes = np.frombuffer(memory.get_obj(), dtype=np.int32).reshape(n, space.max_length)
    return SharedTextBatch(codes, np.array(space.character_list, dtype=object))
