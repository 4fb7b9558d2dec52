"""`cdrstream explain`: the events that built one CDR and each decision behind it.

Scenarios are written with tests/builders.py and replayed from an event file; the last
test reads a real broker and shows topic, partition and offset.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from streams.errors import AuditError
from streams.explain import Explanation, explain
from streams.kafka_io import create_topics, publish_file
from streams.replay import ReplaySource, run_replay
from streams.serialization import latest_versions, read_cdrs, write_events
from streams.settings import Settings
from tests.builders import (
    BOB,
    LegScript,
    code_entry_at,
    code_entry_leg,
    events_of,
    settings,
)
from tests.worker_harness import cli, write_config


def explained(tmp_path: Path, config: Settings, cdr_id: str, *legs: LegScript) -> Explanation:
    path = tmp_path / "events.jsonl"
    write_events(path, events_of(*legs))
    source = ReplaySource(topics=False, inputs=(str(path),))
    explanation = explain(config, source, cdr_id)
    # what explain says is what a replay builds
    replayed = run_replay(config, source, progress=False).final[cdr_id]
    assert explanation.cdr == replayed
    orjson.dumps(explanation.to_json_dict())  # serializable
    return explanation


def decision(explanation: Explanation, rule: str, topic: str) -> str:
    found = [d.text for d in explanation.decisions if d.rule == rule and d.topic == topic]
    assert found, [(d.rule, d.topic) for d in explanation.decisions]
    return found[0]


def background() -> LegScript:
    """Another user's call in the same file: its events only move event time."""
    leg = LegScript("b1", user=BOB).outbound(10).keys("*711001", 11).dial(14)
    return leg.answer(16).release(900)


def test_second_line_code_for_an_inbound_call(tmp_path: Path) -> None:
    call = LegScript("a1").inbound(0).answer(2).hold(60).retrieve(80).release(300)
    incomplete = code_entry_leg("a2", 61, "*712#")
    complete = code_entry_leg("a3", 66, "*712002")
    result = explained(tmp_path, settings(), "sw1:a1", call, incomplete, complete, background())
    assert result.user_id == "alice@smithlaw.example"
    assert result.partition is None
    assert result.cdr.account_code == "2002"

    legs = {seen.event.call_id for seen, _role in result.events}
    assert legs == {"a1", "a2", "a3"}  # not the other user's call
    roles = {seen.event.call_id: role for seen, role in result.events}
    assert roles == {"a1": "this call", "a2": "second line", "a3": "second line"}
    origins = [seen.origin for seen, _role in result.events]
    assert all(o is not None and o.source.endswith("events.jsonl") and o.partition is None
               for o in origins)

    second_lines = [d.text for d in result.decisions if d.topic == "second-line entry"]
    assert len(second_lines) == 2
    a2, a3 = sorted(second_lines, key=lambda text: "sw1:a3" in text)
    assert "incomplete" in a2 and "ended by '#'" in a2 and "sw1:a1 was on hold since" in a2
    assert "code 2002" in a3 and "sw1:a1 was on hold since" in a3 and "rule C2" in a3
    assert "the code is 2002" in decision(result, "C3", "account code")
    assert "inbound" in decision(result, "C6", "code required")
    assert decision(result, "C6", "status").startswith("present")
    assert "Estate of Miller" in decision(result, "registry", "client")
    assert [v.version for v in result.versions] == [1]

    text = result.render()
    assert "[C2] second-line entry" in text
    assert "events.jsonl:" in text
    assert "v1: issued on event time reaching" in text


def test_a_correction_makes_version_two(tmp_path: Path) -> None:
    config = settings(correction_window_seconds=120)
    call = LegScript("a1").outbound(0).keys("12", 1).dial(2).answer(5).release(100)
    correction = code_entry_leg("a2", 130, "*711001")
    result = explained(tmp_path, config, "sw1:a1", call, correction, background())
    assert "requires codes" in decision(result, "C6", "code required")
    assert "corrects it (rule C5)" in decision(result, "C5", "second-line entry")
    assert "do not begin with the feature access code" in decision(result, "C1", "pre-dial digits")
    first, second = result.versions
    assert (first.version, second.version) == (1, 2)
    changed = {name: (before, after) for name, before, after in second.fields}
    assert changed["account_code"] == (None, "1001")
    assert changed["account_code_status"] == ("missing", "present")
    assert {seen.event.call_id for seen in second.events_since} == {"a2"}
    assert "another user's event" in second.trigger or "end of the replayed" in second.trigger
    text = result.render()
    assert "account_code: null -> 1001" in text
    assert "events of this CDR since the previous version" in text


def test_orphan_code_entry(tmp_path: Path) -> None:
    orphan = code_entry_at("c1", 500)
    result = explained(tmp_path, settings(), "sw1:c1", orphan, background())
    assert result.cdr.record_type == "code_entry"
    text = decision(result, "C4", "where the code went")
    assert "orphan" in text and "correction window is off" in text
    assert decision(result, "C2", "status").startswith("orphan")


def test_unknown_cdr(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_events(path, events_of(background()))
    with pytest.raises(AuditError, match="no event of leg sw1:zz"):
        explain(settings(), ReplaySource(topics=False, inputs=(str(path),)), "sw1:zz")


@pytest.mark.kafka
def test_explain_from_the_topics_shows_offsets_and_the_second_line_decision(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic_prefix: str
) -> None:
    config = tmp_path / "config.toml"
    kafka = write_config(config, kafka_bootstrap, kafka_topic_prefix)
    create_topics(kafka)
    events = tmp_path / "day.jsonl"
    cli("simulate", "--users", "4", "--seed", "2", "--resend-rate", "0.02", "--output", str(events))
    publish_file(kafka, str(events))
    cdrs = tmp_path / "cdrs.jsonl"
    cli("process", "--config", str(config), "--input", str(events), "--output", str(cdrs))
    inbound = sorted(
        cdr.cdr_id for cdr in latest_versions(read_cdrs(cdrs)).values()
        if cdr.direction == "inbound" and cdr.record_type == "call"
        and any(e.via == "second_line" for e in cdr.account_code_entries)
        and cdr.hold_ms > 0
    )
    assert inbound
    text = cli("explain", inbound[0], "--config", str(config)).stdout
    assert f"{kafka_topic_prefix}call-events[" in text and "]@" in text
    assert f"{kafka_topic_prefix}dtmf-events[" in text
    assert "[C2] second-line entry" in text and "was on hold since" in text
    assert "[C6] code required: not required" in text
    report = json.loads(cli("explain", inbound[0], "--config", str(config), "--json").stdout)
    assert report["cdr_id"] == inbound[0]
    origin = report["events"][0]["origin"]
    assert set(origin) == {"topic", "partition", "offset"}
    assert origin["topic"].startswith(kafka_topic_prefix)
    decisions = [(d["rule"], d["decision"]) for d in report["decisions"]]
    assert ("C2", "second-line entry") in decisions
    # with the user given, the same answer
    again = cli("explain", inbound[0], "--config", str(config), "--json",
                "--user", report["user_id"]).stdout
    assert json.loads(again)["events"] == report["events"]
