"""Weekly recording windows in a time zone: ``"mon-fri 18:00-19:00; sat 10:00-12:30"``.

A window whose end is not after its start runs past midnight into the next day
(``"fri 23:00-01:00"``); ``24:00`` ends a day. Evaluated against a clock the caller passes
(an injectable one in tests): nothing here reads the time itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from castway.server.errors import InvalidArgument

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WINDOWS = 64


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes from midnight
    end: int  # minutes from midnight; <= start: the next day


def zone(name: str, where: str = "timezone") -> ZoneInfo:
    """The IANA time zone ``name``, or the error at ``where``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(where, f"{name!r} is not a known IANA time zone") from None


def _minutes(text: str, where: str) -> int:
    h, sep, m = text.partition(":")
    if not (sep and h.isdigit() and m.isdigit() and len(m) == 2 and len(h) <= 2):
        raise InvalidArgument(where, f"{text!r} is not a time (HH:MM)")
    value = int(h) * 60 + int(m)
    if int(m) > 59 or value > 24 * 60:
        raise InvalidArgument(where, f"{text!r} is not a time of day (00:00..24:00)")
    return value


def _days(text: str, where: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise InvalidArgument(where, f"{part!r} is not a day or range of days (mon..sun)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(out)


def parse_windows(text: str, where: str = "schedule") -> list[Window]:
    """The windows of a schedule; an error names the window that is wrong."""
    windows = []
    for i, item in enumerate(w.strip() for w in text.split(";")):
        if not item:
            continue
        at = f"{where} (window {i + 1}: {item!r})"
        days, _, times = item.partition(" ")
        start, sep, end = times.strip().partition("-")
        if not sep:
            raise InvalidArgument(at, "must be DAYS HH:MM-HH:MM, e.g. mon-fri 18:00-19:00")
        w = Window(_days(days, at), _minutes(start, at), _minutes(end, at))
        if w.start == w.end:
            raise InvalidArgument(at, "starts and ends at the same time")
        windows.append(w)
    if not windows:
        raise InvalidArgument(where, "names no window")
    if len(windows) > MAX_WINDOWS:
        raise InvalidArgument(where, f"has more than {MAX_WINDOWS} windows")
    return windows


def active(windows: list[Window], tz: ZoneInfo, now: float) -> bool:
    """Whether Unix time ``now`` falls inside a window, in ``tz``."""
    local = datetime.fromtimestamp(now, UTC).astimezone(tz)
    minute = local.hour * 60 + local.minute
    today = local.weekday()
    yesterday = (local - timedelta(days=1)).weekday()
    for w in windows:
        if w.start < w.end:
            if today in w.days and w.start <= minute < w.end:
                return True
        else:
            if today in w.days and minute >= w.start:
                return True
            if yesterday in w.days and minute < w.end:
                return True
    return False
