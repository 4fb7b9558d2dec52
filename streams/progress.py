"""Progress of long runs on a terminal: done/total, events/s and an estimate of time left.

Shown on stderr only where stderr is a terminal and no CI is detected (the `CI`
environment variable, set by every common CI service), so pipes, log files and CI stay
quiet. Redraws are rate-limited; the line is cleared when the run ends.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

DEFAULT_INTERVAL = 0.25


def progress_wanted(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """True where a progress line helps: a terminal, not CI, not a dumb terminal."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    if environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    if environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """`0:07`, `3:25`, `1:02:03`."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """One progress line. `update(done)` as often as you like; it redraws at most every
    `interval` seconds. Use as a context manager, or call `close()`.

        with Progress("replay", total=1_000_000) as progress:
            for n, event in enumerate(events, 1):
                ...
                progress.update(n)
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "events",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_wanted(self.stream) if enabled is None else enabled
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._last_draw = float("-inf")
        self._width = 0

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(self.line(now))

    def add(self, count: int) -> None:
        self.update(self.done + count)

    def line(self, now: float | None = None) -> str:
        """The text of the progress line (without redraw control characters)."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.label}: {self.done:,}"]
        if self.total:
            share = min(self.done / self.total, 1.0)
            parts[0] += f"/{self.total:,} {self.unit} ({share:.0%})"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:,.0f} {self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"about {format_duration((self.total - self.done) / rate)} left")
        parts.append(f"{format_duration(elapsed)} elapsed")
        return ", ".join(parts)

    def _draw(self, text: str) -> None:
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        try:
            self.stream.write("\r" + text + padding)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False

    def close(self) -> None:
        """Clear the line (summaries are the caller's to print)."""
        if self.enabled and self._width:
            try:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
