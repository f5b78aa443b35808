"""The ID and phone numbers the tests used, and a search for them in clear text.

``tests/platform.py`` remembers every number it makes (``new_id_number``,
``new_mobile``), and a test that types a number in another spelling (``+86``, spaces,
full-width digits) remembers that spelling too. ``tests/test_at_rest.py`` then looks for
all of them in every table of the test database, and ``tests/conftest.py`` in the output
of every test (the log lines the platform wrote while the test ran).

A text is searched as a person would read it: full-width digits count as digits, and a
number counts wherever its digits stand in a longer run of digits (``+8613800138000``
holds ``13800138000``). A spelling that is not plain digits is also searched as typed.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

# Canonical numbers: 11-digit mobile numbers and 18-character ID numbers (X upper-case).
NUMBERS: set[str] = set()
# Other spellings the tests typed, searched literally.
SPELLINGS: set[str] = set()
# Where a number was found in clear, with the numbers masked: (where, [masked, ...]).
FOUND: list[tuple[str, list[str]]] = []
# How much was searched, so that a search of nothing cannot pass.
SEARCHED: Counter[str] = Counter()

_FULL_WIDTH_DIGITS = {cp: cp - 0xFEE0 for cp in range(0xFF10, 0xFF1A)} | {0xFF38: "X",
                                                                            0xFF58: "x"}
_RUN = re.compile(r"[0-9]{11,}[Xx]?")
_LENGTHS = (11, 18)


def remember(number: str, *spellings: str) -> str:
    """Remember a number the tests use (and how else they type it); return the number."""
    NUMBERS.add(number.upper())
    SPELLINGS.update(s for s in spellings if s != number)
    return number


def find(text: str) -> set[str]:
    """The remembered numbers (and spellings) that ``text`` holds in clear."""
    found: set[str] = set()
    plain = text.translate(_FULL_WIDTH_DIGITS)
    for run in _RUN.findall(plain):
        run = run.upper()
        for length in _LENGTHS:
            for start in range(len(run) - length + 1):
                piece = run[start:start + length]
                if piece in NUMBERS:
                    found.add(piece)
    found.update(s for s in SPELLINGS if s in text)
    return found


def masked(numbers: Iterable[str]) -> list[str]:
    """Show found numbers as a report may: first 3 and last 2 characters."""
    return sorted(n[:3] + "*" * (len(n) - 5) + n[-2:] if len(n) > 6 else "*" * len(n)
                  for n in numbers)


def search(where: str, text: str, kind: str) -> None:
    """Search ``text`` (from ``where``), counting it as one ``kind`` searched."""
    SEARCHED[kind] += 1
    found = find(text)
    if found:
        FOUND.append((where, masked(found)))


def tee(_: Any, __: str, rendered: Any) -> Any:
    """structlog processor, after the renderer: search every line the platform logs."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "no test").rsplit(" ", 1)[0]
    search(f"a log line of {test}", rendered if isinstance(rendered, str) else repr(rendered),
           "log lines")
    return rendered
