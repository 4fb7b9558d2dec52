"""pytest plugin: a real Kafka broker for the test session.

Enable with ``pytest_plugins = ["tests.kafka_fixture"]`` in ``tests/conftest.py``.

``kafka_bootstrap`` (session scope) returns a ``host:port`` bootstrap string, taken from
the first of these that applies:

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: use that broker as is.
2. A Docker engine is reachable (and ``testcontainers``/``docker`` are importable):
   a ``testcontainers`` ``KafkaContainer`` in KRaft mode (image from
   ``KAFKA_TESTCONTAINERS_IMAGE``). If the container fails to start we fall through to 3.
3. Otherwise ``deploy/kafka-local.sh`` starts a single-node KRaft broker from the Maven
   Central jars on free ports with its own data dir, stopped and deleted at session end.

``KAFKA_TEST_BROKER=local`` or ``=docker`` forces 3 or 2 (default ``auto``).
The fixture never skips: if no broker can be had, the tests using it error out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_SCRIPT = REPO_ROOT / "deploy" / "kafka-local.sh"
CACHE_ROOT = REPO_ROOT / ".cache" / "kafka"
DATA_PREFIX = "pytest-"

# confluentinc/cp-kafka 8.x ships Apache Kafka 4.x (KRaft only), the same major
# version as deploy/kafka-local.sh.
DEFAULT_TC_IMAGE = "confluentinc/cp-kafka:8.0.0"
# First start may have to fetch the jars with Maven, then wait for the broker.
LOCAL_START_TIMEOUT_S = 900


def _kafka_container_class() -> Any:
    try:  # testcontainers >= 4.13 moved it; the old path still works but warns
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer
    return KafkaContainer


def _docker_reachable() -> bool:
    """True if the testcontainers Kafka module is importable and a Docker engine answers."""
    try:
        import docker

        _kafka_container_class()
    except Exception:
        return False
    try:
        client = docker.from_env(timeout=3)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            client.close()


@contextlib.contextmanager
def _testcontainers_kafka() -> Iterator[str]:
    kafka_container = _kafka_container_class()
    image = os.environ.get("KAFKA_TESTCONTAINERS_IMAGE", DEFAULT_TC_IMAGE)
    container = kafka_container(image).with_kraft()
    try:
        container.start(timeout=120)
        yield container.get_bootstrap_server()
    finally:
        with contextlib.suppress(Exception):
            container.stop()


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _local_env(port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_PORT=str(port),
        KAFKA_CONTROLLER_PORT=str(controller_port),
        KAFKA_DATA_DIR=str(data_dir),
        # readiness probe of kafka-local.sh (stdlib only); any python 3 will do
        KAFKA_PYTHON=sys.executable,
    )
    return env


def _run_script(
    command: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(LOCAL_SCRIPT), *command],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _reap_stale_local_brokers() -> None:
    """Stop/delete brokers left behind by earlier sessions that were killed (SIGKILL)."""
    if not CACHE_ROOT.is_dir():
        return
    for data_dir in CACHE_ROOT.glob(f"{DATA_PREFIX}*"):
        try:
            owner = int((data_dir / "owner.pid").read_text().strip())
            os.kill(owner, 0)
            continue  # owner alive (maybe a parallel session): leave it alone
        except ProcessLookupError:
            pass  # owner gone: stale
        except (OSError, ValueError):
            continue  # no/unreadable owner file (maybe being created): not ours to judge
        try:
            port, cport = (int(p) for p in data_dir.name[len(DATA_PREFIX) :].split("-"))
        except ValueError:
            continue
        _run_script(["stop", "--clean"], _local_env(port, cport, data_dir), timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def _local_kafka() -> Iterator[str]:
    _reap_stale_local_brokers()
    port, controller_port = _free_ports(2)
    data_dir = CACHE_ROOT / f"{DATA_PREFIX}{port}-{controller_port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "owner.pid").write_text(f"{os.getpid()}\n")
    env = _local_env(port, controller_port, data_dir)
    try:
        result = _run_script(["start"], env, timeout=LOCAL_START_TIMEOUT_S)
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            raise RuntimeError(
                f"deploy/kafka-local.sh start failed (exit {result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        yield lines[-1].strip()
    finally:
        stop = _run_script(["stop", "--clean"], env, timeout=120)
        if stop.returncode != 0:
            log.warning("kafka-local.sh stop failed: %s %s", stop.stdout, stop.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers (``host:port``) of a real Kafka broker for the whole session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        yield configured
        return

    mode = os.environ.get("KAFKA_TEST_BROKER", "auto").strip().lower()
    with contextlib.ExitStack() as stack:
        bootstrap = None
        if mode in ("auto", "docker") and _docker_reachable():
            try:
                bootstrap = stack.enter_context(_testcontainers_kafka())
            except Exception:
                if mode == "docker":
                    raise
                log.warning("testcontainers Kafka failed; using kafka-local.sh", exc_info=True)
        elif mode == "docker":
            raise RuntimeError("KAFKA_TEST_BROKER=docker but no Docker engine/testcontainers")
        if bootstrap is None:
            bootstrap = stack.enter_context(_local_kafka())
        yield bootstrap


@pytest.fixture
def kafka_topic_prefix() -> str:
    """A unique topic/group name prefix per test, e.g. ``t-1a2b3c4d-``."""
    return f"t-{uuid.uuid4().hex[:8]}-"
