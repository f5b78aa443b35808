"""Clocks the composition root can inject."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta


class OffsetFileClock:
    """Real time plus an offset (seconds) read from a file: for tests across processes.

    Several server processes share one notion of "now" that a test moves forward by
    writing a number to the file; never used unless CLOCK_FILE is set.

    The file is read on every call. Caching it by modification time is not safe: the
    kernel stamps mtimes with a coarse clock, so two writes a few milliseconds apart can
    leave the same mtime and the second offset would never be seen. A file caught
    mid-write (empty or not a number) keeps the last offset instead of jumping back to
    real time.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = timedelta()

    def now(self) -> datetime:
        try:
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read().strip()
        except FileNotFoundError:
            self._offset = timedelta()
        else:
            # Empty or not a number: being rewritten, keep the offset last read.
            with contextlib.suppress(ValueError, OverflowError):
                self._offset = timedelta(seconds=float(text))
        return datetime.now(UTC) + self._offset
