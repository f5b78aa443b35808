"""No ID or phone number the tests used is anywhere in clear, after all of them ran.

Every number ``tests/platform.py`` made (``new_id_number``, ``new_mobile``) and every
other spelling a test typed (``mobile_spellings``, ``id_spellings``) is looked for
(tests/leaks.py), as a person would read it, in:

- every column of every table of the suite's databases (public schema: the run's own
  and the one the scale-out tests reach through PgBouncer), after every other test:
  ``after_everything`` makes this test the last one. Text and json columns
  as text, bytea as raw bytes, anything else in its text form;
- every log line the platform rendered in this process, in the JSON format production
  uses, at every level (a structlog processor after the renderer, tests/conftest.py),
  and everything any test wrote to the captured stdout and stderr, console-format lines
  and stdlib logging included;
- every Redis value a platform test left behind, searched as the test ends.

Run on many processes (``pytest -n``, as ``make test`` does), each worker searches its
own database, log lines and Redis keys, and this test adds up what all of them found and
searched (tests/leaks.py).

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

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests import leaks

pytestmark = pytest.mark.after_everything

# Fewer of the platform's tests than this: too little to search (skipped).
MIN_PLATFORM_TESTS = 20
# What the search must at least have seen per platform test collected: a fraction of
# what they make and write (about 10 numbers, 20 rows, 50 log lines and 7 Redis keys).
PER_PLATFORM_TEST = {"numbers": 2, "rows": 5, "log lines": 10, "redis keys": 2}


async def test_no_id_or_phone_number_is_stored_or_logged_in_clear(
        database_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    if leaks.SEARCHED["platform tests collected"] < MIN_PLATFORM_TESTS:
        pytest.skip("searches what the platform's tests leave: run it with them")
    leaks.AT_REST["ran"] = True
    # The run's database, and this process's others (the scale-out tests', while its
    # session lasts); other workers search theirs as their sessions end.
    for dsn in [database_url, *sorted(leaks.DATABASES)]:
        await leaks.search_database(dsn)
    # With pytest-xdist, the other workers' searches (tests/leaks.py) are added.
    async with asyncio.timeout(240):
        found, searched = await leaks.gather_the_others(
            tmp_path_factory.getbasetemp().parent / "at-rest")
    listed = "\n".join(f"{where}: {', '.join(numbers)}" for where, numbers in found)
    assert not found, f"numbers in clear:\n{listed}"
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


async def test_a_worker_adds_what_the_other_workers_searched_and_waits_for_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def as_worker(name: str, count: int, found: list[tuple[str, list[str]]],
                  searched: dict[str, int], numbers: set[str]) -> None:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", name)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))
        monkeypatch.setattr(leaks, "FOUND", found)
        monkeypatch.setattr(leaks, "SEARCHED", Counter(searched))
        monkeypatch.setattr(leaks, "NUMBERS", numbers)

    # Every worker collects every test: the count is not added up.
    as_worker("gw1", 2, [("a log line of t", ["139******01"])],
              {"rows": 5, "platform tests collected": 9}, {"13912340001"})
    leaks.leave_for_the_search(tmp_path)
    as_worker("gw0", 2, [], {"rows": 3, "platform tests collected": 9}, {"1", "2"})
    found, searched = await leaks.gather_the_others(tmp_path)
    assert found == [("a log line of t", ["139******01"])]
    assert searched == Counter({"rows": 8, "platform tests collected": 9, "numbers": 3})

    # A third worker that never leaves its file: the search waits for it.
    as_worker("gw0", 3, [], {}, set())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await leaks.gather_the_others(tmp_path)
