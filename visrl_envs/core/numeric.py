"""Validation of numeric actions, one helper per space kind (Discrete, MultiDiscrete, Box).

Numeric actions come from learned policies and user code, so they are checked like text: a wrong
shape, dtype, a NaN or a value out of bounds is an :class:`~visrl_envs.core.errors.ActionError`
with a readable message (the format penalty), never an exception out of ``step``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from visrl_envs.core.errors import ActionError


def discrete_action(space: spaces.Discrete, action: Any) -> int:
    """An integer in ``[start, start + n)``."""
    if type(action) is int or isinstance(action, np.integer):  # the common case, on the hot path
        k = int(action)
        if space.start <= k < space.start + space.n:
            return k
        raise ActionError(f"numeric action must be in [{int(space.start)}, {int(space.start + space.n)}), got {k}")
    if isinstance(action, bool | np.bool_):
        raise ActionError(f"numeric action must be an integer, got {action!r}")
    try:
        array = np.asarray(action)
    except (TypeError, ValueError):
        raise ActionError(f"numeric action must be one integer, got {_short(action)}") from None
    if array.size != 1 or array.ndim > 1 or array.dtype.kind not in "iu":
        if array.size == 1 and array.ndim <= 1 and array.dtype.kind == "f" and float(array.reshape(-1)[0]).is_integer():
            array = array.astype(np.int64)
        else:
            raise ActionError(f"numeric action must be one integer, got {_short(action)}")
    k = int(array.reshape(-1)[0])
    start, n = int(space.start), int(space.n)
    if not start <= k < start + n:
        raise ActionError(f"numeric action must be in [{start}, {start + n}), got {k}")
    return k


def multi_discrete_action(space: spaces.MultiDiscrete, action: Any) -> tuple[int, ...]:
    """A tuple of ``len(nvec)`` integers, each in ``[start_i, start_i + nvec_i)``."""
    try:
        values = np.asarray(action)
    except (TypeError, ValueError):
        raise ActionError(f"numeric action must be {space.nvec.size} integers, got {_short(action)}") from None
    if values.size != space.nvec.size or values.dtype.kind not in "iu":
        raise ActionError(f"numeric action must be {space.nvec.size} integers, got {_short(action)}")
    flat = values.reshape(-1).tolist()  # Python ints: cheaper to compare than numpy reductions at this size
    sizes = space.nvec.reshape(-1).tolist()
    starts = np.broadcast_to(space.start, space.nvec.shape).reshape(-1).tolist()
    if not all(s <= v < s + n for v, s, n in zip(flat, starts, sizes, strict=True)):
        raise ActionError(f"numeric action out of range: {flat} vs sizes {sizes}")
    return tuple(flat)


def box_action(space: spaces.Box, action: Any) -> np.ndarray:
    """A finite array of the box's shape inside its bounds, cast to its dtype (a fresh array)."""
    try:
        values = np.asarray(action)
    except (TypeError, ValueError):
        raise ActionError(f"numeric action must be an array of shape {space.shape}") from None
    if values.dtype.kind not in "iuf":
        raise ActionError(f"numeric action must hold numbers, got dtype {values.dtype}")
    if values.shape != space.shape:
        if values.size == int(np.prod(space.shape)) and values.ndim <= 1:
            values = values.reshape(space.shape)
        else:
            raise ActionError(f"numeric action must have shape {space.shape}, got {values.shape}")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ActionError("numeric action must be finite (no NaN or inf)")
    if np.any(values < space.low) or np.any(values > space.high):
        raise ActionError(f"numeric action out of bounds [{_short(space.low)}, {_short(space.high)}]: {_short(values)}")
    return values.astype(space.dtype, copy=True)


def validate_numeric(space: spaces.Space, action: Any) -> Any:
    """Dispatch on the space kind: int, tuple of ints, or array."""
    if isinstance(space, spaces.Discrete):
        return discrete_action(space, action)
    if isinstance(space, spaces.MultiDiscrete):
        return multi_discrete_action(space, action)
    if isinstance(space, spaces.Box):
        return box_action(space, action)
    raise TypeError(f"numeric action spaces are Discrete, MultiDiscrete or Box; got {space}")


def sample_numeric(space: spaces.Space, rng: np.random.Generator) -> Any:
    """A uniformly random action of ``space`` drawn from ``rng`` (not the space's own generator)."""
    if isinstance(space, spaces.Discrete):
        return np.int64(space.start + rng.integers(space.n))
    if isinstance(space, spaces.MultiDiscrete):
        return (space.start + (rng.random(space.nvec.shape) * space.nvec).astype(space.dtype)).astype(space.dtype)
    if isinstance(space, spaces.Box):
        return rng.uniform(space.low, space.high).astype(space.dtype)
    raise TypeError(f"numeric action spaces are Discrete, MultiDiscrete or Box; got {space}")


def _short(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else np.array2string(np.asarray(value), threshold=8, precision=4)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
