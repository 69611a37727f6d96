"""Images for the image families (jigsaw now; image editing and zoom VQA next): packaged photos,
procedural scenes, augmentation and user files.

Nothing is downloaded. A split's pool is

- the photos that installed packages ship (scikit-image, scikit-learn, matplotlib), split into
  disjoint train and test lists and heavily augmented (crop 35-100 %, flips, quarter turns, hue,
  saturation, contrast and brightness jitter, sometimes grayscale or blur);
- and, for most episodes, a procedural scene drawn from the task's own rng (gradient, noise or
  stripe backgrounds, 3-12 shapes, sometimes text), so there are as many distinct images as task
  seeds and the two splits never share one (their task seeds are disjoint).

A policy trained on one split therefore cannot memorise the other's images: PPO on the old pool of 9
train photos scored below the random agent on the 4 test photos.

User files (``images=`` / ``targets=``) are checked when the env is built: every file is decoded,
must be at least :data:`MIN_SIDE` px a side, and any failure is one ``ValueError`` that names the
file and the accepted suffixes. Transparent pixels are composited onto white and grayscale is
expanded to RGB.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from visrl_envs.core.files import PathList, collect_files

#: Longest side kept in memory; boards and targets are at most a few hundred pixels.
MAX_SIDE = 640
#: Smallest side accepted from a user file (a 1x1 PNG is not an image to solve).
MIN_SIDE = 32
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Share of episodes that use a packaged photo (the rest use a procedural scene).
PHOTO_SHARE = 0.3


def _package_dir(module: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{module} is needed for the built-in photos")
    return Path(os.path.dirname(spec.origin), *parts)


def _builtin_paths() -> dict[str, Path]:
    sk = _package_dir("skimage", "data")
    sklearn = _package_dir("sklearn", "datasets", "images")
    mpl = _package_dir("matplotlib", "mpl-data", "sample_data")
    names = [
        "astronaut.png",
        "camera.png",
        "cell.png",
        "chelsea.png",
        "clock_motion.png",
        "coffee.png",
        "coins.png",
        "color.png",
        "horse.png",
        "hubble_deep_field.jpg",
        "ihc.png",
        "logo.png",
        "motorcycle_left.png",
        "phantom.png",
        "retina.jpg",
        "rocket.jpg",
        "text.png",
        "brick.png",
        "grass.png",
        "gravel.png",
        "moon.png",
        "page.png",
    ]
    paths = {n.split(".")[0].removesuffix("_deep_field").removesuffix("_left"): sk / n for n in names}
    paths |= {"china": sklearn / "china.jpg", "flower": sklearn / "flower.jpg"}
    paths |= {"grace_hopper": mpl / "grace_hopper.jpg", "jacksboro": mpl / "jacksboro_fault_dem.npz"}
    return paths


#: Disjoint photo lists of the splits (``low_texture``: repetitive textures and flat scenes, the
#: ambiguous boards JigShape warns about; the last jigsaw rung mixes them in).
PHOTOS = {
    "train": ("astronaut", "camera", "chelsea", "coins", "hubble", "logo", "retina", "text", "china", "grace_hopper"),
    "test": ("cell", "clock_motion", "coffee", "color", "horse", "ihc", "motorcycle", "rocket", "phantom", "flower"),
}
LOW_TEXTURE = {"train": ("brick", "grass", "moon", "jacksboro"), "test": ("gravel", "page")}


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB: transparency composited onto white, grayscale and palettes expanded."""
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, max_side: int = MAX_SIDE) -> Image.Image:
    """An image file as RGB (see :func:`to_rgb`), shrunk so its longest side is at most ``max_side``.

    ``PIL.Image.MAX_IMAGE_PIXELS`` stays on, so decompression bombs are refused.
    """
    path = Path(path)
    if path.suffix == ".npz":  # an elevation model shipped by matplotlib, drawn with a terrain colour map
        return _elevation_image(path)
    with Image.open(path) as source:
        source.draft("RGB", (max_side, max_side))
        image = to_rgb(source)
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    image.load()
    return image


def _elevation_image(path: Path) -> Image.Image:
    from matplotlib import colormaps

    with np.load(path) as data:
        elevation = data["elevation"].astype(np.float64)
    unit = (elevation - elevation.min()) / max(float(np.ptp(elevation)), 1e-9)
    return Image.fromarray((colormaps["terrain"](unit)[:, :, :3] * 255).astype(np.uint8))


