"""Fast JSON for bodies and columns; the hashed form stays :mod:`engine.canonical`.

orjson encodes and parses several times faster than the standard library. It is used
where only the *values* matter: HTTP bodies, and the text of ``json`` columns (hashes
are taken over the canonical form of the values read back, never over these bytes).

- :func:`dumps` falls back to the standard library for what orjson refuses (integers
  beyond 64 bits, non-string keys), so anything the standard library can write is
  still written, compact and UTF-8.
- :func:`loads_body` is for what clients send: strict RFC 8259. ``NaN``, ``Infinity``,
  numbers that overflow a double, invalid UTF-8 and lone surrogates are refused.
  orjson reads integers beyond 64 bits as floats, so a huge integer fails an
  ``integer`` field's check instead of being stored.

Columns are read back with :func:`loads_column`: the values :func:`json.loads` gives
(every integer exactly, so values written before, of any size, come back as they were
hashed), with orjson's speed wherever orjson reads the same.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_FALLBACK = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError included
        return _FALLBACK.encode(value).encode("utf-8")


def dumps_text(value: Any) -> str:
    """Compact JSON as text (what a ``json`` column's codec hands to the driver)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return _FALLBACK.encode(value)


def loads_body(data: bytes | str) -> Any:
    """Parse a client's JSON strictly; raises :data:`JSONDecodeError` (a ValueError)."""
    return orjson.loads(data)


# A run of 19 digits may be an integer beyond 64 bits, which orjson would read as a float.
_LONG_DIGITS = re.compile(r"\d{19}")


def loads_column(text: str) -> Any:
    """Parse a ``json`` column's text into exactly what :func:`json.loads` gives.

    orjson where it reads the same values (it parses floats to the same doubles, and a
    repeated key keeps its last value, as the standard library does); the standard
    library for text with a run of 19 digits (an integer orjson would read as a float)
    and for whatever orjson refuses (``NaN``, overflowing numbers, lone surrogates).
    """
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)
