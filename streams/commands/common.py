"""Options and helpers that several subcommands share."""

from __future__ import annotations

import argparse
import sys

from streams.settings import Settings, load_settings


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="CONFIG.toml",
        help="configuration file (default: the embedded default, see README)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def say(message: str) -> None:
    """Progress and summaries go to stderr, so stdout stays for data."""
    print(message, file=sys.stderr)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value
