"""`replay`, `audit`, `explain` and `archive`: rebuild every CDR from the event log and
prove the published ones (streams/replay.py, audit.py, explain.py, archive.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from streams.commands.common import positive_int, say
from streams.commands.kafka import add_kafka_options, kafka_settings
from streams.errors import AuditError


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _add_source_options(parser: argparse.ArgumentParser, ranged: bool = True) -> None:
    group = parser.add_argument_group(
        "events to replay",
        "Default: the event topics, from the beginning up to their ends as of now.",
    )
    group.add_argument(
        "--archive", metavar="DIR",
        help="an archive made by `cdrstream archive`; with --topics, the topics follow "
        "from where the archive ends",
    )
    group.add_argument(
        "--topics", action="store_true",
        help="read the event topics (the default without --archive and --input)",
    )
    group.add_argument(
        "--input", action="append", default=[], metavar="EVENTS",
        help="event files (.jsonl or .avro) instead, replayed in the order given like file "
        "mode; repeatable",
    )
    if ranged:
        group.add_argument(
            "--from", dest="start", metavar="WHEN",
            help="replay records from this time (UTC date YYYY-MM-DD, ISO 8601 time with "
            "a zone, or now); found with offsets-for-times on the record timestamps",
        )
        group.add_argument("--to", dest="end", metavar="WHEN", help="... up to this time")
    parser.add_argument(
        "--jobs", type=positive_int, metavar="N",
        help="processes (partitions are replayed in parallel; default: one per CPU for "
        "large replays); the output is the same for any N",
    )
    parser.add_argument("--no-progress", action="store_true", help="never show progress")


def _source(args: argparse.Namespace, ranged: bool = True) -> Any:
    from streams.replay import ReplaySource, parse_when

    start = parse_when(args.start) if ranged and args.start else None
    end = parse_when(args.end) if ranged and args.end else None
    topics = bool(args.topics or not (args.archive or args.input))
    source = ReplaySource(topics, args.archive, tuple(args.input), start, end)
    source.check()
    return source


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def add_parser(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay", help="rebuild the CDRs from the event topics, an archive or event files",
        description="Rebuild CDRs from the event log with the same engine as the worker "
        "(one engine per partition, records merged by record timestamp). Writes the final "
        "CDR set (latest version of each CDR, sorted by cdr_id), or every version with "
        "--all-versions; dead letters go to OUTPUT's name with .dlq.jsonl. Two replays of "
        "the same events give identical files.",
    )
    add_kafka_options(replay)
    _add_source_options(replay)
    replay.add_argument("--output", required=True, metavar="CDRS", help="CDR file to write")
    replay.add_argument(
        "--format", choices=("jsonl", "csv", "avro"),
        help="output format (default: by OUTPUT's extension, else jsonl)",
    )
    replay.add_argument(
        "--all-versions", action="store_true",
        help="every version issued (partition by partition, in issue order), not only the latest",
    )
    replay.set_defaults(handler=run_replay_command)

    audit = subparsers.add_parser(
        "audit", help="compare the CDRs rebuilt from the events with the published ones",
        description="Replay the events and compare the final CDR set with the latest "
        "versions on the cdr topic (or CDR files): CDRs missing, extra, or differing (with "
        "the fields that differ). Prints a table; --report writes the JSON report. Exit "
        "status 0 when nothing differs, 1 when anything does, 2 when the audit could not "
        "be done.",
    )
    add_kafka_options(audit)
    _add_source_options(audit, ranged=False)
    audit.add_argument(
        "--cdrs", action="append", default=[], metavar="FILE",
        help="compare with these CDR files (.jsonl, .csv, .avro; latest version of each "
        "CDR) instead of the cdr topic; repeatable",
    )
    audit.add_argument(
        "--from", dest="start", metavar="WHEN",
        help="audit only calls that started at or after this time (UTC date YYYY-MM-DD, "
        "ISO 8601 time with a zone, or now)",
    )
    audit.add_argument("--to", dest="end", metavar="WHEN", help="... and before this time")
    audit.add_argument(
        "--margin", type=_seconds, default=7200, metavar="SECONDS",
        help="with --from/--to: replay this much more of the log on both sides, so that "
        "calls crossing the edges are whole (default 7200)",
    )
    audit.add_argument(
        "--ignore-field", action="append", default=[], metavar="FIELD",
        help="do not compare this CDR field (e.g. version); repeatable",
    )
    audit.add_argument("--report", metavar="REPORT.json", help="write the JSON report here")
    audit.add_argument(
        "--json", action="store_true", help="print the JSON report instead of the table"
    )
    audit.add_argument(
        "--limit", type=int, default=50, metavar="N",
        help="rows of differences in the table (default 50; 0 for all)",
    )
    audit.add_argument("--rebuilt", metavar="CDRS", help="also write the rebuilt CDRs here")
    audit.set_defaults(handler=run_audit_command)

    explain = subparsers.add_parser(
        "explain", help="show the events and decisions behind one CDR",
        description="The events that built one CDR (topic, partition and offset, or file "
        "and line), and each decision: which entries counted and why, which held call a "
        "second-line code went to, why a code was required, and why each version was issued.",
    )
    explain.add_argument("cdr_id", metavar="CDR_ID", help="SWITCH:CALL_ID, e.g. sw1:u3c7")
    add_kafka_options(explain)
    _add_source_options(explain)
    explain.add_argument("--user", metavar="USER_ID", help="the CDR's user, where known (faster)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    explain.set_defaults(handler=run_explain_command)

    archive = subparsers.add_parser(
        "archive", help="copy the event topics into per-day Avro files with a manifest",
        description="Copy every event record not archived yet and older than --before into "
        "DIR: one Avro container file (deflate) per UTC day, topic, partition and run, and "
        "manifest.json with counts, offsets and SHA-256 checksums. Run it daily (e.g. from "
        "cron) so that audits reach back past Kafka's retention; `replay --archive DIR` "
        "reads it. With --verify, check the archive against its manifest instead.",
    )
    archive.add_argument("directory", metavar="DIR", help="the archive folder")
    add_kafka_options(archive)
    archive.add_argument(
        "--before", default=None, metavar="WHEN",
        help="archive records older than this (default: the start of the current UTC day, "
        "so only whole days; `now` for everything)",
    )
    archive.add_argument(
        "--accept-gaps", action="store_true",
        help="where retention deleted records before they were archived, archive the rest "
        "and record the gap in the manifest (default: refuse)",
    )
    archive.add_argument("--verify", action="store_true", help="check the archive, copy nothing")
    archive.add_argument("--jobs", type=positive_int, metavar="N", help="processes")
    archive.add_argument("--no-progress", action="store_true", help="never show progress")
    archive.set_defaults(handler=run_archive_command)


def run_replay_command(args: argparse.Namespace) -> int:
    from streams.replay import run_replay, write_replay
    from streams.serialization import format_for

    settings = kafka_settings(args)
    source = _source(args)
    result = run_replay(settings, source, all_versions=args.all_versions, jobs=args.jobs,
                        progress=_progress(args))
    count, letters = write_replay(result, args.output, format_for(args.output, args.format))
    for warning in result.warnings:
        say(f"warning: {warning}")
    note = f"; dead letters in {letters}" if result.dead_letters else ""
    plural = "" if count == 1 else "s"
    say(f"{result.summary()}; {count:,} CDR{plural} written to {args.output}{note}")
    return 0


def run_audit_command(args: argparse.Namespace) -> int:
    from streams.audit import AuditWindow, run_audit, write_report
    from streams.replay import parse_when
    from streams.serialization import format_for

    settings = kafka_settings(args)
    source = _source(args, ranged=False)
    window = None
    if args.start or args.end:
        window = AuditWindow(
            parse_when(args.start) if args.start else None,
            parse_when(args.end) if args.end else None,
            round(args.margin * 1000),
        )
        start, end = window.start_ms, window.end_ms
        if start is not None and end is not None and start >= end:
            raise AuditError("--from must be before --to")
    if source.inputs and window is not None:
        raise AuditError("--from/--to need the topics or an archive")
    rebuilt_output = (args.rebuilt, format_for(args.rebuilt)) if args.rebuilt else None
    report, _replay = run_audit(
        settings, source, published_files=args.cdrs, window=window, ignore=args.ignore_field,
        jobs=args.jobs, progress=_progress(args), rebuilt_output=rebuilt_output,
    )
    if args.report:
        write_report(report, args.report)
    if args.json:
        sys.stdout.write(_json(report.to_json_dict()))
    else:
        sys.stdout.write(report.render(args.limit or None))
    if args.report:
        say(f"JSON report written to {args.report}")
    return 0 if report.ok else 1


def run_explain_command(args: argparse.Namespace) -> int:
    from streams.explain import explain

    settings = kafka_settings(args)
    explanation = explain(settings, _source(args), args.cdr_id, args.user, _progress(args))
    if args.json:
        sys.stdout.write(_json(explanation.to_json_dict()))
    else:
        sys.stdout.write(explanation.render())
    return 0


def run_archive_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from streams.archive import archive_topics, describe, verify_archive
    from streams.replay import parse_when

    if args.verify:
        checked, problems = verify_archive(args.directory, _progress(args))
        for line in describe(args.directory):
            print(line)
        for problem in problems:
            print(f"problem: {problem}")
        say(f"verified {checked:,} records: "
            + (f"{len(problems)} problem(s)" if problems else "the archive matches its manifest"))
        return 1 if problems else 0
    settings = kafka_settings(args)
    if args.before:
        before = parse_when(args.before)
    else:
        today = datetime.now(UTC).date()
        before = round(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp() * 1000)
    run = archive_topics(settings, args.directory, before, jobs=args.jobs,
                         progress=_progress(args), accept_gaps=args.accept_gaps)
    say(run.summary(args.directory))
    return 0
