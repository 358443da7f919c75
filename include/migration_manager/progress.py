"""Progress lines for long tables, at a steady interval (``MM_PROGRESS_SECONDS``, default 10)."""

from __future__ import annotations

import logging
import os
import time


class Progress:
    """Counts bytes of a COPY stream and logs rows so far / expected and the rate.

    Rows in a binary COPY stream are not counted one by one (that would cost a parse of every
    row); the count is estimated from bytes, using the expected rows and bytes when known.
    """

    def __init__(
        self,
        what: str,
        expected_rows: int,
        logger: logging.Logger,
        *,
        expected_bytes: int | None = None,
        interval: float | None = None,
    ):
        self.what = what
        self.expected_rows = max(int(expected_rows or 0), 0)
        self.expected_bytes = expected_bytes
        self.log = logger
        self.interval = (
            interval if interval is not None else float(os.environ.get("MM_PROGRESS_SECONDS", "10"))
        )
        self.started = self.last = time.monotonic()
        self.bytes = 0

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._report(now)

    def _report(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        mb = self.bytes / 1e6
        if self.expected_bytes and self.expected_rows:
            rows = int(self.expected_rows * min(self.bytes / self.expected_bytes, 1.0))
            self.log.info(
                "%s: ~%d / %d rows (%.0f%%), %.0f rows/s, %.1f MB/s",
                self.what,
                rows,
                self.expected_rows,
                100.0 * rows / self.expected_rows,
                rows / elapsed,
                mb / elapsed,
            )
        else:
            self.log.info(
                "%s: %.1f MB so far (about %d rows expected), %.1f MB/s",
                self.what,
                mb,
                self.expected_rows,
                mb / elapsed,
            )

    def done(self, rows: int | None = None) -> float:
        seconds = time.monotonic() - self.started
        if seconds >= self.interval:
            self.log.info(
                "%s: done, %s rows, %.1f MB in %.1f s",
                self.what,
                rows if rows is not None else "?",
                self.bytes / 1e6,
                seconds,
            )
        return seconds
