"""`cdrstream simulate`: a simulated business day of switch events (streams/simulate.py)."""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from streams.commands.common import add_config_option, say, settings_from
from streams.serialization import is_avro_path
from streams.simulate import (
    DEFAULT_DAY,
    SimulationOptions,
    SimulationStats,
    iter_events,
    write_day,
    write_truth,
)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a rate is a number from 0 to 1, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate", help="generate a realistic, reproducible day of switch events",
        description="Simulate one business day (08:00-18:00 in each user's time zone) of a "
        "firm's PBX traffic: calls with pre-dial and second-line account codes, corrections, "
        "incomplete and orphan entries, IVR digits, holds, Simultaneous Ring, busy and "
        "unanswered calls. The same arguments give the same file, byte for byte. Faults "
        "(re-sends, disorder, malformed lines) on request.",
    )
    add_config_option(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--output", metavar="EVENTS",
        help="events file to write: .avro for Avro, anything else JSON Lines",
    )
    target.add_argument(
        "--to-kafka", action="store_true",
        help="stream the day to the event topics in real time instead (see --rate)",
    )
    parser.add_argument(
        "--rate", type=float, metavar="N",
        help="with --to-kafka: send N events per second, each stamped with the wall-clock "
        "time it is sent (event time keeps pace with the clock; the day's durations are "
        "compressed accordingly). Without it the day plays at its own pace, shifted to now",
    )
    parser.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT[,...]",
        help="with --to-kafka: Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS, "
        "else [kafka] bootstrap_servers)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--users", type=_count, default=20,
        help="users in the firm (default 20); events grow linearly, about 280 per user",
    )
    parser.add_argument(
        "--date", type=_day, default=DEFAULT_DAY, metavar="YYYY-MM-DD",
        help=f"the business day (default {DEFAULT_DAY.isoformat()})",
    )
    parser.add_argument(
        "--calls-per-user", type=float, default=25.0, metavar="N",
        help="average calls per user-day (default 25)",
    )
    parser.add_argument(
        "--switches", default="sw1,sw2", metavar="IDS",
        help="comma-separated switch ids; users are spread over them (default sw1,sw2)",
    )
    parser.add_argument(
        "--resend-rate", type=_rate, default=0.0, metavar="P",
        help="share of events delivered twice (same event_id and content), a little later",
    )
    parser.add_argument(
        "--disorder-ms", type=_count, default=0, metavar="D",
        help="delay every event by a random 0..D-1 ms and write in order of arrival; "
        "keep D < settle_seconds*1000 for the CDRs not to depend on it (SPEC section 5)",
    )
    parser.add_argument(
        "--malformed-rate", type=_rate, default=0.0, metavar="P",
        help="after that share of events, an extra malformed line (JSON Lines output only)",
    )
    parser.add_argument(
        "--user-per-activity", action="store_true",
        help="each activity (a call with its code entries) under a user of its own, "
        "USER~N: for load tests that send a day's calls in minutes (see README)",
    )
    parser.add_argument(
        "--truth", metavar="FILE",
        help="also write the expected CDRs as scripted (ground truth) as JSON Lines",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    options = SimulationOptions(
        seed=args.seed, users=args.users, day=args.date, calls_per_user=args.calls_per_user,
        resend_rate=args.resend_rate, disorder_ms=args.disorder_ms,
        malformed_rate=args.malformed_rate,
        switches=tuple(name.strip() for name in args.switches.split(",")),
        user_per_activity=args.user_per_activity,
    )
    options.check()
    if options.disorder_ms >= settings.settle_ms:
        say(
            f"warning: --disorder-ms {options.disorder_ms} is not below settle_seconds "
            f"({settings.settle_ms} ms): some events arrive too late, and the CDRs may "
            "differ from those of the events in order"
        )
    if args.to_kafka:
        return _stream(args, options)
    stats = write_day(args.output, settings, options)
    fmt = "Avro" if is_avro_path(args.output) else "JSON Lines"
    faults = f"{stats.resends} re-sent, {stats.malformed} malformed"
    if options.disorder_ms:
        faults += f", disorder < {options.disorder_ms} ms"
    say(
        f"simulated {options.day.isoformat()}, seed {options.seed}, {stats.users} users: "
        f"{stats.calls} calls, {stats.code_entry_legs} code-entry legs, {stats.ring_legs} "
        f"ring legs; {stats.events} events, faults: {faults}; {stats.lines} records "
        f"({fmt}) in {args.output}"
    )
    if args.truth:
        count = write_truth(args.truth, settings, options)
        say(f"ground truth: {count} expected records in {args.truth}")
    return 0


def _stream(args: argparse.Namespace, options: SimulationOptions) -> int:
    from streams.commands.kafka import kafka_settings
    from streams.kafka_io import stream_events

    settings = kafka_settings(args)
    if options.malformed_rate:
        say("--malformed-rate is for files; to Kafka use `cdrstream publish --send-malformed`")
        return 2
    stats = SimulationStats()
    sent = stream_events(settings, iter_events(settings, options, stats), args.rate)
    say(f"sent {sent} events ({stats.calls} calls) to {settings.kafka.bootstrap_servers}")
    return 0
