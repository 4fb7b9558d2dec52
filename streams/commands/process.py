"""`cdrstream process`: file mode (SPEC section 6)."""

from __future__ import annotations

import argparse
from typing import Any

from streams.commands.common import add_config_option, positive_int, say, settings_from
from streams.filemode import process_file
from streams.gcpolicy import collect_rarely
from streams.serialization import format_for
from streams.sharded import default_jobs


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
    parser.add_argument(
        "--jobs", type=positive_int, metavar="N",
        help="processes to spread users over (same output; default: the CPUs, at most 4, "
        "for inputs of 8 MiB or more, else 1)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    collect_rarely()
    jobs = args.jobs or default_jobs(args.input)
    fmt = format_for(args.output, args.format)
    stats = process_file(settings, args.input, args.output, fmt, jobs=jobs)
    say(
        f"{stats.events} events -> {stats.cdrs} CDR versions for {stats.calls} records "
        f"in {args.output}; {stats.dead_letters} dead letters"
        + (f" in {stats.dead_letter_path}" if stats.dead_letters else "")
    )
    return 0
