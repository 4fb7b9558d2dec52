"""`cdrstream audit` on a real broker: the CDRs rebuilt from the event topics against the
latest versions on the `cdr` topic (issue: replay and audit).

A clean pipeline (the real worker) audits clean; CDRs altered on the topic (a wrong code,
a removed CDR, an extra CDR, a message that is no CDR) are found and reported with the
fields that differ, in the table and in the JSON report, and the exit status says so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.cdr import Cdr
from streams.kafka_io import create_topics, publish_file
from streams.serialization import encode_cdr_message, latest_versions, read_cdrs
from streams.settings import Settings
from tests.worker_harness import WorkerProcess, cli, wait_for_cdrs, write_config

pytestmark = pytest.mark.kafka


def simulate(path: Path, users: int, seed: int) -> Path:
    cli("simulate", "--users", str(users), "--seed", str(seed), "--resend-rate", "0.02",
        "--disorder-ms", "2000", "--output", str(path))
    return path


@pytest.fixture
def pipeline(tmp_path: Path, kafka_bootstrap: str, kafka_topic_prefix: str):
    """Topics of its own, a simulated day published, and file mode's CDRs of it."""
    config = tmp_path / "config.toml"
    settings = write_config(config, kafka_bootstrap, kafka_topic_prefix)
    create_topics(settings)
    events = simulate(tmp_path / "day.jsonl", users=5, seed=17)
    publish_file(settings, str(events))
    cdrs = tmp_path / "file-mode.jsonl"
    cli("process", "--config", str(config), "--input", str(events), "--output", str(cdrs))
    return config, settings, list(read_cdrs(cdrs))


def publish_cdrs(settings: Settings, cdrs: Iterable[Cdr], tombstones: Iterable[str] = (),
                 raw: Iterable[tuple[bytes, bytes]] = ()) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    try:
        for cdr in cdrs:
            producer.send(settings.kafka.cdr_topic, key=cdr.cdr_id.encode(),
                          value=encode_cdr_message(cdr, settings.kafka.cdr_encoding))
        for cdr_id in tombstones:
            producer.send(settings.kafka.cdr_topic, key=cdr_id.encode(), value=None)
        for key, value in raw:
            producer.send(settings.kafka.cdr_topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def audit(config: Path, report: Path, *extra: str) -> tuple[int, str, dict]:
    result = cli("audit", "--config", str(config), "--report", str(report), *extra, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, result.stdout, json.loads(report.read_text())


def test_a_clean_pipeline_with_the_real_worker_audits_clean(pipeline, tmp_path: Path) -> None:
    config, settings, versions = pipeline
    expected = latest_versions(versions)
    worker = WorkerProcess(config, tmp_path / "worker.log")
    try:
        got = wait_for_cdrs(settings, expected, 120)
        assert got == expected, worker.tail()
    finally:
        assert worker.terminate() == 0
    code, table, report = audit(config, tmp_path / "report.json")
    assert code == 0, table
    assert report["ok"] is True
    counts = report["counts"]
    assert counts["rebuilt"] == counts["published"] == counts["matching"] == len(expected)
    assert counts["missing"] == counts["extra"] == counts["differing"] == counts["unreadable"] == 0
    assert report["missing"] == report["extra"] == report["differing"] == []
    assert "PASSED" in table


def test_altered_cdrs_on_the_topic_are_found(pipeline, tmp_path: Path) -> None:
    config, settings, versions = pipeline
    publish_cdrs(settings, versions)  # what the worker would have published
    latest = latest_versions(versions)
    coded = sorted(
        (c for c in latest.values() if c.record_type == "call" and c.client_name),
        key=lambda c: c.cdr_id,
    )
    wrong, removed = coded[0], coded[1]
    other_code = next(code for code in ("1001", "2002", "3003") if code != wrong.account_code)
    altered = dataclasses.replace(
        wrong, version=wrong.version + 1, account_code=other_code, client_name="Somebody else"
    )
    extra = dataclasses.replace(
        latest[sorted(latest)[0]], cdr_id="sw9:forged1", switch_id="sw9", call_id="forged1"
    )
    publish_cdrs(settings, [altered, extra], tombstones=[removed.cdr_id],
                 raw=[(b"junk", b"this is not a CDR")])

    code, table, report = audit(config, tmp_path / "report.json")
    assert code == 1
    assert report["ok"] is False
    counts = report["counts"]
    problems = ("missing", "extra", "differing", "unreadable")
    assert [counts[kind] for kind in problems] == [1, 1, 1, 1]
    assert counts["matching"] == len(latest) - 2
    assert [m["cdr_id"] for m in report["missing"]] == [removed.cdr_id]
    assert report["missing"][0]["rebuilt"]["account_code"] == removed.account_code
    assert report["missing"][0]["published"] is None
    assert [e["cdr_id"] for e in report["extra"]] == ["sw9:forged1"]
    assert report["extra"][0]["rebuilt"] is None
    [differing] = report["differing"]
    assert differing["cdr_id"] == wrong.cdr_id
    fields = {f["field"]: (f["published"], f["rebuilt"]) for f in differing["fields"]}
    assert fields == {
        "version": (wrong.version + 1, wrong.version),
        "account_code": (other_code, wrong.account_code),
        "client_name": ("Somebody else", wrong.client_name),
    }
    [unreadable] = report["unreadable"]
    assert unreadable["key"] == "junk" and unreadable["topic"] == settings.kafka.cdr_topic
    # the readable table names each problem and field
    assert "FAILED" in table
    for text in (removed.cdr_id, "sw9:forged1", wrong.cdr_id, "account_code", "client_name",
                 "missing", "extra", "differing", "unreadable"):
        assert text in table, text

    # Fields can be left out of the comparison.
    code, _table, report = audit(config, tmp_path / "report2.json", "--ignore-field", "version")
    fields = {f["field"] for f in report["differing"][0]["fields"]}
    assert fields == {"account_code", "client_name"}


def test_audit_against_cdr_files(pipeline, tmp_path: Path) -> None:
    config, _settings, versions = pipeline
    good = tmp_path / "published.jsonl"
    cli("process", "--config", str(config), "--input", str(tmp_path / "day.jsonl"),
        "--output", str(good))
    code, table, report = audit(config, tmp_path / "r.json", "--cdrs", str(good))
    assert code == 0, table
    assert report["published_from"] == {"files": [str(good)]}
    lines = good.read_text().splitlines()
    record = json.loads(lines[-1])
    record["talk_ms"] += 1000
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n")
    code, _table, report = audit(config, tmp_path / "r2.json", "--cdrs", str(bad), "--json")
    assert code == 1
    [differing] = report["differing"]
    assert differing["cdr_id"] == record["cdr_id"]
    assert [f["field"] for f in differing["fields"]] == ["talk_ms"]
    assert len(versions) >= len(latest_versions(versions))


def test_audit_of_a_window_of_calls(pipeline, tmp_path: Path) -> None:
    config, settings, versions = pipeline
    publish_cdrs(settings, versions)
    latest = latest_versions(versions)
    code, table, report = audit(
        config, tmp_path / "r.json", "--from", "2000-01-01", "--to", "2100-01-01"
    )
    assert code == 0, table
    assert report["counts"]["matching"] == len(latest)
    assert report["window"]["from"] == "2000-01-01T00:00:00.000Z"
    # A window that holds no call: nothing to compare, nothing differs.
    code, _table, report = audit(
        config, tmp_path / "r2.json", "--from", "2001-01-01", "--to", "2001-01-02"
    )
    assert code == 0
    assert report["counts"]["rebuilt"] == report["counts"]["published"] == 0
