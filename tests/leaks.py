"""The ID and phone numbers the tests used, and a search for them in clear text.

``tests/platform.py`` remembers every number it makes (``new_id_number``,
``new_mobile``), and a test that types a number in another spelling (``+86``, spaces,
full-width digits) remembers that spelling too. ``tests/test_at_rest.py`` then looks for
all of them in every table of the test databases (the run's own and the scale-out
tests'), and ``tests/conftest.py`` in the output of every test (the log lines the
platform wrote while the test ran).

A text is searched as a person would read it: full-width digits count as digits, and a
number counts wherever its digits stand in a longer run of digits (``+8613800138000``
holds ``13800138000``). A spelling that is not plain digits is also searched as typed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg

# Canonical numbers: 11-digit mobile numbers and 18-character ID numbers (X upper-case).
NUMBERS: set[str] = set()
# Other spellings the tests typed, searched literally.
SPELLINGS: set[str] = set()
# Where a number was found in clear, with the numbers masked: (where, [masked, ...]).
FOUND: list[tuple[str, list[str]]] = []
# How much was searched, so that a search of nothing cannot pass.
SEARCHED: Counter[str] = Counter()
# Whether this process collected tests/test_at_rest.py, and ran its search already.
AT_REST = {"collected": False, "ran": False}
# Databases of this process besides the run's own, while they exist (the scale-out
# tests' database behind PgBouncer), each by a DSN that reaches PostgreSQL directly.
DATABASES: set[str] = set()

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


async def search_database(database_url: str) -> None:
    """Search every column of every table of a database (public schema): text and json
    columns as text, bytea as raw bytes, anything else in its text form."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = [r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1")]
        for table in tables:
            columns = await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                table)
            # Everything but bytea as the server writes it as text; bytea as bytes.
            select = ", ".join(
                f'"{c["column_name"]}"' if c["data_type"] == "bytea"
                else f'"{c["column_name"]}"::text' for c in columns)
            for row in await conn.fetch(f'SELECT {select} FROM "{table}"'):
                SEARCHED["rows"] += 1
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    text = value.decode("latin-1") if isinstance(value, bytes) else value
                    search(f"table {table}, column {column['column_name']}", text, "values")
    finally:
        await conn.close()


# -- many processes (pytest-xdist): each searches its own, one test reads them all ------
#
# Each worker process has its own database, log lines and Redis prefix. A worker that did
# not run tests/test_at_rest.py searches its database as its session ends and leaves what
# it found and how much it searched in a file of the run's shared folder; the worker that
# runs the test searches its own and waits for those files. The test is the last one
# handed out, so every other worker is told to stop once it has it: they all end.


def worker() -> tuple[str, int]:
    """This process's pytest-xdist worker name and the number of workers ("", 1 alone)."""
    return (os.environ.get("PYTEST_XDIST_WORKER", ""),
            int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def leave_for_the_search(folder: Path) -> None:
    """Write what this worker found and searched for the worker running the test."""
    name, _ = worker()
    folder.mkdir(parents=True, exist_ok=True)
    searched = {k: v for k, v in SEARCHED.items() if k != "platform tests collected"}
    part = folder / f"{name}.json.part"
    part.write_text(json.dumps({"found": FOUND, "searched": searched,
                                "numbers": len(NUMBERS)}), encoding="utf-8")
    part.rename(folder / f"{name}.json")


async def gather_the_others(folder: Path) -> tuple[list[tuple[str, list[str]]], Counter[str]]:
    """Wait for every other worker's file (as long as the caller lets it); return this
    process's findings and counts with theirs added (``numbers``: how many numbers were
    searched for in all)."""
    name, count = worker()
    found = list(FOUND)
    searched = Counter({**SEARCHED, "numbers": len(NUMBERS)})
    others = {f"gw{i}" for i in range(count)} - {name} if name else set()
    while others:
        for other in sorted(others):
            path = folder / f"{other}.json"
            if path.exists():
                data = json.loads(path.read_text(encoding="utf-8"))
                found += [(where, list(numbers)) for where, numbers in data["found"]]
                searched.update({**data["searched"], "numbers": data["numbers"]})
                others.discard(other)
        if others:
            await asyncio.sleep(0.2)
    return found, searched
