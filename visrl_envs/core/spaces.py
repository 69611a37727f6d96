"""Spaces of the text interface: the images of a turn and the turn's text.

A text observation is ``{"images": tuple of uint8 (H, W, 3) arrays, "text": str}``: the images that
are new this turn (none after a malformed action, one board, a target and a render, a thumbnail and
a crop...).

The image-size contract. An env declares a frame ``(H, W)`` and whether it is fixed:

- a **fixed** frame (the default; every family before zoom VQA): every image has exactly that
  shape, so a formatter gets a plain list and wrappers can batch them;
- a **variable** frame (``fixed=False``): each image has its own size, at most the frame's sides (a
  zoom crop beside a thumbnail, a 1920x1080 screenshot beside an element crop). The frame is then
  the largest image the env can show, and every image's size is stated in the text beside it
  (``Image 3 (480x270 px): ...``, see :mod:`visrl_envs.core.prompt`).

:class:`ImageSequence` is a :class:`gymnasium.spaces.Sequence` of one ``Box`` with a cap on the
count. Gymnasium refuses to put a ``Sequence`` in ``AsyncVectorEnv``'s shared memory (its length is
dynamic); with the cap it has a fixed-size buffer, so we register the three shared-memory functions
for it (the extension point Gymnasium's error message names) and ``gym.make_vec(...,
vectorization_mode="async")`` works with its defaults. Each slot of the buffer holds one image of
the frame's size; a smaller image fills its top-left corner and its true size is recorded beside
the buffer, so readers get views of exactly the image. The buffer therefore costs ``num_envs x
max_images x H x W x 3`` bytes whatever the images' sizes (benchmarks/RESULTS.md has the measured
cost for 8 envs of a 1920x1080 frame).

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

#: Most images one text observation may carry by default.
MAX_IMAGES_PER_TURN = 4
#: Most images any env may declare per text observation.
MAX_DECLARED_IMAGES = 8


class ImageSequence(spaces.Sequence):
    """Between 0 and ``max_images`` uint8 images as a tuple: each of exactly the frame ``shape``
    (H, W, 3), or with ``fixed=False`` each of its own size up to the frame's sides."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        max_images: int = MAX_IMAGES_PER_TURN,
        seed: Any = None,
        *,
        fixed: bool = True,
    ) -> None:
        if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < 1:
            raise ValueError(f"image frames are (H, W, 3), got {shape}")
        if not 1 <= max_images <= 64:
            raise ValueError(f"max_images must be in 1..64, got {max_images}")
        self.image_space = spaces.Box(0, 255, tuple(int(s) for s in shape), dtype=np.uint8)
        self.max_images = int(max_images)
        self.fixed = bool(fixed)
        super().__init__(self.image_space, seed=seed, stack=False)

    @property
    def frame(self) -> tuple[int, int, int]:
        """(H, W, 3): the shape of every image (fixed), or the largest one (variable)."""
        return self.image_space.shape  # type: ignore[return-value]

    def fits(self, image: Any) -> bool:
        """Whether ``image`` is a uint8 (H, W, 3) array this space accepts."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            return False
        if self.fixed:
            return image.shape == self.frame
        height, width = self.frame[:2]
        return 1 <= image.shape[0] <= height and 1 <= image.shape[1] <= width

    def contains(self, x: Any) -> bool:
        return isinstance(x, tuple) and len(x) <= self.max_images and all(self.fits(im) for im in x)

    def sample(self, mask: Any = None, probability: Any = None) -> tuple[np.ndarray, ...]:
        """Between 1 and ``max_images`` random images (of random sizes when the frame is variable)."""
        count = int(self.np_random.integers(1, self.max_images + 1))
        if self.fixed:
            return tuple(self.image_space.sample() for _ in range(count))
        height, width = self.frame[:2]
        return tuple(
            self.np_random.integers(
                0, 256, (int(self.np_random.integers(1, height + 1)), int(self.np_random.integers(1, width + 1)), 3)
            ).astype(np.uint8)
            for _ in range(count)
        )

    def __repr__(self) -> str:
        kind = "" if self.fixed else ", variable sizes"
        return f"ImageSequence({self.frame}, max_images={self.max_images}{kind})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ImageSequence)
            and other.frame == self.frame
            and other.max_images == self.max_images
            and other.fixed == self.fixed
        )

    def __hash__(self) -> int:
        return hash((self.frame, self.max_images, self.fixed))


def text_observation_space(
    frame: tuple[int, int, int], max_images: int = MAX_IMAGES_PER_TURN, *, fixed: bool = True
) -> spaces.Dict:
    """``{"images": ImageSequence(frame), "text": Text}``: the observation space of every text interface."""
    return spaces.Dict(
        {"images": ImageSequence(frame, max_images, fixed=fixed), "text": text_space(MAX_OBSERVATION_TEXT)}
    )


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
    """Each env's tuple of images (views of exactly each image's recorded size)."""

    def __init__(self, data: np.ndarray, counts: np.ndarray, sizes: np.ndarray) -> None:
        super().__init__(len(counts))
        self._data = data
        self._counts = counts
        self._sizes = sizes

    def _read(self, index: int) -> tuple[np.ndarray, ...]:
        slots = self._data[index]
        return tuple(
            slots[k, :height, :width] for k, (height, width) in enumerate(self._sizes[index, : self._counts[index]])
        )


def _views(space: ImageSequence, memory: tuple[Any, Any, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data, counts, sizes = memory
    images = np.frombuffer(data.get_obj(), dtype=np.uint8).reshape(-1, space.max_images, *space.frame)
    counts_view = np.frombuffer(counts.get_obj(), dtype=np.int64)
    return images, counts_view, np.frombuffer(sizes.get_obj(), dtype=np.int64).reshape(-1, space.max_images, 2)


@_shm.create_shared_memory.register(ImageSequence)
def _create_image_sequence_memory(space: ImageSequence, n: int = 1, ctx: ModuleType = mp) -> tuple[Any, Any, Any]:
    size = int(np.prod(space.frame)) * space.max_images
    int64 = np.ctypeslib.as_ctypes_type(np.int64)
    return (
        ctx.Array(np.ctypeslib.as_ctypes_type(np.uint8), n * size),
        ctx.Array(int64, n),
        ctx.Array(int64, n * space.max_images * 2),
    )


@_shm.read_from_shared_memory.register(ImageSequence)
def _read_image_sequence_memory(space: ImageSequence, memory: tuple[Any, Any, Any], n: int = 1) -> SharedImageBatch:
    return SharedImageBatch(*_views(space, memory))


@_shm.write_to_shared_memory.register(ImageSequence)
def _write_image_sequence_memory(
    space: ImageSequence, index: int, value: tuple[np.ndarray, ...], memory: tuple[Any, Any, Any]
) -> None:
    images, counts, sizes = _views(space, memory)
    if len(value) > space.max_images:
        raise ValueError(f"{len(value)} images exceed the space's cap of {space.max_images}")
    for k, image in enumerate(value):
        if not space.fits(image):
            raise ValueError(f"image {k} of shape {np.shape(image)} does not fit {space}")
        height, width = image.shape[:2]
        images[index, k, :height, :width] = image
        sizes[index, k] = (height, width)
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
