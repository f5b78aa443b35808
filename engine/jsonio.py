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
hashed), with orjson's speed wherever orjson reads the same. For what orjson read in bulk (the
audit's pages), :func:`read_as_standard` tells from orjson's output whether it is what
the standard library reads, and :func:`same_as_canonical` whether that output is also
the canonical form (the audit hashes over it).
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


# Where orjson's output of values it read may differ from the canonical form of what the
# standard library reads: an exponent (a float of 1e16 or more, which may be an integer
# beyond 64 bits that orjson read as a float; or a one-digit negative one, which the
# standard library writes with two digits), or a fixed "0.0000..." (the standard library
# writes an exponent). Each place is found with bytes.find, several times faster than
# a regular expression over the same text, then looked at closely: in an id
# ("…6b1e-4c55…") or a time ("09:00:00.000001") it is no number.
_DIGITS = frozenset(b"0123456789")
_MANTISSA = frozenset(b"0123456789.")
_BEFORE_NUMBER = frozenset(b":,[")


def read_as_standard(text: bytes) -> bool:
    """Whether the values orjson read, of which ``text`` is orjson's output, are exactly
    what :func:`json.loads` reads from the text they were read from.

    They are (of JSON's own types, every float finite) but for an integer beyond 64
    bits, which orjson reads as a float of 9.2e18 or more, and writes with an exponent
    (``1.8446744073709552e+19``). So yes unless ``text`` has a positive exponent.
    """
    at = text.find(b"e+")
    while at >= 0:
        if text[at + 2:at + 3] and text[at + 2] in _DIGITS and _in_number(text, at):
            return False
        at = text.find(b"e+", at + 2)
    return True


def same_as_canonical(text: bytes) -> bool:
    """Whether ``text``, orjson's compact output of values that orjson read, is exactly
    the canonical form (:func:`engine.canonical.canonical_json`, as UTF-8) of the values
    :func:`json.loads` reads from the text they were read from, once its keys are sorted
    (sorting moves no number, nor changes how one is written).

    :func:`read_as_standard`, and orjson writes them as the standard library does but
    for floats below 1e-4 (``0.00001`` and ``1e-7`` where it writes ``1e-05`` and
    ``1e-07``; tests/engine/test_jsonio.py checks the rest over random values). So yes
    unless the text has a number with a positive exponent, a one-digit negative one, or
    ``0.0000``.
    """
    # The audit asks this of every history, whose ids and sealed values hold many an
    # "e-" that is no number: one loop here, no call a place (a third of the cost).
    find, end = text.find, len(text)
    for mark, one_digit in ((b"e+", False), (b"e-", True)):
        at = find(mark)
        while at >= 0:
            digit = at + 2
            if digit < end and text[digit] in _DIGITS \
                    and not (one_digit and digit + 1 < end and text[digit + 1] in _DIGITS):
                # Whether the "e" ends the mantissa (digits, a point) of a number.
                start = at
                while start and text[start - 1] in _MANTISSA:
                    start -= 1
                if start < at:
                    if start and text[start - 1] == 0x2D:  # "-"
                        start -= 1
                    if not start or text[start - 1] in _BEFORE_NUMBER:
                        return False
            at = find(mark, digit)
    at = find(b"0.0000")
    while at >= 0:
        # A number's first digit; after a digit (a time's "00.000001") none.
        if _starts_number(text, at):
            return False
        at = find(b"0.0000", at + 1)
    return True


def _in_number(text: bytes, exponent: int) -> bool:
    """Whether the "e" at ``exponent`` ends the mantissa of a number."""
    start = exponent
    while start and text[start - 1] in _MANTISSA:
        start -= 1
    return start < exponent and _starts_number(text, start)


def _starts_number(text: bytes, start: int) -> bool:
    """Whether a JSON number may start at ``start`` (or at the minus sign before it)."""
    if start and text[start - 1] == 0x2D:  # "-": a negative number, or a string's dash
        start -= 1
    return not start or text[start - 1] in _BEFORE_NUMBER
