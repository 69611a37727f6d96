"""Per-observation image wrappers: pick one image, move channels first, resize (PIL, no opencv)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TransformObservation

from visrl_envs.core.base import image_sequence
from visrl_envs.core.spaces import ImageSequence
from visrl_envs.wrappers._util import (
    box_like,
    image_keys,
    image_size,
    is_image,
    is_uint8_image,
    ordered_dict_space,
    require_numeric,
    resize_image,
)


class SingleImage(TransformObservation[np.ndarray, Any, dict[str, Any]]):
    """The numeric interface's Dict observation as one image ``Box``, for scripts that expect a
    single array (``envs.single_observation_space.shape`` fed to a CNN, SB3's ``CnnPolicy``).

    Spaces: ``Dict({"image": Box(0, 255, (H, W, 3), uint8), ...})`` -> ``Box(0, 255, (H, W, 3), uint8)``,
    the entry ``key``; by default the only 3-D entry (a ValueError lists them if there are several).
    ``keys=("target", "canvas")`` instead stacks several images of one (H, W) along the channel axis,
    in that order: ``Box(0, 255, (H, W, 3 * len(keys)), uint8)``. Other entries (e.g. JigsawPair's
    ``query`` vector) are dropped: use ``MultiInputPolicy`` on the Dict when they matter. The text
    interface is refused.

    Example::

        env = SingleImage(gym.make("visrl/Jigsaw-v1", action_mode="numeric"))
        env.observation_space  # Box(0, 255, (84, 84, 3), uint8)
        env = SingleImage(gym.make("visrl/SvgRender-v1", action_mode="numeric"), keys=("target", "canvas"))
        env.observation_space  # Box(0, 255, (64, 64, 6), uint8)
    """

    def __init__(self, env: gym.Env[dict[str, Any], Any], key: str | None = None, *, keys: Sequence[str] | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, key=key, keys=None if keys is None else tuple(keys))
        require_numeric(env, "SingleImage")
        space = env.observation_space
        if not isinstance(space, spaces.Dict):
            raise ValueError(f"SingleImage expects a Dict observation space, got {space!r}")
        images = image_keys(space)
        if not images:
            raise ValueError(f"SingleImage found no image (3-D Box) in the observation space {space!r}")
        if key is not None and keys is not None:
            raise ValueError("SingleImage takes key= (one image) or keys= (images to stack), not both")
        if keys is not None:
            chosen = tuple(keys)
            if not chosen or isinstance(keys, str):
                raise ValueError(f"keys must be a non-empty sequence of image keys, e.g. {tuple(images)}; got {keys!r}")
        elif key is not None:
            chosen = (key,)
        elif len(images) == 1:
            chosen = (images[0],)
        else:
            raise ValueError(
                f"SingleImage: the observation has {len(images)} images {images}; "
                "choose one with key=... or stack several with keys=(...)"
            )
        for k in chosen:
            if k not in space.spaces or not is_image(space.spaces[k]):
                raise ValueError(f"{k!r} is not an image of the observation; its images are {images}")
        boxes = [box for box in (space.spaces[k] for k in chosen) if isinstance(box, spaces.Box)]
        if len({(box.shape[:2], box.dtype) for box in boxes}) > 1:
            shapes = {k: (box.shape, str(box.dtype)) for k, box in zip(chosen, boxes, strict=True)}
            raise ValueError(f"stacked images need one (H, W) and dtype, got {shapes}")
        self.keys: tuple[str, ...] = chosen
        new_space = boxes[0]
        if len(boxes) > 1:
            low = np.concatenate([box.low for box in boxes], axis=-1)
            high = np.concatenate([box.high for box in boxes], axis=-1)
            new_space = spaces.Box(low=low, high=high, dtype=boxes[0].dtype)
        super().__init__(env, self._select, new_space)

    def _select(self, observation: dict[str, Any]) -> np.ndarray:
        if len(self.keys) == 1:
            return np.asarray(observation[self.keys[0]])
        return np.concatenate([observation[k] for k in self.keys], axis=-1)


class ChannelFirst(TransformObservation[Any, Any, Any]):
    """Images from (H, W, C) to (C, H, W), the layout of PyTorch convolutions.

    Spaces: a 3-D ``Box`` (H, W, C) -> ``Box`` (C, H, W) (bounds transposed, same dtype); on a
    ``Dict`` every 3-D ``Box`` entry is transposed and the other entries are untouched. Apply it
    last: :class:`ResizeImages` and :class:`FrameStack` expect channels last.

    Gymnasium's ``ReshapeObservation`` is not this: it reshapes, which scrambles pixels; SB3's
    ``VecTransposeImage`` does it on the vector env only (SB3 applies it itself for ``CnnPolicy``).

    Example::

        env = ChannelFirst(SingleImage(gym.make("visrl/Jigsaw-v1", action_mode="numeric")))
        env.observation_space  # Box(0, 255, (3, 84, 84), uint8)
    """

    def __init__(self, env: gym.Env[Any, Any]):
        gym.utils.RecordConstructorArgs.__init__(self)
        require_numeric(env, "ChannelFirst")
        space = env.observation_space
        if is_image(space):
            self.keys: tuple[str, ...] | None = None
            new_space: spaces.Space[Any] = box_like(space, _to_channel_first)  # type: ignore[arg-type]
        elif isinstance(space, spaces.Dict) and image_keys(space):
            self.keys = tuple(image_keys(space))
            new_space = ordered_dict_space(
                (k, box_like(s, _to_channel_first) if k in self.keys else s)  # type: ignore[arg-type]
                for k, s in space.spaces.items()
            )
        else:
            raise ValueError(f"ChannelFirst needs a 3-D Box or a Dict with 3-D Box entries, got {space!r}")
        super().__init__(env, self._transpose, new_space)

    def _transpose(self, observation: Any) -> Any:
        if self.keys is None:
            return _to_channel_first(observation)
        return {k: _to_channel_first(v) if k in self.keys else v for k, v in observation.items()}


def _to_channel_first(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(array, (2, 0, 1)))


class ResizeImages(TransformObservation[Any, Any, Any]):
    """Resize every image of the observation to ``size`` (an int for a square, or ``(H, W)``) with
    PIL: BOX filtering when no side grows, BILINEAR otherwise. No opencv needed (Gymnasium's
    ``ResizeObservation`` imports it, and takes a ``Box`` only).

    Spaces: a uint8 ``Box`` (H, W, C) -> ``Box`` (H', W', C); a numeric ``Dict``: every uint8 3-D
    ``Box`` entry likewise, other entries untouched; the text interface: ``{"images":
    ImageSequence((H, W, 3), n), "text": Text}`` -> ``{"images": ImageSequence((H', W', 3), n),
    "text": Text}``, every image of the tuple resized. Images are channels last: apply
    :class:`ChannelFirst` after this wrapper, not before.

    On the text interface this changes what the model sees, not what the env says: the prompt text
    is left as it is, so coordinates and sizes in it (and ``prompt_spec().image_frame``) still refer
    to the env's own frame, not to the resized images. Tell the model, or map coordinates yourself.

    Example::

        env = ResizeImages(gym.make("visrl/Jigsaw-v1", action_mode="numeric"), 64)
        env.observation_space  # Dict('image': Box(0, 255, (64, 64, 3), uint8))
        env = ResizeImages(gym.make("visrl/Jigsaw-v1"), (224, 224))  # text: images of 224x224
    """

    def __init__(self, env: gym.Env[Any, Any], size: int | tuple[int, int]):
        gym.utils.RecordConstructorArgs.__init__(self, size=size)
        self.size: tuple[int, int] = image_size(size)
        space = env.observation_space
        self.mode: str
        self.keys: tuple[str, ...] = ()
        sequence = image_sequence(space)
        if sequence is not None:
            assert isinstance(space, spaces.Dict)
            self.mode = "text"
            frame = (*self.size, 3)
            new_space: spaces.Space[Any] = ordered_dict_space(
                (k, ImageSequence(frame, sequence.max_images) if k == "images" else s) for k, s in space.spaces.items()
            )
        elif is_uint8_image(space):
            self.mode = "box"
            new_space = self._resized_box(space)  # type: ignore[arg-type]
        elif isinstance(space, spaces.Dict) and image_keys(space, is_uint8_image):
            self.mode = "dict"
            self.keys = tuple(image_keys(space, is_uint8_image))
            new_space = ordered_dict_space(
                (k, self._resized_box(s) if k in self.keys else s)  # type: ignore[arg-type]
                for k, s in space.spaces.items()
            )
        else:
            raise ValueError(
                f"ResizeImages needs uint8 (H, W, C) images: a Box, a Dict with such entries or the text "
                f"interface; got {space!r}"
            )
        super().__init__(env, self._resize, new_space)

    def _resized_box(self, box: spaces.Box) -> spaces.Box:
        shape = (*self.size, box.shape[2])
        return spaces.Box(low=int(box.low.min()), high=int(box.high.max()), shape=shape, dtype=np.uint8)

    def _resize(self, observation: Any) -> Any:
        if self.mode == "box":
            return resize_image(observation, self.size)
        if self.mode == "dict":
            return {k: resize_image(v, self.size) if k in self.keys else v for k, v in observation.items()}
        resized = tuple(resize_image(image, self.size) for image in observation["images"])
        return {**observation, "images": resized}
