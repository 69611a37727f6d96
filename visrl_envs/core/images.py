"""Small image utilities shared by families (PIL/numpy only)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def resize(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Resize an RGB uint8 image with PIL (box filter when shrinking, bicubic when growing)."""
    width = height if width is None else width
    if image.shape[:2] == (height, width):
        return image.copy()
    shrinking = height < image.shape[0]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize((width, height), resample), dtype=np.uint8).copy()


def fit_frame(image: np.ndarray, width: int, height: int, fill: int = 255) -> np.ndarray:
    """Resize keeping the aspect ratio to fit ``width`` x ``height``, centred on a ``fill`` background."""
    in_h, in_w = image.shape[:2]
    scale = min(width / in_w, height / in_h)
    new_h, new_w = min(height, max(1, round(in_h * scale))), min(width, max(1, round(in_w * scale)))
    inner = resize(image, new_h, new_w)
    out = np.full((height, width, 3), fill, dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = inner
    return out


def fit_square(image: np.ndarray, size: int, fill: int = 255) -> np.ndarray:
    """Resize keeping the aspect ratio so the long side is ``size``, centred on a ``fill`` square."""
    return fit_frame(image, size, size, fill)


def side_by_side(images: list[np.ndarray], gap: int = 4, fill: int = 128) -> np.ndarray:
    """Concatenate same-height images horizontally with a ``gap``-pixel separator."""
    height = max(im.shape[0] for im in images)
    parts: list[np.ndarray] = []
    for i, im in enumerate(images):
        if i:
            parts.append(np.full((height, gap, 3), fill, dtype=np.uint8))
        if im.shape[0] < height:
            pad = np.full((height - im.shape[0], im.shape[1], 3), fill, dtype=np.uint8)
            im = np.concatenate([im, pad], axis=0)
        parts.append(im)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font (no system font needed)."""
    return ImageFont.load_default(size=size)


def draw_text_boxes(image: np.ndarray, labels: list[tuple[int, int, str]], size: int) -> np.ndarray:
    """Draw each ``(x, y, text)`` label on a white box with a black border; returns a new array."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    fnt = font(size)
    for x, y, text in labels:
        left, top, right, bottom = draw.textbbox((x, y), text, font=fnt)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(255, 255, 255), outline=(0, 0, 0))
        draw.text((x, y), text, fill=(0, 0, 0), font=fnt)
    return np.asarray(pil, dtype=np.uint8).copy()
