"""The `cdrstream` command line (also `python -m streams`): one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streams import __version__
from streams.errors import CdrStreamError

# Each module has `add_parser(subparsers)`, which registers its subcommand(s) and sets
# `handler(args) -> int` as the parser default.
COMMAND_MODULES = (
    "streams.commands.process",
    "streams.commands.kafka",
    "streams.commands.simulate",
    "streams.commands.report",
    "streams.commands.export",
    "streams.commands.audit",
    "streams.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdrstream",
        description="Turn telephone switch events into account-coded, versioned CDRs.",
    )
    parser.add_argument("--version", action="version", version=f"cdrstream {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CdrStreamError as error:
        print(f"cdrstream {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
