"""Daily files (SPEC section 4): one per group per local day, CSV or JSON, same fields.

Pure functions, no I/O: pick a day's final CDRs (the latest version of each `cdr_id`) for a
group, render them as CSV or JSON bytes, name the files (revisions included), build the
manifest, and work out which days are due (the schedule). Delivery is `streams.delivery`;
the customer-facing description is docs/daily-files.md.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from urllib.parse import quote

import orjson

from streams.cdr import CDR_FIELDS, Cdr
from streams.serialization import cdr_to_csv_row
from streams.settings import ExportFormat, Settings
from streams.timefmt import Millis, format_iso, local_date, zone

MANIFEST_VERSION: Final = 1
MANIFEST_SUFFIX: Final = ".manifest.json"
PARTIAL_SUFFIX: Final = ".partial"
_PARTIAL = re.compile(r"^\..+\.[0-9a-f]{12}\.partial$")
DAY_MS: Final = 86_400_000


# ---------------------------------------------------------------- selecting


GroupDays = dict[tuple[str, str], list[Cdr]]


def index_by_group_day(cdrs: Iterable[Cdr]) -> GroupDays:
    """Final CDRs by (group_id, local_date), each list in file order (see `day_order`)."""
    index: GroupDays = defaultdict(list)
    for cdr in cdrs:
        index[(cdr.group_id, cdr.local_date)].append(cdr)
    for records in index.values():
        records.sort(key=day_order)
    return dict(index)


def day_order(cdr: Cdr) -> tuple[int, str]:
    """Rows of a daily file are in start-time order, ties by `cdr_id`."""
    return cdr.start_time, cdr.cdr_id


def day_records(cdrs: Iterable[Cdr], group_id: str, day: date) -> list[Cdr]:
    """The CDRs of `group_id` whose `local_date` is `day`, in file order. Pass final CDRs
    (`serialization.latest_versions(...).values()`): every record is one row."""
    wanted = day.isoformat()
    return sorted(
        (cdr for cdr in cdrs if cdr.group_id == group_id and cdr.local_date == wanted),
        key=day_order,
    )


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """The bytes of one daily file in one format (its name depends on the revision)."""

    format: ExportFormat
    data: bytes
    rows: int
    sha256: str


def render(fmt: ExportFormat, cdrs: Sequence[Cdr]) -> RenderedFile:
    """A day's CDRs as a daily file: `csv` or `json` (see docs/daily-files.md)."""
    data = render_csv(cdrs) if fmt == "csv" else render_json(cdrs)
    return RenderedFile(fmt, data, len(cdrs), hashlib.sha256(data).hexdigest())


