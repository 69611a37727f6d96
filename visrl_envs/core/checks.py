"""Constructor arguments, checked one way everywhere: a type check, a bound and a message naming
the argument, what it accepts and what it got. Wrong types raise ``TypeError``, wrong values
``ValueError``; both say the same thing, so a user reads one line and knows what to change."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

#: Image side lengths every image env accepts: >= 64 px (SB3's NatureCNN needs at least 36; the
#: README promises 64) and <= 2048 px (larger frames cost gigabytes per vector env).
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 64, 2048


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` within ``[low, high]`` (bools and non-integral floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer{_range(low, high)}, got {_got(value)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer{_range(low, high)}, got {value}")
    return value


def number(
    name: str, value: Any, low: float | None = None, high: float | None = None, *, open_high: bool = False
) -> float:
    """``value`` as a finite ``float`` within ``[low, high]`` (``[low, high)`` with ``open_high``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number{_range(low, high, open_high)}, got {_got(value)}")
    value = float(value)
    too_high = high is not None and (value >= high if open_high else value > high)
    if not math.isfinite(value) or (low is not None and value < low) or too_high:
        raise ValueError(f"{name} must be a number{_range(low, high, open_high)}, got {value}")
    return value


def choice(name: str, value: Any, options: Collection[T]) -> T:
    """``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}, got {_got(value)}")
    return value  # type: ignore[no-any-return]


def flag(name: str, value: Any) -> bool:
    """A ``bool`` (not a truthy string like ``"False"``)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {_got(value)}")
    return bool(value)


def function(name: str, value: Any) -> Callable[..., Any]:
    """A callable (a string naming a function is refused: pass the function itself)."""
    if not callable(value):
        raise TypeError(f"{name} must be a callable, got {_got(value)} of type {type(value).__name__}")
    return value  # type: ignore[no-any-return]


def image_side(name: str, value: Any) -> int:
    """An image side length in ``[MIN_IMAGE_SIDE, MAX_IMAGE_SIDE]`` px."""
    return integer(name, value, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE)


def _range(low: float | None, high: float | None, open_high: bool = False) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" >= {low:g}" if isinstance(low, float) else f" >= {low}"
    if low is None:
        return f" <= {high}"
    return f" in [{low}, {high}{')' if open_high else ']'}"
