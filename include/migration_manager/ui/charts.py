"""The run's process as an SVG timeline (a Gantt chart), rendered on the server: no script needed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from migration_manager.run_record import StepRecord
from migration_manager.text_format import duration, parse_time

COLORS = {
    "success": "#2b8a3e",
    "failed": "#c92a2a",
    "upstream_failed": "#e8590c",
    "up_for_retry": "#f59f00",
    "skipped": "#adb5bd",
    "running": "#1971c2",
    "deferred": "#7048e8",
    "awaiting_input": "#7048e8",
}
OTHER = "#868e96"
STATUS_TEXT = {
    "upstream_failed": "did not run: an upstream step failed",
    "skipped": "skipped",
    "removed": "removed",
}

WIDTH = 980
RIGHT = 96
CHAR = 7.6  # width of one character of the labels' monospace font at 12.5px
MAX_LABEL_CHARS = 40
ROW = 28
BAR = 16
TOP = 34


def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL_CHARS else name[: MAX_LABEL_CHARS - 1] + "…"


def _nice_step(span: float, ticks: int = 6) -> float:
    """A round tick interval (1, 2, 5 x 10^n seconds) giving about ``ticks`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return float(m * power)
    return float(10 * power)


def _tick_label(s: float) -> str:
    if s >= 120:
        return f"{s / 60:g} min"
    return f"{s:g} s"


_SEVERITY = ("failed", "upstream_failed", "up_for_retry", "running", "success", "skipped")


@dataclass(frozen=True)
class Bar:
    """One row of the timeline: a step, or a mapped task's map indexes together."""

    name: str
    status: str
    start: str | None = None
    end: str | None = None
    attempt: int | None = None
    suffix: str = ""

    @classmethod
    def of(cls, step: StepRecord) -> Bar:
        return cls(step.name or step.task_id, step.status, step.start, step.end, step.attempt)


def collapse(steps: Sequence[StepRecord], *, limit: int = 24) -> list[Bar]:
    """One bar per step; with more than ``limit`` steps, each mapped task becomes one bar
    spanning all its map indexes.

    The bar's status is its worst map index's; its name says how many there are.
    """
    if len(steps) <= limit:
        return [Bar.of(s) for s in steps]
    order: list[StepRecord | str] = []  # a step, or the task id of a group of map indexes
    groups: dict[str, list[StepRecord]] = {}
    for step in steps:
        if step.map_index < 0:
            order.append(step)
            continue
        if step.task_id not in groups:
            groups[step.task_id] = []
            order.append(step.task_id)
        groups[step.task_id].append(step)
    bars: list[Bar] = []
    for item in order:
        if not isinstance(item, str):
            bars.append(Bar.of(item))
            continue
        members = groups[item]
        statuses = [m.status for m in members]
        worst = min(statuses, key=lambda s: _SEVERITY.index(s) if s in _SEVERITY else 2)
        starts = [m.start for m in members if m.start]
        ends = [m.end for m in members if m.end]
        failed = sum(1 for st in statuses if st == "failed")
        bars.append(
            Bar(
                name=f"{item} × {len(members)}",
                status=worst,
                start=min(starts) if starts else None,
                end=max(ends) if ends else None,
                attempt=max((m.attempt or 1 for m in members), default=None),
                suffix=f"{len(members)} tasks" + (f", {failed} failed" if failed else ""),
            )
        )
    return bars


def timeline_svg(steps: Sequence[Bar], *, title: str = "Process") -> str:
    """One row per step: a bar from its start to its end, coloured by status, with its duration.

    Steps that never ran (upstream failed, skipped before starting) get a row with the reason.
    """
    times = [(parse_time(s.start), parse_time(s.end)) for s in steps]
    starts = [a for a, _ in times if a]
    ends = [b for _, b in times if b] + starts
    height = TOP + ROW * max(len(steps), 1) + 12
    names = [_short(s.name) for s in steps]
    label_w = int(min(max((max((len(n) for n in names), default=8) * CHAR) + 24, 120), 360))
    parts = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    if not steps:
        parts.append(f'<text x="16" y="{TOP}" class="tl-none">No step was recorded.</text></svg>')
        return "".join(parts)
    origin = min(starts) if starts else None
    span = max((max(ends) - origin).total_seconds(), 0.001) if origin and ends else 1.0
    plot = WIDTH - label_w - RIGHT
    tick = _nice_step(span)
    scale = plot / (math.ceil(span / tick) * tick)

    # axis and grid
    n = 0
    while n * tick <= span + 1e-9 or n == 0:
        x = label_w + n * tick * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{height - 8}" class="tl-grid"/>'
            f'<text x="{x:.1f}" y="{TOP - 14}" class="tl-tick" text-anchor="middle">'
            f"{_tick_label(n * tick)}</text>"
        )
        n += 1

    for i, (step, (start, end)) in enumerate(zip(steps, times, strict=True)):
        y = TOP + i * ROW
        status = step.status or "unknown"
        name = escape(names[i])
        color = COLORS.get(status, OTHER)
        if i % 2 == 0:
            parts.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{ROW}" class="tl-stripe"/>')
        parts.append(
            f'<text x="{label_w - 12}" y="{y + ROW / 2 + 4:.1f}" class="tl-label" '
            f'text-anchor="end">{name}</text>'
        )
        if start is None or origin is None:
            reason = STATUS_TEXT.get(status, status.replace("_", " "))
            parts.append(
                f'<circle cx="{label_w + 5}" cy="{y + ROW / 2:.1f}" r="4" fill="none" '
                f'stroke="{color}" stroke-width="2"/>'
                f'<text x="{label_w + 16}" y="{y + ROW / 2 + 4:.1f}" class="tl-reason">'
                f"{escape(reason)}</text>"
            )
            continue
        stop = end or start
        x0 = label_w + (start - origin).total_seconds() * scale
        w = max((stop - start).total_seconds() * scale, 3.0)
        seconds = (stop - start).total_seconds()
        attempt = step.attempt
        tip = (
            f"{step.name}: {status}, {duration(seconds, fine=True)}"
            + (f", attempt {attempt}" if attempt else "")
            + f", {start.strftime('%H:%M:%S')}–{stop.strftime('%H:%M:%S')} UTC"
        )
        text = duration(seconds, fine=True) + (
            f" · try {attempt}" if attempt and attempt > 1 else ""
        )
        if step.suffix:
            text += f" · {step.suffix}"
        if x0 + w + 6 + len(text) * 6.5 <= WIDTH:
            tx, anchor = x0 + w + 6, "start"
        else:  # no room after the bar: before it
            tx, anchor = x0 - 6, "end"
        parts.append(
            f'<g class="tl-step" data-status="{escape(status)}"><title>{escape(tip)}</title>'
            f'<rect x="{x0:.1f}" y="{y + (ROW - BAR) / 2:.1f}" width="{w:.1f}" height="{BAR}" '
            f'rx="3" fill="{color}"/>'
            f'<text x="{tx:.1f}" y="{y + ROW / 2 + 4:.1f}" class="tl-dur" text-anchor="{anchor}">'
            f"{escape(text)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
