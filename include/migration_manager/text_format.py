"""Times, durations, sizes and fixed-width tables as text: one home for the run log, the
summaries and the pages.

Times are stored as ISO 8601 text in UTC (:func:`utc_iso`) and shown as ``2026-11-26 12:00:00 UTC``
(:func:`when`) or ``12:00:00`` (:func:`clock`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB")


def utc_iso(value: datetime | str | None) -> str | None:
    """An aware datetime (or ISO text) as ISO 8601 in UTC, to the millisecond; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_time(value: str | None) -> datetime | None:
    """ISO text as a datetime; None (or empty text) stays None."""
    return datetime.fromisoformat(value) if value else None


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO time to another (never negative); None when either is unknown."""
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return None
    return round(max((b - a).total_seconds(), 0.0), 3)


def when(value: datetime | str | float | None) -> str:
    """A time (datetime, ISO text or epoch seconds) as ``2026-11-26 12:00:00 UTC``; ``-`` when unknown."""
    if value is None or value == "":
        return "-"
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(value: str | None) -> str:
    """The time of day of an ISO time (``12:00:00``); ``-`` when unknown."""
    parsed = parse_time(value)
    return parsed.strftime("%H:%M:%S") if parsed else "-"


def duration(value: object, *, fine: bool = False) -> str:
    """Seconds as ``8.0 s``, ``2 min 05 s`` or ``1 h 02 min``; ``-`` when not a number.

    ``fine`` shows durations under 10 s to the hundredth (``1.23 s``), as the timeline does.
    """
    if not isinstance(value, (int, float)):
        return "-"
    if fine and value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(value: object) -> str:
    """Bytes as ``512 B``, ``97.7 KB``, ``1.2 GB``; ``-`` when not a number."""
    if not isinstance(value, (int, float)):
        return "-"
    amount = float(value)
    for unit in _SIZE_UNITS:
        if amount < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} {_SIZE_UNITS[-1]}"


def text_table(rows: Sequence[Sequence[str]], left: int, *, left_last: bool = False) -> list[str]:
    """Rows as fixed-width lines, columns two spaces apart: the first ``left`` columns (and, with
    ``left_last``, the last) left-aligned, the others right-aligned; no trailing blanks."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1 if left_last else -1
    return [
        "  ".join(
            c.ljust(w) if i < left or i == last else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
