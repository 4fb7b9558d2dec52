"""Kafka-facing subcommands: `topics`, `publish`, `worker` and `cdrs`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from streams.cdr import Cdr
from streams.commands.common import add_config_option, say
from streams.serialization import CdrWriter, latest_versions
from streams.settings import Settings, load_settings
from streams.timefmt import format_iso


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS, else [kafka] "
        "bootstrap_servers of the config)",
    )


def kafka_settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if args.bootstrap_servers:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
        settings = settings.model_copy(update={"kafka": kafka})
    return settings


def add_parser(subparsers: Any) -> None:
    topics = subparsers.add_parser("topics", help="manage cdrstream's Kafka topics")
    topics_sub = topics.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = topics_sub.add_parser(
        "create", help="create the event, cdr and dead-letter topics (idempotent)"
    )
    add_kafka_options(create)
    create.set_defaults(handler=run_topics_create)

    publish = subparsers.add_parser(
        "publish", help="send an events file to the event topics, as a switch would"
    )
    add_kafka_options(publish)
    publish.add_argument("--input", required=True, metavar="EVENTS", help="events: .jsonl or .avro")
    publish.add_argument(
        "--send-malformed",
        action="store_true",
        help="send lines that are not valid events raw to call-events (dead-letter drills)",
    )
    publish.set_defaults(handler=run_publish)

    worker = subparsers.add_parser("worker", help="run the streaming worker (Faust)")
    add_kafka_options(worker)
    worker.add_argument("--web-port", type=int, help="port of /metrics (default [worker] web_port)")
    worker.add_argument(
        "--loglevel", default="warning", choices=("debug", "info", "warning", "error")
    )
    worker.set_defaults(handler=run_worker_command)

    cdrs = subparsers.add_parser("cdrs", help="read the cdr topic")
    cdrs_sub = cdrs.add_subparsers(dest="action", metavar="ACTION", required=True)
    tail = cdrs_sub.add_parser(
        "tail", help="follow the cdr topic, one readable line per CDR version"
    )
    add_kafka_options(tail)
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest CDR")
    tail.add_argument("--json", action="store_true", help="print each CDR as JSON")
    tail.add_argument(
        "--idle-exit", type=float, metavar="SECONDS", help="stop after this long without a new CDR"
    )
    tail.set_defaults(handler=run_cdrs_tail)
    dump = cdrs_sub.add_parser("dump", help="write the latest version of every CDR on the topic")
    add_kafka_options(dump)
    dump.add_argument("--output", required=True, metavar="FILE", help=".jsonl, .csv or .avro")
    dump.set_defaults(handler=run_cdrs_dump)


def run_topics_create(args: argparse.Namespace) -> int:
    from streams.kafka_io import create_topics

    for line in create_topics(kafka_settings(args)):
        print(line)
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from streams.kafka_io import publish_file

    stats = publish_file(kafka_settings(args), args.input, args.send_malformed)
    rate = stats.events / stats.seconds if stats.seconds else 0.0
    note = ""
    if stats.malformed:
        verb = "sent raw" if args.send_malformed else "refused (not valid events)"
        note = f"; {stats.malformed} lines {verb}"
    say(f"published {stats.events} messages in {stats.seconds:.1f} s ({rate:,.0f}/s){note}")
    return 0


def run_worker_command(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    settings = kafka_settings(args)
    if args.web_port:
        worker = settings.worker.model_copy(update={"web_port": args.web_port})
        settings = settings.model_copy(update={"worker": worker})
    sys.argv = [sys.argv[0]]  # Faust's worker reads the command line
    run_worker(settings, args.loglevel)
    return 0


def describe(cdr: Cdr) -> str:
    """One readable line for a CDR version."""
    code = cdr.account_code or "-"
    client = f" ({cdr.client_name})" if cdr.client_name else ""
    target = f" -> {cdr.applied_to_cdr_id}" if cdr.applied_to_cdr_id else ""
    return (
        f"{cdr.cdr_id} v{cdr.version} {cdr.record_type:<10} {cdr.user_id} {cdr.direction:<8} "
        f"{format_iso(cdr.start_time)} {cdr.duration_ms / 1000:>7.1f}s "
        f"code={code}{client} [{cdr.account_code_status}]{target}"
    )


def run_cdrs_tail(args: argparse.Namespace) -> int:
    from streams.kafka_io import follow_cdrs

    for cdr in follow_cdrs(kafka_settings(args), args.from_beginning, args.idle_exit):
        line = orjson.dumps(cdr.to_json_dict()).decode() if args.json else describe(cdr)
        print(line, flush=True)
    return 0


def run_cdrs_dump(args: argparse.Namespace) -> int:
    from streams.kafka_io import read_cdr_records
    from streams.serialization import format_for

    latest = latest_versions(read_cdr_records(kafka_settings(args)))
    with CdrWriter(args.output, format_for(args.output)) as writer:
        for cdr_id in sorted(latest):
            writer.write(latest[cdr_id])
    say(f"{len(latest)} CDRs (latest versions) written to {args.output}")
    return 0
