"""`cdrstream demo`: the main job end to end on the embedded default, no Kafka needed.

A simulated business day of a law firm's calls (with the faults of a real feed) goes
through file mode into CDRs, and the CDRs into the billing report.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from streams.cdr import CALL, CODE_ENTRY, Cdr
from streams.commands.common import add_config_option, say, settings_from
from streams.commands.report import render_text, write_csv
from streams.filemode import process_file
from streams.report import BillingPolicy, build_report
from streams.serialization import latest_versions, read_cdrs
from streams.simulate import SimulationOptions, write_day


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="simulate a firm's day, correlate it into CDRs and report (no Kafka)",
        description=__doc__,
    )
    add_config_option(parser)
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="where files go")
    parser.add_argument("--users", type=int, default=20, help="users in the firm (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.set_defaults(handler=run)


def summary(cdrs: dict[str, Cdr]) -> list[str]:
    calls = [cdr for cdr in cdrs.values() if cdr.record_type == CALL]
    entries = [cdr for cdr in cdrs.values() if cdr.record_type == CODE_ENTRY]
    status = Counter(cdr.account_code_status for cdr in calls)
    entry_status = Counter(cdr.account_code_status for cdr in entries)
    corrected = sum(
        1 for cdr in calls if len({e.code for e in cdr.account_code_entries if e.complete}) > 1
    )
    ringing = sum(1 for cdr in calls if cdr.legs)
    return [
        f"{len(calls)} calls: {sum(c.billable for c in calls)} answered, {status['present']} with "
        f"a code, {status['missing']} missing a required code, {status['not_required']} "
        "needing none",
        f"{corrected} codes corrected by re-entry, "
        f"{ringing} Simultaneous Ring calls as one CDR each",
        f"{len(entries)} second-line entries: {entry_status['applied']} applied to a held call, "
        f"{entry_status['orphan']} orphans, {entry_status['incomplete']} incomplete",
    ]


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    events = out / "events.jsonl"
    options = SimulationOptions(
        seed=args.seed,
        users=args.users,
        resend_rate=0.01,
        disorder_ms=1500,
        malformed_rate=0.001,
    )
    stats = write_day(events, settings, options)
    say(
        f"1. simulated {options.day}: {stats.users} users, {stats.calls} calls, {stats.events} "
        f"events ({stats.resends} re-sent, {stats.malformed} malformed lines) -> {events}"
    )

    cdr_path = out / "cdrs.jsonl"
    result = process_file(settings, events, cdr_path)
    say(
        f"2. cdrstream process: {result.cdrs} CDR versions for {result.calls} records -> "
        f"{cdr_path}; {result.dead_letters} dead letters -> {result.dead_letter_path}"
    )
    latest = latest_versions(read_cdrs(cdr_path))
    for line in summary(latest):
        say(f"   {line}")

    policy = BillingPolicy.from_settings(
        settings.report.billing_increment_minutes, settings.report.minimum_billable_seconds
    )
    report = build_report(latest.values(), policy, settings.client_codes)
    written = write_csv(report, str(out / "report"))
    say(f"3. cdrstream report: {', '.join(str(path) for path in written)}")
    if not args.no_chart:
        from streams.charts import write_chart

        say(f"   chart: {write_chart(report, out / 'billable-hours.png')}")
    print()
    print(render_text(report))
    return 0
