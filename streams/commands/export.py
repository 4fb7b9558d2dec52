"""`cdrstream export`: the daily files (one per group per local day) and their delivery.

`--date D` exports one local day; `--daily` every day that is due (local midnight plus
settle time) and not yet delivered, missed days included (run it from cron, or let the
streaming worker do it). See docs/daily-files.md.
"""

from __future__ import annotations

import argparse
import importlib
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from streams.cdr import Cdr
from streams.commands.common import add_config_option, say, settings_from
from streams.errors import DeliveryError
from streams.export import day_due_ms, export_wait_ms, group_zones, index_by_group_day
from streams.serialization import latest_versions, read_cdrs
from streams.settings import Settings
from streams.timefmt import Millis, format_iso, parse_iso

if TYPE_CHECKING:
    from streams.delivery import ExportReport

TOPIC_MODULE = "streams.kafka_io"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="write the daily CDR files and deliver them by SFTP",
        description="Write the final CDRs (latest versions) of a local day, one file per "
        "group, as CSV and/or JSON ([export] formats) to [export] output_dir, and upload "
        "them to each [[sftp]] destination that serves the group. Days already delivered "
        "unchanged are skipped; changed days are delivered as a new revision.",
    )
    add_config_option(parser)
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", type=_day, metavar="YYYY-MM-DD", help="export this local day")
    when.add_argument(
        "--daily", action="store_true",
        help="export every day that is due and not yet delivered (catches up missed days)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="CDRS", help="CDR file: .jsonl, .csv or .avro")
    source.add_argument(
        "--from-topic", action="store_true", help="read the final CDRs from the cdr topic",
    )
    parser.add_argument(
        "--group", action="append", metavar="G",
        help="only this group (repeatable); it gets a file even for a day without calls",
    )
    parser.add_argument(
        "--format", action="append", choices=("csv", "json"), dest="formats",
        help="file format (repeatable; default [export] formats, which also applies to "
        "destinations without formats of their own)",
    )
    parser.add_argument(
        "--output-dir", metavar="DIR", help="local output directory (default [export] output_dir)",
    )
    parser.add_argument(
        "--destination", action="append", metavar="NAME",
        help="deliver only to this [[sftp]] destination (repeatable; default all)",
    )
    parser.add_argument(
        "--no-deliver", action="store_true", help="write the local files only, upload nothing",
    )
    parser.add_argument(
        "--early", action="store_true",
        help="with --date: deliver a day that is not over yet (it will need revisions)",
    )
    parser.add_argument(
        "--now", type=_instant, metavar="ISO-TIME",
        help="the current time, e.g. 2026-11-25T06:00:00Z (for replays and tests)",
    )
    parser.set_defaults(handler=run)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _instant(text: str) -> Millis:
    try:
        return parse_iso(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time with zone, e.g. 2026-11-25T06:00:00Z: {text!r}"
        ) from None


def load_latest(settings: Settings, args: argparse.Namespace) -> dict[str, Cdr]:
    """The final CDR set (cdr_id -> latest version), from the file or the cdr topic."""
    if args.from_topic:
        try:
            module = importlib.import_module(TOPIC_MODULE)
        except ModuleNotFoundError as error:
            if error.name != TOPIC_MODULE:
                raise
            raise DeliveryError(
                "--from-topic: this build cannot read the cdr topic yet; use --input CDRS"
            ) from None
        latest: dict[str, Cdr] = module.read_latest_cdrs(settings)
        return latest
    return latest_versions(read_cdrs(args.input))


def _with_overrides(settings: Settings, args: argparse.Namespace) -> Settings:
    changes: dict[str, Any] = {}
    if args.formats:
        changes["formats"] = tuple(dict.fromkeys(args.formats))
    if args.output_dir:
        changes["output_dir"] = args.output_dir
    if not changes:
        return settings
    return settings.model_copy(update={"export": settings.export.model_copy(update=changes)})


def _check_day_over(settings: Settings, latest: dict[str, Cdr], groups: list[str],
                    day: date, now_ms: Millis) -> None:
    """Refuse to deliver a day before it is due (its file would be incomplete)."""
    for group in groups:
        records = [c for c in latest.values() if c.group_id == group]
        due = day_due_ms(day, group_zones(settings, group, records), export_wait_ms(settings))
        if due > now_ms:
            raise DeliveryError(
                f"{group} {day}: the day is not over until {format_iso(due)}; use "
                "--no-deliver to write the local files only, or --early to deliver anyway"
            )


def run(args: argparse.Namespace) -> int:
    from streams.delivery import export_days, run_daily  # paramiko: only when exporting

    settings = _with_overrides(settings_from(args), args)
    now: Millis = round(time.time() * 1000) if args.now is None else args.now
    latest = load_latest(settings, args)
    deliver = not args.no_deliver
    if args.daily:
        report = run_daily(
            settings, latest, now_ms=now, groups=args.group, deliver=deliver,
            destinations=args.destination, notify=say,
        )
    else:
        groups = args.group or list(settings.export.groups) or sorted(
            {group for group, day in index_by_group_day(latest.values())
             if day == args.date.isoformat()}
        )
        if deliver and settings.sftp and not args.early:
            _check_day_over(settings, latest, groups, args.date, now)
        report = export_days(
            settings, latest, [(group, args.date) for group in groups], deliver=deliver,
            destinations=args.destination, now_ms=now, notify=say,
        )
    _summarize(report)
    report.raise_for_errors()
    return 0


def _summarize(report: ExportReport) -> None:
    if not report.outcomes:
        say("nothing to export")
    for outcome in report.outcomes:
        say(outcome.describe())