def render_csv(cdrs: Iterable[Cdr]) -> bytes:
    """RFC 4180 CSV, UTF-8, CRLF: a header row of the SPEC field names in `CDR_FIELDS`
    order, then one row per CDR (booleans `true`/`false`, null empty, timestamps ISO 8601
    UTC, lists as JSON text) - the same cells as `CdrWriter`'s CSV."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(CDR_FIELDS)
    for cdr in cdrs:
        writer.writerow(cdr_to_csv_row(cdr))
    return out.getvalue().encode("utf-8")


def render_json(cdrs: Iterable[Cdr]) -> bytes:
    """A JSON array of CDR objects (the CDR JSON form, keys in `CDR_FIELDS` order), one
    object per line."""
    out = io.BytesIO()
    separator = b"[\n"
    for cdr in cdrs:
        # written at once: orjson's output holds a 4 KiB buffer however short it is
        out.write(separator)
        out.write(orjson.dumps(cdr.to_json_dict()))
        separator = b",\n"
    if out.tell() == 0:
        return b"[]\n"
    out.write(b"\n]\n")
    return out.getvalue()


def render_day(cdrs: Sequence[Cdr], formats: Iterable[ExportFormat]) -> dict[str, RenderedFile]:
    return {fmt: render(fmt, cdrs) for fmt in formats}


# ---------------------------------------------------------------- names


def file_stem(group_id: str, day: date) -> str:
    """`{group}_{YYYY-MM-DD}`; the group id percent-encoded where it is not file-name safe
    (so that two groups never share a name, and no name starts with a dot)."""
    safe = quote(group_id, safe="-_@+=,") if group_id else "%00"
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    return f"{safe}_{day.isoformat()}"


def _revision(revision: int) -> str:
    if revision < 1:
        raise ValueError(f"revision {revision} < 1")
    return "" if revision == 1 else f".r{revision}"


def data_file_name(group_id: str, day: date, revision: int, fmt: ExportFormat) -> str:
    """`smith-law_2026-11-24.csv`, then `smith-law_2026-11-24.r2.csv`, ..."""
    return f"{file_stem(group_id, day)}{_revision(revision)}.{fmt}"


def manifest_name(group_id: str, day: date, revision: int) -> str:
    """`smith-law_2026-11-24.manifest.json`, then `smith-law_2026-11-24.r2.manifest.json`."""
    return f"{file_stem(group_id, day)}{_revision(revision)}{MANIFEST_SUFFIX}"


def partial_name(name: str, token: str) -> str:
    """The hidden name a file is written under before it is renamed to `name`;
    `token` is 12 hex digits."""
    return f".{name}.{token}{PARTIAL_SUFFIX}"


def is_partial_name(name: str) -> bool:
    return _PARTIAL.match(name) is not None


# ---------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class NamedFile:
    name: str
    file: RenderedFile

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "format": self.file.format, "rows": self.file.rows,
            "bytes": len(self.file.data), "sha256": self.file.sha256,
        }


def build_manifest(
    group_id: str,
    day: date,
    *,
    revision: int,
    files: Sequence[NamedFile],
    created_ms: Millis,
    replaces: str | None,
) -> bytes:
    """The manifest of one revision of a group's day (JSON, see docs/daily-files.md)."""
    document = {
        "manifest_version": MANIFEST_VERSION,
        "group_id": group_id,
        "local_date": day.isoformat(),
        "revision": revision,
        "replaces": replaces,
        "created_at": format_iso(created_ms),
        "columns": list(CDR_FIELDS),
        "files": [item.describe() for item in files],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def manifest_lists(data: bytes, files: Sequence[NamedFile]) -> bool:
    """True where `data` is a manifest that lists exactly `files` (names and sha256)."""
    try:
        listed = orjson.loads(data)["files"]
        return sorted((f["name"], f["sha256"]) for f in listed) == sorted(
            (item.name, item.file.sha256) for item in files
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False


# ---------------------------------------------------------------- schedule


def day_end_ms(day: date, zone_name: str) -> Millis:
    """The instant the local day `day` ends in `zone_name` (the next local midnight)."""
    tz = zone(zone_name)
    if tz is None:
        raise ValueError(f"unknown time zone {zone_name!r}")
    return round(datetime.combine(day + timedelta(days=1), time(0), tz).timestamp() * 1000)


def day_due_ms(day: date, zones: Collection[str], wait_ms: int) -> Millis:
    """When `day` may be exported: it has ended in every zone, plus `wait_ms`."""
    return max(day_end_ms(day, name) for name in zones) + wait_ms


def group_zones(settings: Settings, group_id: str, cdrs: Iterable[Cdr] = ()) -> set[str]:
    """The zones whose midnight ends `group_id`'s day: `[export] timezones.<group>` (else
    `default_timezone`) and the `user_timezone` of each of the group's CDRs given."""
    zones = {settings.export.timezones.get(group_id, settings.default_timezone)}
    zones.update(cdr.user_timezone for cdr in cdrs if cdr.group_id == group_id)
    return zones


def export_wait_ms(settings: Settings) -> int:
    """Time after local midnight before a day is exported: settle time plus grace."""
    return settings.settle_ms + round(settings.export.grace_seconds * 1000)


def due_days(
    now_ms: Millis,
    zones: Collection[str],
    wait_ms: int,
    catch_up_days: int,
    start_date: date | None = None,
) -> list[date]:
    """The days, oldest first, that are due at `now_ms` and no older than `catch_up_days`
    before today (today as the westernmost of `zones` has it)."""
    today = min(local_date(now_ms, name) for name in zones)
    first = today - timedelta(days=catch_up_days)
    if start_date is not None:
        first = max(first, start_date)
    days = []
    day = first
    while day <= today:
        if day_due_ms(day, zones, wait_ms) <= now_ms:
            days.append(day)
        day += timedelta(days=1)
    return days


def _by_group(cdrs: Iterable[Cdr]) -> dict[str, list[Cdr]]:
    grouped: dict[str, list[Cdr]] = defaultdict(list)
    for cdr in cdrs:
        grouped[cdr.group_id].append(cdr)
    return grouped


def daily_work(
    settings: Settings,
    cdrs: Iterable[Cdr],
    now_ms: Millis,
    groups: Sequence[str] | None = None,
) -> list[tuple[str, date]]:
    """The (group, day) pairs a daily run at `now_ms` exports, in order.

    Groups: `groups`, else `[export] groups`, else every group with CDRs. A listed group
    gets a file for every due day (an empty one where it had no calls); an unlisted group
    only for days with CDRs. Days: those due (see `due_days`) within `catch_up_days`
    and not before `start_date`."""
    by_group = _by_group(cdrs)
    listed = tuple(groups) if groups else settings.export.groups
    work = []
    for group in listed or sorted(by_group):
        records = by_group.get(group, [])
        with_calls = {cdr.local_date for cdr in records}
        for day in due_days(
            now_ms, group_zones(settings, group, records), export_wait_ms(settings),
            settings.export.catch_up_days, settings.export.start_date,
        ):
            if listed or day.isoformat() in with_calls:
                work.append((group, day))
    return work


def next_due_ms(settings: Settings, cdrs: Iterable[Cdr], now_ms: Millis) -> Millis:
    """The next instant after `now_ms` at which some group's day falls due: a streaming
    worker can sleep until then (or until new CDRs arrive) before calling `run_daily`."""
    by_group = _by_group(cdrs)
    wait = export_wait_ms(settings)
    due = []
    for group in set(settings.export.groups) | set(by_group) or {""}:
        zones = group_zones(settings, group, by_group.get(group, []))
        # the oldest day that may not be due yet, then on to the first one that is not
        day = min(local_date(now_ms, name) for name in zones) - timedelta(
            days=wait // DAY_MS + 1
        )
        while day_due_ms(day, zones, wait) <= now_ms:
            day += timedelta(days=1)
        due.append(day_due_ms(day, zones, wait))
    return min(due)
