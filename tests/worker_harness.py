"""Running the real worker against the test broker: configs, processes, polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from streams.cdr import Cdr
from streams.kafka_io import read_latest_cdrs, read_topic_to_end
from streams.serialization import decode_single_object
from streams.settings import Settings, default_config_text, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path, bootstrap: str, prefix: str, partitions: int = 3, encoding: str = "avro",
    *, store: str = "memory://",
) -> Settings:
    """The embedded default config plus [kafka] and [worker] tables private to one test."""
    text = (
        default_config_text()
        + f"""
[kafka]
bootstrap_servers = "{bootstrap}"
call_events_topic = "{prefix}call-events"
dtmf_events_topic = "{prefix}dtmf-events"
cdr_topic = "{prefix}cdr"
dlq_topic = "{prefix}cdr-dlq"
partitions = {partitions}
encoding = "{encoding}"
cdr_encoding = "{encoding}"

[worker]
app_id = "{prefix}cdrstream"
store = "{store}"
web_port = {free_port()}
web_bind = "127.0.0.1"
data_dir = "{path.parent / "worker-data"}"
idle_flush_seconds = 1
batch_timeout_seconds = 0.05
commit_interval_seconds = 0.5
rebalance_timeout_seconds = 5
session_timeout_seconds = 6
heartbeat_interval_seconds = 0.5
"""
    )
    path.write_text(text)
    return load_settings(path, environ={})


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"cdrstream {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


class WorkerProcess:
    """`cdrstream worker` in a subprocess, its output in a log file."""

    def __init__(self, config: Path, log: Path, web_port: int | None = None):
        self.log_path = log
        self._log = open(log, "ab")
        command = [sys.executable, "-m", "streams", "worker", "--config", str(config)]
        if web_port:
            command += ["--web-port", str(web_port)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def ensure_stopped(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        if not self._log.closed:
            self._log.close()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 1.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_for_cdrs(settings: Settings, expected: dict[str, Cdr], timeout: float) -> dict[str, Cdr]:
    """Poll the cdr topic until its final CDR set equals `expected` (or time out, then
    return what is there for the assertion to show)."""
    got: dict[str, Cdr] = {}

    def check() -> dict[str, Cdr] | None:
        nonlocal got
        got = read_latest_cdrs(settings)
        return got if got == expected else None

    try:
        return wait_for(check, timeout, "the final CDR set")
    except AssertionError:
        return got


def dead_letters(settings: Settings) -> list[dict[str, object]]:
    letters = []
    for record in read_topic_to_end(settings, settings.kafka.dlq_topic):
        _, letter = decode_single_object(record.value)
        letters.append(letter)
    return letters


def all_cdr_versions(settings: Settings) -> list[Cdr]:
    from streams.kafka_io import read_cdr_records

    return list(read_cdr_records(settings))
