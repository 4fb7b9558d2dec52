"""`cdrstream process`: file mode (SPEC section 6)."""

from __future__ import annotations

import argparse
from typing import Any

from streams.commands.common import add_config_option, say, settings_from
from streams.filemode import process_file
from streams.gcpolicy import collect_rarely
from streams.serialization import format_for


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "process", help="correlate an events file into CDRs (file mode)",
        description="Read events (JSON Lines or Avro, in the order given), write every CDR "
        "version issued, and dead letters to OUTPUT's name with .dlq.jsonl.",
    )
    add_config_option(parser)
    parser.add_argument("--input", required=True, metavar="EVENTS", help="events: .jsonl or .avro")
    parser.add_argument("--output", required=True, metavar="CDRS", help="CDR file to write")
    parser.add_argument(
        "--format", choices=("jsonl", "csv", "avro"),
        help="output format (default: by OUTPUT's extension, else jsonl)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    collect_rarely()
    stats = process_file(settings, args.input, args.output, format_for(args.output, args.format))
    say(
        f"{stats.events} events -> {stats.cdrs} CDR versions for {stats.calls} records "
        f"in {args.output}; {stats.dead_letters} dead letters"
        + (f" in {stats.dead_letter_path}" if stats.dead_letters else "")
    )
    return 0
