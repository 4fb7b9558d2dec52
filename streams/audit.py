"""Audit: the CDRs rebuilt from the event log against the CDRs published.

The rebuilt side is a replay (`streams.replay`); the published side is the current
content of the compacted `cdr` topic (per cdr_id the highest version, unless a later
tombstone removed it), or CDR files. Each cdr_id is one of:

* matching: the same on both sides, every field (the version number too);
* missing: rebuilt from the events, not published;
* extra: published, but the events make no such CDR;
* differing: on both sides with other values; the fields that differ are listed.

Messages on the `cdr` topic that are not readable CDRs are listed as unreadable. The
audit passes (exit status 0) only where there is none of the last four.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.cdr import CDR_FIELDS, Cdr
from streams.errors import AuditError, SerializationError
from streams.replay import (
    ReplayResult,
    ReplaySource,
    read_topic,
    run_replay,
)
from streams.serialization import (
    decode_cdr_message,
    latest_versions,
    read_cdrs,
)
from streams.settings import Settings
from streams.timefmt import Millis, format_iso

MATCHING = "matching"
MISSING = "missing"
EXTRA = "extra"
DIFFERING = "differing"
UNREADABLE = "unreadable"

EXPLANATIONS = {
    MATCHING: "the same on both sides, every field",
    MISSING: "the events make this CDR, but it was not published",
    EXTRA: "published, but no events make this CDR",
    DIFFERING: "published with other values than the events give",
    UNREADABLE: "a message on the cdr topic that is not a readable CDR",
}


# ---------------------------------------------------------------- the published side


@dataclass(slots=True)
class Unreadable:
    """A message on the cdr topic that is not a CDR."""

    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str

    def to_json_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "key": self.key, "reason": self.reason}


@dataclass(slots=True)
class Published:
    """The published CDR set and where it was read."""

    cdrs: dict[str, Cdr]
    source: dict[str, Any]
    unreadable: list[Unreadable] = field(default_factory=list)
    records: int = 0
    warnings: list[str] = field(default_factory=list)


def read_published_topic(settings: Settings) -> Published:
    """The current content of the compacted cdr topic: per cdr_id the highest version
    published, unless a tombstone (a message without value) came after it."""
    topic = settings.kafka.cdr_topic
    current: dict[str, Cdr] = {}
    unreadable: list[Unreadable] = []
    warnings: list[str] = []
    records = tombstones = 0
    for record in read_topic(settings.kafka, topic):
        records += 1
        key = None if record.key is None else record.key.decode("utf-8", "replace")
        if record.value is None:
            tombstones += 1
            if key is not None:
                current.pop(key, None)
            continue
        try:
            cdr = decode_cdr_message(record.value)
        except SerializationError as error:
            unreadable.append(Unreadable(topic, record.partition, record.offset, key, str(error)))
            continue
        if key is not None and key != cdr.cdr_id:
            warnings.append(
                f"{topic}[{record.partition}]@{record.offset}: key {key!r} is not the "
                f"CDR's cdr_id {cdr.cdr_id!r}"
            )
        known = current.get(cdr.cdr_id)
        if known is None or cdr.version >= known.version:
            current[cdr.cdr_id] = cdr
    source = {"topic": topic, "messages": records, "tombstones": tombstones}
    return Published(current, source, unreadable, records, warnings)


def read_published_files(paths: Sequence[str]) -> Published:
    """The latest version of each CDR in CDR files (JSON Lines, CSV or Avro)."""
    versions: list[Cdr] = []
    for path in paths:
        versions.extend(read_cdrs(path))
    return Published(latest_versions(versions), {"files": list(paths)}, [], len(versions))


# ---------------------------------------------------------------- comparing


def _json_value(cdr: Cdr, name: str) -> Any:
    value = getattr(cdr, name)
    if name in ("start_time", "answer_time", "release_time"):
        return None if value is None else format_iso(value)
    if name in ("account_code_entries", "legs"):
        return [item.to_json_dict() for item in value]
    return value


@dataclass(frozen=True, slots=True)
class FieldDifference:
    field: str
    published: Any
    rebuilt: Any

    def to_json_dict(self) -> dict[str, Any]:
        return {"field": self.field, "published": self.published, "rebuilt": self.rebuilt}


@dataclass(frozen=True, slots=True)
class Difference:
    """One cdr_id that is not the same on both sides."""

    cdr_id: str
    kind: str  # missing, extra or differing
    published: Cdr | None
    rebuilt: Cdr | None
    fields: tuple[FieldDifference, ...] = ()

    @property
    def cdr(self) -> Cdr:
        found = self.rebuilt or self.published
        assert found is not None
        return found

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cdr_id": self.cdr_id, "problem": self.kind}
        cdr = self.cdr
        out |= {"user_id": cdr.user_id, "group_id": cdr.group_id, "record_type": cdr.record_type,
                "start_time": format_iso(cdr.start_time)}
        if self.kind == DIFFERING:
            out["fields"] = [item.to_json_dict() for item in self.fields]
        out["published"] = None if self.published is None else self.published.to_json_dict()
        out["rebuilt"] = None if self.rebuilt is None else self.rebuilt.to_json_dict()
        return out


def compare_cdrs(
    rebuilt: Mapping[str, Cdr], published: Mapping[str, Cdr], ignore: Iterable[str] = ()
) -> tuple[int, list[Difference]]:
    """(matching count, differences sorted by cdr_id)."""
    ignored = set(ignore)
    unknown = ignored - set(CDR_FIELDS)
    if unknown:
        raise AuditError(f"not CDR fields: {', '.join(sorted(unknown))}")
    compared = [name for name in CDR_FIELDS if name not in ignored]
    matching = 0
    differences: list[Difference] = []
    for cdr_id in sorted(set(rebuilt) | set(published)):
        mine, theirs = rebuilt.get(cdr_id), published.get(cdr_id)
        if theirs is None:
            differences.append(Difference(cdr_id, MISSING, None, mine))
        elif mine is None:
            differences.append(Difference(cdr_id, EXTRA, theirs, None))
        elif mine == theirs:
            matching += 1
        else:
            fields = tuple(
                FieldDifference(name, _json_value(theirs, name), _json_value(mine, name))
                for name in compared if getattr(mine, name) != getattr(theirs, name)
            )
            if fields:
                differences.append(Difference(cdr_id, DIFFERING, theirs, mine, fields))
            else:
                matching += 1
    return matching, differences


# ---------------------------------------------------------------- the report


@dataclass(slots=True)
class AuditReport:
    rebuilt_from: dict[str, Any]
    published_from: dict[str, Any]
    rebuilt: int
    published: int
    matching: int
    differences: list[Difference]
    unreadable: list[Unreadable]
    dead_letters: int
    window: dict[str, Any] | None
    ignored_fields: list[str]
    warnings: list[str]
    seconds: float
    audited_at: str

    def count(self, kind: str) -> int:
        if kind == MATCHING:
            return self.matching
        if kind == UNREADABLE:
            return len(self.unreadable)
        return sum(1 for item in self.differences if item.kind == kind)

    @property
    def ok(self) -> bool:
        return not (self.differences or self.unreadable)

    def to_json_dict(self) -> dict[str, Any]:
        kinds = (MISSING, EXTRA, DIFFERING)
        return {
            "report": "cdrstream audit",
            "ok": self.ok,
            "audited_at": self.audited_at,
            "rebuilt_from": self.rebuilt_from,
            "published_from": self.published_from,
            "window": self.window,
            "ignored_fields": self.ignored_fields,
            "counts": {
                "rebuilt": self.rebuilt,
                "published": self.published,
                MATCHING: self.matching,
                **{kind: self.count(kind) for kind in kinds},
                UNREADABLE: len(self.unreadable),
                "dead_letters_in_replay": self.dead_letters,
            },
            "explanations": EXPLANATIONS,
            **{
                kind: [d.to_json_dict() for d in self.differences if d.kind == kind]
                for kind in kinds
            },
            UNREADABLE: [item.to_json_dict() for item in self.unreadable],
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }

    def render(self, limit: int | None = 50) -> str:
        """The readable report: counts, then one row per difference (and per field)."""
        out = io.StringIO()
        verdict = "PASSED: nothing differs" if self.ok else "FAILED: differences found"
        out.write(f"CDR audit {verdict}\n")
        out.write(f"  rebuilt from   {_describe_source(self.rebuilt_from)}\n")
        out.write(f"  published in   {_describe_source(self.published_from)}\n")
        if self.window:
            out.write(f"  calls started  {self.window['from']} to {self.window['to']}\n")
        if self.ignored_fields:
            out.write(f"  not compared   {', '.join(self.ignored_fields)}\n")
        out.write("\n")
        out.write(f"  {'rebuilt':<11}{self.rebuilt:>12,}  CDRs the events make\n")
        out.write(f"  {'published':<11}{self.published:>12,}  CDRs published\n")
        for kind in (MATCHING, MISSING, EXTRA, DIFFERING, UNREADABLE):
            out.write(f"  {kind:<11}{self.count(kind):>12,}  {EXPLANATIONS[kind]}\n")
        if self.dead_letters:
            out.write(f"  ({self.dead_letters:,} events could not be used and went to the dead "
                      "letters, as they did in the stream)\n")
        for warning in self.warnings:
            out.write(f"  warning: {warning}\n")
        if self.differences:
            out.write("\n")
            out.write(_table(self.differences, limit))
        if self.unreadable:
            out.write("\nUnreadable messages on the cdr topic:\n")
            for item in self.unreadable[: limit or None]:
                where = f"{item.topic}[{item.partition}]@{item.offset}"
                out.write(f"  {where} key {item.key}: {item.reason}\n")
        return out.getvalue()


def _describe_source(source: Mapping[str, Any]) -> str:
    if "topic" in source:
        return f"topic {source['topic']} ({source.get('messages', 0):,} messages)"
    if "files" in source and "description" not in source:
        return "files " + ", ".join(source["files"])
    return str(source.get("description", source))


def _short(value: Any, width: int = 34) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, dict)):
        text = orjson.dumps(value).decode()
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(differences: Sequence[Difference], limit: int | None) -> str:
    rows: list[tuple[str, ...]] = []
    shown = differences if limit is None else differences[:limit]
    for item in shown:
        cdr = item.cdr
        head = (item.cdr_id, cdr.user_id, item.kind)
        if item.kind == DIFFERING:
            for number, diff in enumerate(item.fields):
                lead = head if number == 0 else ("", "", "")
                rows.append((*lead, diff.field, _short(diff.published), _short(diff.rebuilt)))
        else:
            summary = (
                f"v{cdr.version} {cdr.record_type} {format_iso(cdr.start_time)} "
                f"code {cdr.account_code or '-'}"
            )
            published, rebuilt = ("-", summary) if item.kind == MISSING else (summary, "-")
            rows.append((*head, "(whole CDR)", _short(published, 48), _short(rebuilt, 48)))
    header = ("CDR", "USER", "PROBLEM", "FIELD", "PUBLISHED", "REBUILT FROM EVENTS")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if limit is not None and len(differences) > limit:
        lines.append(f"... and {len(differences) - limit:,} more (all are in the JSON report)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- running an audit


@dataclass(frozen=True, slots=True)
class AuditWindow:
    """Audit only calls that started in [start_ms, end_ms); replay `margin_ms` more of
    the log on both sides, so that calls that cross the edges are whole."""

    start_ms: Millis | None
    end_ms: Millis | None
    margin_ms: Millis

    def contains(self, cdr: Cdr) -> bool:
        return (self.start_ms is None or cdr.start_time >= self.start_ms) and (
            self.end_ms is None or cdr.start_time < self.end_ms
        )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "from": "the beginning" if self.start_ms is None else format_iso(self.start_ms),
            "to": "the end" if self.end_ms is None else format_iso(self.end_ms),
            "margin_seconds": self.margin_ms / 1000,
        }


def run_audit(
    settings: Settings,
    source: ReplaySource,
    *,
    published_files: Sequence[str] = (),
    window: AuditWindow | None = None,
    ignore: Sequence[str] = (),
    jobs: int | None = None,
    progress: bool | None = None,
    rebuilt_output: tuple[str, Any] | None = None,
) -> tuple[AuditReport, ReplayResult]:
    """Replay `source` and compare its final CDR set with the published one (the cdr
    topic, or `published_files`)."""
    started = time.monotonic()
    if window is not None and (window.start_ms is not None or window.end_ms is not None):
        source = ReplaySource(
            source.topics, source.archive, source.inputs,
            None if window.start_ms is None else window.start_ms - window.margin_ms,
            None if window.end_ms is None else window.end_ms + window.margin_ms,
        )
    # The published side is read in a thread while the replay runs in its processes.
    holder: dict[str, Any] = {}

    def read() -> None:
        try:
            holder["published"] = (
                read_published_files(published_files) if published_files
                else read_published_topic(settings)
            )
        except BaseException as error:
            holder["error"] = error

    reader = threading.Thread(target=read, name="read-published", daemon=True)
    reader.start()
    try:
        replay = run_replay(settings, source, jobs=jobs, progress=progress)
    finally:
        reader.join()
    if "error" in holder:
        raise holder["error"]
    published: Published = holder["published"]
    if rebuilt_output is not None:
        from streams.replay import write_replay

        write_replay(replay, rebuilt_output[0], rebuilt_output[1])
    rebuilt = replay.final
    theirs = published.cdrs
    if window is not None:
        rebuilt = {k: v for k, v in rebuilt.items() if window.contains(v)}
        theirs = {k: v for k, v in theirs.items() if window.contains(v)}
    matching, differences = compare_cdrs(rebuilt, theirs, ignore)
    rebuilt_from: dict[str, Any] = {
        "description": source.describe(), "records": replay.records, "events": replay.events,
        "by_topic": replay.by_topic, "offsets": replay.offsets,
    }
    report = AuditReport(
        rebuilt_from=rebuilt_from,
        published_from=published.source,
        rebuilt=len(rebuilt),
        published=len(theirs),
        matching=matching,
        differences=differences,
        unreadable=published.unreadable,
        dead_letters=len(replay.dead_letters),
        window=None if window is None else window.to_json_dict(),
        ignored_fields=sorted(ignore),
        warnings=replay.warnings + published.warnings,
        seconds=time.monotonic() - started,
        audited_at=format_iso(round(time.time() * 1000)),
    )
    return report, replay


def write_report(report: AuditReport, path: str | Path) -> None:
    Path(path).write_bytes(orjson.dumps(report.to_json_dict(), option=orjson.OPT_INDENT_2) + b"\n")
