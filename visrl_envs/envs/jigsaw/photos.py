"""Photos for jigsaw boards: what installed packages ship, or the user's own files.

Nothing is downloaded. The built-in pool comes from scikit-image's, scikit-learn's and matplotlib's
bundled sample images, fixed into a train and a disjoint test list. ``low_texture`` images (repetitive
textures, flat scenes) are the ambiguous boards JigShape warns about; difficulty 3 mixes them in.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from visrl_envs.core.files import PathList, collect_files

#: Longest side kept in memory; boards are at most a few hundred pixels.
MAX_SIDE = 640
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _package_dir(module: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{module} is needed for the built-in photos")
    return Path(os.path.dirname(spec.origin), *parts)


def _builtin_paths() -> dict[str, Path]:
    sk = _package_dir("skimage", "data")
    return {
        "astronaut": sk / "astronaut.png",
        "chelsea": sk / "chelsea.png",
        "coffee": sk / "coffee.png",
        "rocket": sk / "rocket.jpg",
        "hubble": sk / "hubble_deep_field.jpg",
        "motorcycle": sk / "motorcycle_left.png",
        "retina": sk / "retina.jpg",
        "ihc": sk / "ihc.png",
        "camera": sk / "camera.png",
        "coins": sk / "coins.png",
        "china": _package_dir("sklearn", "datasets", "images") / "china.jpg",
        "flower": _package_dir("sklearn", "datasets", "images") / "flower.jpg",
        "grace_hopper": _package_dir("matplotlib", "mpl-data", "sample_data") / "grace_hopper.jpg",
        "brick": sk / "brick.png",
        "grass": sk / "grass.png",
        "gravel": sk / "gravel.png",
        "moon": sk / "moon.png",
        "page": sk / "page.png",
    }


TRAIN_PHOTOS = ("astronaut", "chelsea", "hubble", "motorcycle", "retina", "camera", "coins", "china", "grace_hopper")
TEST_PHOTOS = ("coffee", "rocket", "ihc", "flower")
TRAIN_LOW_TEXTURE = ("brick", "grass", "moon")
TEST_LOW_TEXTURE = ("gravel", "page")


@dataclass(frozen=True)
class PhotoPool:
    """Photos of one split: ``regular`` always used, ``low_texture`` mixed in at high difficulty."""

    regular: tuple[Image.Image, ...]
    low_texture: tuple[Image.Image, ...]


def load_photo(path: str | Path) -> Image.Image:
    """Read an image file as an RGB PIL image, shrunk so its longest side is at most :data:`MAX_SIDE`.

    ``PIL.Image.MAX_IMAGE_PIXELS`` stays on, so decompression bombs are refused.
    """
    with Image.open(path) as source:
        source.draft("RGB", (MAX_SIDE, MAX_SIDE))
        image = source.convert("RGB")
    scale = MAX_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    image.load()
    return image


@cache
def builtin_pool(split: str) -> PhotoPool:
    """The built-in photos of ``split`` (loaded once per process)."""
    paths = _builtin_paths()
    regular, low = (TRAIN_PHOTOS, TRAIN_LOW_TEXTURE) if split == "train" else (TEST_PHOTOS, TEST_LOW_TEXTURE)
    return PhotoPool(tuple(load_photo(paths[n]) for n in regular), tuple(load_photo(paths[n]) for n in low))


def user_pool(images: PathList) -> PhotoPool:
    """Photos from files or directories given by the user (used for both splits)."""
    return PhotoPool(tuple(load_photo(f) for f in collect_files(images, _IMAGE_SUFFIXES, "image")), ())


def augment(photo: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (50-100% of the short side), resized to ``size``, maybe mirrored, with
    brightness/contrast/saturation jitter of up to 15%."""
    width, height = photo.size
    side = int(min(height, width) * rng.uniform(0.5, 1.0))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    box = (left, top, left + side, top + side)
    resized = photo.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    if rng.random() < 0.5:
        resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    brightness, contrast, saturation = (float(v) for v in rng.uniform(0.85, 1.15, size=3))
    # PIL's enhancers run in C: 10x cheaper than float numpy at 336 px.
    resized = ImageEnhance.Color(resized).enhance(saturation)
    resized = ImageEnhance.Contrast(resized).enhance(contrast)
    resized = ImageEnhance.Brightness(resized).enhance(brightness)
    return np.array(resized, dtype=np.uint8)