def check_user_images(paths: PathList, what: str, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The files named by ``paths``, each decoded once to prove it is an image of at least
    :data:`MIN_SIDE` px a side. Raises one ``ValueError`` naming the first bad file."""
    allowed = sorted(suffixes)
    files = collect_files(paths, set(allowed), what)
    for path in files:
        try:
            image = load_image(path)
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for broken files
            raise ValueError(
                f"{what} file {path} is not a readable image ({type(err).__name__}: {err}); accepted: {', '.join(allowed)}"
            ) from None
        if min(image.size) < MIN_SIDE:
            raise ValueError(f"{what} file {path} is {image.width}x{image.height} px; images need {MIN_SIDE} px a side")
    return files


@dataclass(frozen=True)
class PhotoSet:
    """Photos of one split: ``regular`` always used, ``low_texture`` mixed in by the caller."""

    regular: tuple[Image.Image, ...]
    low_texture: tuple[Image.Image, ...]


@cache
def builtin_photos(split: str) -> PhotoSet:
    """The packaged photos of ``split`` (loaded once per process)."""
    paths = _builtin_paths()
    return PhotoSet(
        tuple(load_image(paths[n]) for n in PHOTOS[split]), tuple(load_image(paths[n]) for n in LOW_TEXTURE[split])
    )


def user_photos(images: PathList) -> PhotoSet:
    """Photos from the user's files or directories (used by both splits)."""
    return PhotoSet(tuple(load_image(f) for f in check_user_images(images, "image")), ())


# -- augmentation ---------------------------------------------------------------------------------
def augment(photo: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """A heavily augmented square view of ``photo`` at ``size`` px: a random crop of 35-100 % of the
    short side, mirrored (p 1/2), flipped upside down (p 1/5), turned by a quarter (p 1/4), hue shifted
    (p 1/3), saturation, contrast and brightness jittered by up to 30 %, grayscale (p 1/10), blurred
    (p 1/10)."""
    width, height = photo.size
    side = max(1, int(min(height, width) * rng.uniform(0.35, 1.0)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    image = photo.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=2.0
    )
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.2:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if rng.random() < 0.25:
        image = image.transpose(Image.Transpose.ROTATE_90 if rng.random() < 0.5 else Image.Transpose.ROTATE_270)
    if rng.random() < 1 / 3:
        hsv = np.array(image.convert("HSV"))
        hsv[:, :, 0] += np.uint8(rng.integers(1, 256))  # wraps around the hue circle
        image = Image.fromarray(hsv, "HSV").convert("RGB")
    saturation, contrast, brightness = (float(v) for v in rng.uniform(0.7, 1.3, size=3))
    # PIL's enhancers run in C: 10x cheaper than float numpy at 336 px.
    image = ImageEnhance.Color(image).enhance(saturation)
    image = ImageEnhance.Contrast(image).enhance(contrast)
    image = ImageEnhance.Brightness(image).enhance(brightness)
    if rng.random() < 0.1:
        image = image.convert("L").convert("RGB")
    if rng.random() < 0.1:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    return np.array(image, dtype=np.uint8)


# -- procedural scenes ----------------------------------------------------------------------------
WORDS = ("visrl", "RL", "42", "GO", "jigsaw", "tile", "abc", "XYZ", "7", "map", "sky", "sun")


@cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    return x, y


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    hue, sat, val = rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.25, 1.0)
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    r, g, b = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = int(rng.integers(4))
    a, b = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    if kind == 2:  # smooth colour blobs: a coarse random grid upsampled
        cells = int(rng.integers(2, 7))
        coarse = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
        return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    x, y = _grid(size)
    if kind == 0:  # linear gradient at a random angle
        angle = rng.uniform(0, 2 * math.pi)
        t = x * math.cos(angle) + y * math.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == 1:  # radial gradient around a random centre
        cx, cy = rng.uniform(0.1, 0.9, size=2)
        t = np.clip(np.hypot(x - cx, y - cy) / rng.uniform(0.5, 1.2), 0, 1)
    else:  # stripes at a random angle and frequency
        angle = rng.uniform(0, math.pi)
        t = 0.5 + 0.5 * np.sin((x * math.cos(angle) + y * math.sin(angle)) * rng.uniform(4, 24))
    image = a + (b - a) * t[:, :, None]
    return Image.fromarray(image.astype(np.uint8))


def procedural_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A seeded synthetic picture at ``size`` px: a gradient, colour-blob or stripe background, 3-12
    shapes (ellipses, rectangles, polygons, stars, thick lines; some translucent or outlined) that
    often cross tile borders, and text with probability 1/3. All randomness comes from ``rng``."""
    image = _background(rng, size)
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(int(rng.integers(3, 13))):
        colour = (*_random_colour(rng), int(rng.choice([255, 255, 200, 140])))
        cx, cy = rng.uniform(0, size, size=2)
        w, h = rng.uniform(0.08, 0.6, size=2) * size
        kind = int(rng.integers(5))
        outline = _random_colour(rng) if rng.random() < 0.3 else None
        width = max(1, size // 60)
        if kind == 0:
            draw.ellipse((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=colour, outline=outline, width=width)
        elif kind == 1:
            draw.rectangle((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=colour, outline=outline, width=width)
        elif kind == 2:
            n = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = rng.uniform(0.4, 1.0, n) * max(w, h) / 2
            draw.polygon(
                [(cx + r * math.cos(t), cy + r * math.sin(t)) for r, t in zip(radii, angles, strict=True)], fill=colour
            )
        elif kind == 3:
            points = int(rng.integers(4, 8))
            spin = rng.uniform(0, math.pi)
            star = [
                (cx + (w / 2 if k % 2 == 0 else w / 5) * math.cos(spin + k * math.pi / points),
                 cy + (w / 2 if k % 2 == 0 else w / 5) * math.sin(spin + k * math.pi / points))
                for k in range(2 * points)
            ]  # fmt: skip
            draw.polygon(star, fill=colour)
        else:
            x1, y1 = rng.uniform(0, size, size=2)
            draw.line((cx, cy, x1, y1), fill=colour, width=max(2, int(rng.uniform(0.01, 0.05) * size)))
    if rng.random() < 1 / 3:
        from visrl_envs.core.images import font

        word = WORDS[int(rng.integers(len(WORDS)))]
        draw.text(
            tuple(rng.uniform(0, 0.6, size=2) * size),
            word,
            fill=_random_colour(rng),
            font=font(max(8, int(rng.uniform(0.1, 0.25) * size))),
        )
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0)) * size / 256))
    return np.array(image, dtype=np.uint8)


class ImagePool:
    """Where an episode's image comes from: a split's packaged photos (augmented) with probability
    ``photo_share`` and procedural scenes otherwise, or only the user's ``images`` (augmented).

    ``source``: ``"mixed"`` (default), ``"photos"`` or ``"scenes"``.
    """

    def __init__(self, split: str, images: PathList | None = None, source: str = "mixed") -> None:
        if source not in ("mixed", "photos", "scenes"):
            raise ValueError(f"image_source must be 'mixed', 'photos' or 'scenes', got {source!r}")
        if images is not None and source == "scenes":
            raise ValueError("image_source='scenes' draws no photos; drop images= or use 'photos'")
        self.split = split
        self.source = "photos" if images is not None else source
        self._user = check_user_images(images, "image") if images is not None else None
        self._photos: PhotoSet | None = None

    @property
    def photos(self) -> PhotoSet:
        if self._photos is None:  # loaded on first use, in the process that uses them
            self._photos = (
                PhotoSet(tuple(load_image(f) for f in self._user), ())
                if self._user is not None
                else builtin_photos(self.split)
            )
        return self._photos

    def draw(self, rng: np.random.Generator, size: int, low_texture_share: float = 0.0) -> np.ndarray:
        """An image of ``size`` x ``size`` px; all randomness from ``rng``."""
        use_photo = self.source == "photos" or (self.source == "mixed" and rng.random() < PHOTO_SHARE)
        if not use_photo:
            return procedural_scene(rng, size)
        photos = self.photos
        pool = photos.low_texture if photos.low_texture and rng.random() < low_texture_share else photos.regular
        return augment(pool[int(rng.integers(len(pool)))], size, rng)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_photos"] = None  # photos reload lazily (and are cached per process)
        return state
