"""Durations as analysts write them: ``72h``, ``3d``, ``1h30m``, ``90s``."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

_PART = re.compile(r"(\d+)\s*([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: object) -> timedelta:
    """Parse a duration such as ``72h`` or ``1d12h``; raise ValueError otherwise."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"a duration such as '72h' or '15m' is expected, not {text!r}")
    if isinstance(text, int):
        raise ValueError(f"a duration needs a unit (d, h, m, s): '{text}s'?")
    return _parsed(text)


# Guards read their policies from the pinned mappings at every step, and so at every
# event an audit replays: the few texts a file has, each parsed once.
@lru_cache(maxsize=256)
def _parsed(text: str) -> timedelta:
    s = text.strip().replace(" ", "")
    pos = 0
    seconds = 0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        seconds += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"a duration such as '72h' or '15m' is expected, not {text!r}")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, not {text!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Write a duration back in the shortest ``1d2h3m4s`` form."""
    rest = int(value.total_seconds())
    out = []
    for unit, size in _UNITS.items():
        n, rest = divmod(rest, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0s"
