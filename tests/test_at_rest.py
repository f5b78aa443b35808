"""No ID or phone number the tests used is anywhere in clear, after all of them ran.

Every number ``tests/platform.py`` made (``new_id_number``, ``new_mobile``) and every
other spelling a test typed (``mobile_spellings``, ``id_spellings``) is looked for
(tests/leaks.py), as a person would read it, in:

- every column of every table of the suite's database (public schema), after every
  other test: ``after_everything`` makes this test the last one. Text and json columns
  as text, bytea as raw bytes, anything else in its text form;
- every log line the platform rendered in this process, in the JSON format production
  uses, at every level (a structlog processor after the renderer, tests/conftest.py),
  and everything any test wrote to the captured stdout and stderr, console-format lines
  and stdlib logging included;
- every Redis value a platform test left behind, searched as the test ends.

Left out, on purpose: the sandbox providers' own Redis keys (``sandbox:``: the SMS
inbox, face sessions, real-name pairs), whose whole point is to show phone and ID
numbers on the development pages; and the output of server subprocesses, which the
tests that start them read themselves.

Run alone, or with too few of the platform's tests to mean anything, it is skipped;
otherwise it fails when it searched less than those tests write (numbers, rows, log
lines and Redis keys, per platform test collected): it cannot pass by finding nothing
to search.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests import leaks

pytestmark = pytest.mark.after_everything

# Fewer of the platform's tests than this: too little to search (skipped).
MIN_PLATFORM_TESTS = 20
# What the search must at least have seen per platform test collected: a fraction of
# what they make and write (about 10 numbers, 20 rows, 50 log lines and 7 Redis keys).
PER_PLATFORM_TEST = {"numbers": 2, "rows": 5, "log lines": 10, "redis keys": 2}


async def _search_database(database_url: str) -> None:
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
                leaks.SEARCHED["rows"] += 1
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    text = value.decode("latin-1") if isinstance(value, bytes) else value
                    leaks.search(f"table {table}, column {column['column_name']}", text,
                                 "values")
    finally:
        await conn.close()


async def test_no_id_or_phone_number_is_stored_or_logged_in_clear(database_url: str) -> None:
    if leaks.SEARCHED["platform tests collected"] < MIN_PLATFORM_TESTS:
        pytest.skip("searches what the platform's tests leave: run it with them")
    await _search_database(database_url)
    found = "\n".join(f"{where}: {', '.join(numbers)}" for where, numbers in leaks.FOUND)
    assert not leaks.FOUND, f"numbers in clear:\n{found}"
    searched = {**leaks.SEARCHED, "numbers": len(leaks.NUMBERS)}
    tests = searched["platform tests collected"]
    for what, per_test in PER_PLATFORM_TEST.items():
        assert searched.get(what, 0) >= per_test * tests, (what, searched)


def test_the_search_finds_every_spelling_as_a_person_reads_it() -> None:
    phone, id_number = "13912345678", "11010519491231002X"
    leaks.remember(phone, "139 1234 5678")
    leaks.remember(id_number)
    texts = {
        '{"mobile":"13912345678"}': {phone},
        "+8613912345678": {phone},
        "１３９１２３４５６７８": {phone},
        "call 139 1234 5678 now": {"139 1234 5678"},
        "id=11010519491231002x;": {id_number},
        "139123456780000": {phone},
        "1391234567": set(),
        "138****5678 and 110***********002X": set(),
    }
    try:
        for text, expected in texts.items():
            assert leaks.find(text) == expected, text
        assert leaks.masked([phone, id_number]) == ["110*************2X", "139******78"]
    finally:
        leaks.NUMBERS.difference_update({phone, id_number})
        leaks.SPELLINGS.discard("139 1234 5678")
