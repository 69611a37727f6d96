"""Text spaces and the character set every text observation stays inside.

``gymnasium.spaces.Text`` checks each character against its charset (alphanumeric by default), so
prompts with punctuation, newlines or the odd typographic character would fail ``check_env``. Every
visrl text space uses :data:`CHARSET`, and every text the env emits goes through :func:`to_charset`.
Agents may send anything: actions are parsed, never checked against the action space's charset.
"""

from __future__ import annotations

from gymnasium import spaces

_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))
_LATIN1 = "".join(chr(c) for c in range(0xA0, 0x100))
_TYPOGRAPHY = "–—‘’‚“”„…•·×÷±≤≥≠≈→←↑↓∞°µ€£¥§¶©®™"
CHARSET: str = "\n\t" + _ASCII + _LATIN1 + _TYPOGRAPHY
_CHARSET_SET = frozenset(CHARSET)

#: Longest text observation an env emits (characters).
MAX_OBSERVATION_TEXT = 8192
#: Longest action text the action space advertises; longer actions are still parsed or rejected clearly.
MAX_ACTION_TEXT = 65536
#: Longest action text parsed at all; longer text is an action error before any parsing.
MAX_ACTION_CHARS = 1 << 20


class CharsetText(spaces.Text):
    """A ``Text`` space over :data:`CHARSET`; :mod:`visrl_envs.core.spaces` gives it a shared-memory
    reader that ``AsyncVectorEnv`` can use (Gymnasium's reads ``Text`` once, at construction)."""


def text_space(max_length: int) -> CharsetText:
    """A ``Text`` space over :data:`CHARSET` (empty strings allowed)."""
    return CharsetText(max_length=max_length, min_length=0, charset=CHARSET)


def to_charset(text: str, max_length: int = MAX_OBSERVATION_TEXT) -> str:
    """Map characters outside :data:`CHARSET` to ``?`` and cut to ``max_length`` (marking the cut)."""
    if not _CHARSET_SET.issuperset(text):
        text = "".join(ch if ch in _CHARSET_SET else "?" for ch in text)
    if len(text) > max_length:
        marker = "... [cut]"
        text = text[: max_length - len(marker)] + marker
    return text


def quote(text: str, limit: int = 80) -> str:
    """A short, charset-safe excerpt of agent text for an error message."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 3] + "..."
    return to_charset(repr(flat))
