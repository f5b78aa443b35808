"""Clocks the composition root can inject."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta


class OffsetFileClock:
    """Real time plus an offset (seconds) read from a file: for tests across processes.

    Several server processes share one notion of "now" that a test moves forward by
    writing a number to the file; never used unless CLOCK_FILE is set.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime: float | None = None
        self._offset = timedelta()

    def now(self) -> datetime:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return datetime.now(UTC)
        if mtime != self._mtime:
            self._mtime = mtime
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read().strip()
            self._offset = timedelta(seconds=float(text or 0))
        return datetime.now(UTC) + self._offset
