"""The web client's texts: times as a person on the mainland reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from web.client.messages import local_time


def test_times_are_shown_in_beijing_time_to_the_minute() -> None:
    assert local_time("2026-03-01T09:00:00+00:00") == "2026-03-01 17:00"
    assert local_time("2026-03-01T20:30:59.999999+00:00") == "2026-03-02 04:30"
    assert local_time(datetime(2026, 3, 1, 9, 0, tzinfo=UTC)) == "2026-03-01 17:00"
    # Another zone's time is the same instant; one without a zone is UTC.
    assert local_time(datetime(2026, 3, 1, 4, 0, tzinfo=timezone(timedelta(hours=-5)))) \
        == "2026-03-01 17:00"
    assert local_time("2026-03-01T09:00:00") == "2026-03-01 17:00"
    assert local_time(None) == local_time("") == ""
