"""Event time: milliseconds since the Unix epoch, UTC, and its ISO 8601 text form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Millis = int


_MINUTE_MS = 60_000
_CACHE_LIMIT = 4096  # minutes (CDRs come roughly in time order: a few suffice)
_minute_text: dict[int, str] = {}
_SECOND_TEXT = [f"{second:02d}." for second in range(60)]
_MILLI_TEXT = [f"{milli:03d}Z" for milli in range(1000)]


_minute_ms: dict[str, int] = {}


class _Second:
    """The second of the last canonical timestamp parsed (events come roughly in time
    order): its text `YYYY-MM-DDTHH:MM:SS` and epoch milliseconds."""

    def __init__(self) -> None:
        self.text = ""
        self.ms = 0


_last = _Second()


def parse_canonical_iso(text: str) -> Millis:
    """`parse_iso` of the canonical form `YYYY-MM-DDTHH:MM:SS.mmmZ`, reading the text of
    each minute once; -1 for any other text (then `parse_iso` says what it is)."""
    if len(text) != 24 or text[23] != "Z" or text[19] != ".":
        return -1
    millis = text[20:23]
    if not (millis.isascii() and millis.isdigit()):
        return -1
    last = _last
    if last.text and text.startswith(last.text):
        return last.ms + int(millis)
    seconds = text[17:19]
    if text[16] != ":" or not (seconds.isascii() and seconds.isdigit()):
        return -1
    second = int(seconds)
    if second >= 60:
        return -1
    prefix = text[:16]
    minute = _minute_ms.get(prefix)
    if minute is None:
        try:
            moment = datetime.fromisoformat(prefix + ":00+00:00")
        except ValueError:
            return -1
        if len(_minute_ms) >= _CACHE_LIMIT:
            _minute_ms.clear()
        minute = _minute_ms[prefix] = round(moment.timestamp() * 1000)
    last.text = text[:19]
    last.ms = minute + second * 1000
    return last.ms + int(millis)


def parse_iso(text: str) -> Millis:
    """`2026-11-24T14:03:07.250Z` (any offset accepted) to epoch milliseconds.

    Raises ValueError for text that is not an ISO 8601 timestamp with a zone.
    """
    fast = parse_canonical_iso(text)
    if fast >= 0:
        return fast
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone (use Z)")
    return round(moment.timestamp() * 1000)


def format_iso(ms: Millis) -> str:
    """Epoch milliseconds to `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    minute, rest = divmod(ms, _MINUTE_MS)
    prefix = _minute_text.get(minute)
    if prefix is None:
        if not 0 <= ms < _YEAR_10000_MS:
            return _format_iso(ms)
        if len(_minute_text) >= _CACHE_LIMIT:
            _minute_text.clear()
        prefix = _minute_text[minute] = _format_iso(minute * _MINUTE_MS)[:17]
    return prefix + _SECOND_TEXT[rest // 1000] + _MILLI_TEXT[rest % 1000]


_YEAR_10000_MS = 253_402_300_800_000


def _format_iso(ms: Millis) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone of that name, or None where there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_date(ms: Millis, zone_name: str) -> date:
    """The calendar date at `ms` in zone `zone_name` (which must exist)."""
    tz = zone(zone_name)
    if tz is None:
        raise ValueError(f"unknown time zone {zone_name!r}")
    return datetime.fromtimestamp(ms / 1000, tz).date()


class _LocalDay:
    """A zone's local day last asked for: `[start, end)` in epoch ms, and its date as
    text; only for a day with one UTC offset throughout (no clock change that day)."""

    def __init__(self, start: Millis, end: Millis, text: str) -> None:
        self.start = start
        self.end = end
        self.text = text


_local_days: dict[str, _LocalDay] = {}


def local_date_text(ms: Millis, zone_name: str) -> str:
    """`local_date(ms, zone_name).isoformat()`, from the zone's day last asked for when
    `ms` falls in it (CDRs come roughly in time order)."""
    day = _local_days.get(zone_name)
    if day is not None and day.start <= ms < day.end:
        return day.text
    found = local_date(ms, zone_name)
    text = found.isoformat()
    tz = zone(zone_name)
    after = found + timedelta(days=1)
    start = datetime(found.year, found.month, found.day, tzinfo=tz)
    end = datetime(after.year, after.month, after.day, tzinfo=tz)
    start_ms = round(start.timestamp() * 1000)
    end_ms = round(end.timestamp() * 1000)
    first = datetime.fromtimestamp(start_ms / 1000, tz).utcoffset()
    last = datetime.fromtimestamp((end_ms - 1) / 1000, tz).utcoffset()
    if start_ms <= ms < end_ms and first == last:  # no clock change that day
        _local_days[zone_name] = _LocalDay(start_ms, end_ms, text)
    return text
