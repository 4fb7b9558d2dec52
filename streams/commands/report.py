"""`cdrstream report`: billable time per client, code compliance and unknown codes.

The numbers come from `streams.report` (see its docstring for the billing convention);
this module reads the CDR file and renders: a plain aligned table on stdout, CSV files
with `--csv`, a PNG chart with `--chart` (`streams.charts`).

CSV files (`--csv PREFIX` writes PREFIX-billing.csv, PREFIX-compliance.csv and
PREFIX-unknown-codes.csv; `--csv DIR/` or an existing directory writes
DIR/cdr-report[-DATE][-GROUP]-billing.csv and so on), UTF-8 with a header row:

- billing: group_id, account_code ("(none)" for calls without a code), client_name
  (registry name, "(unknown code)", "(no registry)" or "(no code)"), calls (answered call records),
  unbilled_calls (calls that bill nothing: zero length or under the minimum),
  talk_seconds, hold_seconds, connected_seconds (talk + hold, the billed base; seconds with
  3 decimals), billed_increments, increment_minutes, billed_minutes, billed_hours
  (up to 4 decimals).
- compliance: group_id, user_id, required_calls (call records with
  account_code_required), present, missing, missing_percent (one decimal).
- unknown-codes: group_id, account_code, calls, users (user ids, sorted, ";"-separated).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.commands.common import add_config_option, say, settings_from
from streams.errors import CdrStreamError
from streams.report import (
    BillingPolicy,
    BillingRow,
    Report,
    build_report,
    format_hours,
)
from streams.serialization import read_cdrs

Table = tuple[tuple[str, ...], Sequence[tuple[str, ...]]]

BILLING_COLUMNS = (
    "group_id", "account_code", "client_name", "calls", "unbilled_calls", "talk_seconds",
    "hold_seconds", "connected_seconds", "billed_increments", "increment_minutes",
    "billed_minutes", "billed_hours",
)
COMPLIANCE_COLUMNS = (
    "group_id", "user_id", "required_calls", "present", "missing", "missing_percent",
)
UNKNOWN_CODE_COLUMNS = ("group_id", "account_code", "calls", "users")
CSV_SECTIONS = ("billing", "compliance", "unknown-codes")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="billable hours per client, code compliance, unknown codes",
        description="Report on a CDR file (JSON Lines, CSV or Avro; the latest version of each "
        "CDR counts): billable time per group and client code, rounded up per call to the "
        "billing increment; per user, calls that required a code and how many had none; codes "
        "the registry does not know. A table goes to stdout.",
    )
    add_config_option(parser)
    parser.add_argument("--input", required=True, metavar="CDRS",
                        help="CDR file: .jsonl, .csv or .avro")
    parser.add_argument("--date", type=_iso_date, metavar="YYYY-MM-DD",
                        help="only CDRs of this local date (default: all)")
    parser.add_argument("--group", metavar="G", help="only CDRs of this group (default: all)")
    parser.add_argument(
        "--increment-minutes", type=_increment, metavar="M",
        help="billing increment in minutes (default: [report] billing_increment_minutes, 6)",
    )
    parser.add_argument(
        "--csv", metavar="OUT_PREFIX_OR_DIR",
        help="also write PREFIX-billing.csv, PREFIX-compliance.csv, PREFIX-unknown-codes.csv "
        "(a directory: DIR/cdr-report[-DATE][-GROUP]-*.csv)",
    )
    parser.add_argument("--chart", metavar="OUT.png",
                        help="also draw billable hours per client, per group (needs matplotlib)")
    parser.set_defaults(handler=run)


def _iso_date(text: str) -> str:
    try:
        valid = len(text) == 10 and dt.date.fromisoformat(text).isoformat() == text
    except ValueError:
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD")
    return text


def _increment(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not 0 < value <= 1440 or round(value * 60_000) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the increment must be > 0 and <= 1440 minutes")
    return value


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    minutes = args.increment_minutes
    if minutes is None:
        minutes = settings.report.billing_increment_minutes
    policy = BillingPolicy.from_settings(minutes, settings.report.minimum_billable_seconds)
    report = build_report(read_cdrs(args.input), policy, settings.client_codes,
                          args.date, args.group)
    print(render_text(report))
    if args.csv:
        for path in write_csv(report, args.csv):
            say(f"wrote {path}")
    if args.chart:
        from streams.charts import write_chart

        say(f"wrote {write_chart(report, args.chart)}")
    return 0


# ---------------------------------------------------------------- cells


def seconds_text(ms: int) -> str:
    """Milliseconds as seconds with 3 decimals: 361001 -> 361.001."""
    return f"{ms // 1000}.{ms % 1000:03d}"


def clock_text(ms: int) -> str:
    """Milliseconds as H:MM:SS, whole seconds cut off: 361001 -> 0:06:01."""
    total = ms // 1000
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def minutes_text(report: Report, increments: int) -> str:
    return format_hours(report.policy.increment_minutes * increments, 4)


# ---------------------------------------------------------------- tables


def csv_tables(report: Report) -> dict[str, Table]:
    """The CSV sections: name -> (header, rows of text)."""
    billing = [
        (row.group_id, row.code_label, row.client_name, str(row.calls), str(row.unbilled_calls),
         seconds_text(row.talk_ms), seconds_text(row.hold_ms), seconds_text(row.connected_ms),
         str(row.billed_increments), minutes_text(report, 1),
         minutes_text(report, row.billed_increments), format_hours(row.billed_hours, 4))
        for row in report.billing
    ]
    compliance = [
        (row.group_id, row.user_id, str(row.required_calls), str(row.present), str(row.missing),
         str(row.missing_percent))
        for row in report.compliance
    ]
    unknown = [
        (row.group_id, row.account_code, str(row.calls), ";".join(row.users))
        for row in report.unknown_codes
    ]
    return {
        "billing": (BILLING_COLUMNS, billing),
        "compliance": (COMPLIANCE_COLUMNS, compliance),
        "unknown-codes": (UNKNOWN_CODE_COLUMNS, unknown),
    }


def _group_total(group_id: str, rows: Sequence[BillingRow]) -> BillingRow:
    return BillingRow(
        group_id=group_id, account_code=None, client_name="",
        calls=sum(row.calls for row in rows),
        unbilled_calls=sum(row.unbilled_calls for row in rows),
        talk_ms=sum(row.talk_ms for row in rows), hold_ms=sum(row.hold_ms for row in rows),
        billed_increments=sum(row.billed_increments for row in rows),
        increment_ms=rows[0].increment_ms,
    )


def _billing_text_row(row: BillingRow, code: str) -> tuple[str, ...]:
    return (row.group_id, code, row.client_name, str(row.calls), str(row.unbilled_calls),
            clock_text(row.connected_ms), str(row.billed_increments),
            format_hours(row.billed_hours))


def text_tables(report: Report) -> list[tuple[str, Table, set[int]]]:
    """The terminal sections: (title, table, right-aligned columns)."""
    billing: list[tuple[str, ...]] = []
    for group in report.groups:
        rows = [row for row in report.billing if row.group_id == group]
        billing.extend(_billing_text_row(row, row.code_label) for row in rows)
        if len(report.groups) > 1 or len(rows) > 1:
            billing.append(_billing_text_row(_group_total(group, rows), "TOTAL"))
    compliance = [
        (row.group_id, row.user_id, str(row.required_calls), str(row.present), str(row.missing),
         f"{row.missing_percent}%")
        for row in report.compliance
    ]
    unknown = [
        (row.group_id, row.account_code, str(row.calls), ", ".join(row.users))
        for row in report.unknown_codes
    ]
    return [
        ("Billable time per client (answered calls; connected = talk + hold)",
         (("GROUP", "CODE", "CLIENT", "CALLS", "UNBILLED", "CONNECTED", "INCREMENTS", "HOURS"),
          billing), {3, 4, 5, 6, 7}),
        ("Account-code compliance (calls that required a code)",
         (("GROUP", "USER", "REQUIRED", "PRESENT", "MISSING", "MISSING %"), compliance),
         {2, 3, 4, 5}),
        ("Unknown account codes (not in the group's registry)",
         (("GROUP", "CODE", "CALLS", "USERS"), unknown), {2}),
    ]


def format_table(table: Table, right: set[int]) -> list[str]:
    """Plain text columns, two spaces apart; numbers right-aligned."""
    header, rows = table
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
    out = []
    for line in (header, *rows):
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def render_text(report: Report) -> str:
    """The whole report as terminal text."""
    policy = report.policy
    increment = policy.increment_minutes.normalize()
    scope = [
        f"date {report.date}" if report.date else "all dates",
        f"group {report.group}" if report.group else "all groups",
    ]
    lines = [
        f"cdrstream report: {', '.join(scope)}; {report.records} CDRs (latest versions)",
        f"billing: {increment:f}-minute increments "
        f"({format_hours(policy.increment_minutes / 60, 4)} h), rounded up per call; "
        f"minimum {seconds_text(policy.minimum_ms).rstrip('0').rstrip('.')} s",
    ]
    for title, table, right in text_tables(report):
        lines += ["", title]
        lines += format_table(table, right) if table[1] else ["  (none)"]
    return "\n".join(lines)


# ---------------------------------------------------------------- CSV files


def csv_prefix(target: str, report: Report) -> Path:
    """PREFIX as given, or DIR/cdr-report[-DATE][-GROUP] for a directory."""
    path = Path(target)
    if path.is_dir() or target.endswith(("/", "\\")):
        name = "-".join(["cdr-report", *(part for part in (report.date, report.group) if part)])
        return path / name
    return path


def write_csv(report: Report, target: str) -> list[Path]:
    """Write one CSV per section; returns the paths written."""
    prefix = csv_prefix(target, report)
    written = []
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        for name, (header, rows) in csv_tables(report).items():
            path = prefix.parent / f"{prefix.name}-{name}.csv"
            with open(path, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)
            written.append(path)
    except OSError as error:
        raise CdrStreamError(f"cannot write CSV {error.filename}: {error.strerror}") from None
    return written
