"""Rule C9: every bad input goes to the dead letters with its reason and origin, and the
rest still makes CDRs (file mode: `CDRS.dlq.jsonl` beside the output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli import main
from streams.engine import Engine
from streams.errors import EventDecodeError
from streams.events import decode_event
from streams.serialization import latest_versions, read_cdrs
from tests.builders import LegScript, at, events_of, feed_all, run, settings

CONFIG = Path(__file__).parent / "examples" / "config.toml"


def good_legs() -> list[LegScript]:
    x1 = LegScript("x1").outbound(0).keys("*711001", 1).dial(5).answer(8).release(60)
    y1 = LegScript("y1").inbound(100).answer(102).release(160)
    return [x1, y1]


def as_dict(leg: LegScript, index: int, /, **changes: Any) -> dict[str, Any]:
    """Leg event `index` in its JSON form, under a new event_id, with `changes`."""
    out = leg.events[index].to_json_dict()
    out.update(event_id=f"bad-{leg.call_id}-{index}-{sorted(changes.items())}")
    out.update(changes)
    return out


def line(value: Any) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


# (name, raw line, expected reason fragment); each is a malformed copy of y1's events
def malformed() -> list[tuple[str, bytes, str]]:
    y1 = good_legs()[1]
    missing = as_dict(y1, 1)
    del missing["user_id"]
    return [
        ("not json", b'{"event_id": "e1", "type": ', "not valid JSON"),
        ("not an object", b"[1, 2, 3]", "an event must be an object, got list"),
        ("a string", b'"call_started"', "an event must be an object, got str"),
        ("missing field", line(missing), "field 'user_id' must be a non-empty string"),
        ("wrong type", line(as_dict(y1, 1, seq="1")), "field 'seq' must be an integer >= 0"),
        ("bool seq", line(as_dict(y1, 1, seq=True)), "field 'seq' must be an integer >= 0"),
        ("number ts", line(as_dict(y1, 1, ts=1.5)), "field 'ts' must be an ISO 8601"),
        ("unknown type", line(as_dict(y1, 1, type="call_parked")), "unknown event type"),
        ("bad digit", line(as_dict(y1, 1, type="dtmf", digit="A")), "field 'digit'"),
        ("two digits", line(as_dict(y1, 1, type="dtmf", digit="12")), "field 'digit'"),
        ("bad direction", line(as_dict(y1, 0, direction="sideways")), "field 'direction'"),
        ("bad category", line(as_dict(y1, 1, type="call_dialed", called_number="+1",
                                      call_category="premium")), "field 'call_category'"),
        ("negative seq", line(as_dict(y1, 1, seq=-1)), "field 'seq' must be an integer >= 0"),
        ("naive ts", line(as_dict(y1, 1, ts="2026-11-24T14:01:42.000")), "field 'ts'"),
        ("bad ts", line(as_dict(y1, 1, ts="yesterday")), "field 'ts'"),
        ("empty call_id", line(as_dict(y1, 1, call_id="")), "field 'call_id'"),
        ("null cause", line(as_dict(y1, 2, cause=None)), "field 'cause'"),
        ("bad party", line(as_dict(y1, 2, releasing_party="both")), "field 'releasing_party'"),
    ]


def process(tmp_path: Path, lines: list[bytes]) -> tuple[Path, list[dict[str, Any]]]:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "cdrs.jsonl"
    status = main(["process", "--config", str(CONFIG), "--input", str(events),
                   "--output", str(output)])
    assert status == 0
    dlq = tmp_path / "cdrs.dlq.jsonl"
    letters = [orjson.loads(row) for row in dlq.read_bytes().splitlines()] if dlq.exists() else []
    return output, letters


def good_lines() -> list[bytes]:
    return [orjson.dumps(e.to_json_dict()) for e in events_of(*good_legs())]


def expected_cdrs() -> dict[str, Any]:
    return run(settings(), *good_legs()).latest


def test_clean_input_has_no_dead_letter_file(tmp_path: Path) -> None:
    output, letters = process(tmp_path, good_lines())
    assert letters == []
    assert not (tmp_path / "cdrs.dlq.jsonl").exists()
    assert latest_versions(read_cdrs(output)) == expected_cdrs()


def test_every_malformed_line_is_a_dead_letter_with_reason_and_origin(tmp_path: Path) -> None:
    bad = malformed()
    lines = good_lines()
    # a bad line after every good one, the rest at the end
    mixed: list[bytes] = []
    for index, good in enumerate(lines):
        mixed.append(good)
        if index < len(bad):
            mixed.append(bad[index][1])
    mixed.extend(raw for _, raw, _ in bad[len(lines):])
    output, letters = process(tmp_path, mixed)
    assert latest_versions(read_cdrs(output)) == expected_cdrs()
    events_path = str(tmp_path / "events.jsonl")
    assert len(letters) == len(bad)
    by_line = {letter["origin"]["line"]: letter for letter in letters}
    for name, raw, reason in bad:
        number = mixed.index(raw) + 1
        letter = by_line[number]
        assert letter["origin"] == {"file": events_path, "line": number}, name
        assert reason in letter["reason"], (name, letter["reason"])
        # the raw text of a line that is no event object (serialization.py keeps the
        # line's newline there, but not for a line that is no JSON)
        assert ("event" in letter) or letter["raw"] == raw.decode(), name


def test_malformed_payload_is_kept(tmp_path: Path) -> None:
    y1 = good_legs()[1]
    bad = as_dict(y1, 1, type="dtmf", digit="A")
    _, letters = process(tmp_path, [*good_lines(), line(bad)])
    [letter] = letters
    assert letter["event"] == bad
    _, letters = process(tmp_path, [*good_lines(), b"not json at all"])
    assert letters[0]["raw"] == "not json at all"


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    output, letters = process(tmp_path, [b"", *good_lines(), b"   ", b""])
    assert letters == []
    assert latest_versions(read_cdrs(output)) == expected_cdrs()


def insert_after(lines: list[bytes], event_id: str, extra: list[bytes]) -> list[bytes]:
    index = next(i for i, raw in enumerate(lines) if orjson.loads(raw)["event_id"] == event_id)
    return [*lines[: index + 1], *extra, *lines[index + 1:]]


# x1's events by seq: started, seven digits, dialed, answered, released
DIALED, ANSWERED, RELEASED = 8, 9, 10


@pytest.mark.parametrize(("name", "make", "reason"), [
    ("duplicate seq with another id",
     lambda x1: as_dict(x1, 6, event_id="zz-dup", digit="9"),
     "leg sw1:x1 already has an event with seq 6"),
    ("event after the release",
     lambda x1: as_dict(x1, 6, seq=RELEASED + 1, digit="5"),
     "event ordered after the release of leg sw1:x1"),
    ("answer after the release",
     lambda x1: as_dict(x1, ANSWERED, seq=RELEASED + 1),
     "event ordered after the release of leg sw1:x1"),
])
def test_contract_breaks_are_dead_letters(
    tmp_path: Path, name: str, make: Any, reason: str
) -> None:
    x1 = good_legs()[0]
    assert [e.type for e in x1.events][DIALED:] == [
        "call_dialed", "call_answered", "call_released"
    ]
    bad = line(make(x1))
    lines = insert_after(good_lines(), f"sw1:x1:{RELEASED}", [bad])
    output, letters = process(tmp_path, lines)
    assert latest_versions(read_cdrs(output)) == expected_cdrs(), name
    [letter] = letters
    assert letter["reason"] == reason
    assert letter["origin"] == {"file": str(tmp_path / "events.jsonl"),
                                "line": lines.index(bad) + 1}


@pytest.mark.parametrize("kind", ["call_started", "call_dialed", "call_answered"])
def test_second_event_of_a_once_per_leg_type(kind: str) -> None:
    leg = LegScript("z1").outbound(0).dial(1).answer(3)
    twice = {"call_started": leg.outbound, "call_dialed": leg.dial, "call_answered": leg.answer}
    twice[kind](4)
    leg.release(60)
    clean = LegScript("z1").outbound(0).dial(1).answer(3).release(60)
    result = run(settings(), leg)
    assert result.latest["sw1:z1"] == run(settings(), clean).latest["sw1:z1"]
    [letter] = result.letters
    assert letter.reason == f"leg sw1:z1 already has a {kind} event"
    assert letter.event_id == "sw1:z1:3"


def test_duplicate_seq_keeps_the_same_event_whatever_the_order() -> None:
    leg = LegScript("z1").outbound(0).dial(1).answer(3).release(60)
    other = leg.events[2].replace(event_id="aa-other", ts=at(4))  # sorts before sw1:z1:2
    for order in ([*leg.events, other], [other, *leg.events]):
        result = run(settings(), order)
        assert result.latest["sw1:z1"].answer_time == at(4)
        [letter] = result.letters
        assert letter.event_id == "sw1:z1:2"
        assert letter.reason == "leg sw1:z1 already has an event with seq 2"


def test_second_release_after_the_first(tmp_path: Path) -> None:
    x1 = good_legs()[0]
    again = line(as_dict(x1, RELEASED, seq=RELEASED + 1, ts="2026-11-24T14:01:01.000Z"))
    _, letters = process(tmp_path, insert_after(good_lines(), f"sw1:x1:{RELEASED}", [again]))
    [letter] = letters
    # ordered after the release; a second call_released in any case
    assert letter["reason"] == "event ordered after the release of leg sw1:x1"


def test_leg_without_call_started(tmp_path: Path) -> None:
    q1 = LegScript("q1").inbound(200).answer(202).release(260)
    headless = [orjson.dumps(e.to_json_dict()) for e in q1.events[1:]]
    output, letters = process(tmp_path, [*good_lines(), *headless])
    assert latest_versions(read_cdrs(output)) == expected_cdrs()
    assert [letter["reason"] for letter in letters] == [
        "call leg sw1:q1 has no call_started event"
    ] * 2
    assert [letter["event"]["seq"] for letter in letters] == [1, 2]


def test_code_entry_leg_without_call_started() -> None:
    c1 = LegScript("c1").outbound(0).keys("*711001", 1).release(5)
    result = run(settings(), c1.events[1:])
    assert result.cdrs == []
    assert {letter.reason for letter in result.letters} == {
        "call leg sw1:c1 has no call_started event"
    }
    assert len(result.letters) == len(c1.events) - 1


def test_late_event_after_the_call_is_final() -> None:
    engine = Engine(settings())
    x1, y1 = good_legs()
    feed_all(engine, events_of(x1, y1))
    answered_again = x1.events[ANSWERED].replace(event_id="late-1", seq=30)
    [letter] = engine.feed(answered_again)
    assert letter.reason == "late event: call leg sw1:x1 is already final"  # type: ignore[union-attr]


def test_one_bad_event_does_not_stop_the_stream(tmp_path: Path) -> None:
    lines = good_lines()
    lines.insert(1, b"\xff\xfe garbage")
    output, letters = process(tmp_path, lines)
    assert len(letters) == 1
    assert letters[0]["origin"]["line"] == 2
    assert latest_versions(read_cdrs(output)) == expected_cdrs()


def test_timestamps_with_an_offset_are_accepted(tmp_path: Path) -> None:
    y1 = good_legs()[1]
    shifted = as_dict(y1, 1, ts="2026-11-24T09:01:42.000-05:00")
    shifted["event_id"] = y1.events[1].event_id
    lines = [raw if orjson.loads(raw)["event_id"] != shifted["event_id"] else line(shifted)
             for raw in good_lines()]
    output, letters = process(tmp_path, lines)
    assert letters == []
    assert latest_versions(read_cdrs(output))["sw1:y1"].answer_time == at(102)


@pytest.mark.parametrize(
    "field", ["type", "digit", "direction", "call_category", "releasing_party"]
)
@pytest.mark.parametrize("value", [[], {}, ["dtmf"]])
def test_a_list_or_object_where_a_word_belongs_is_a_dead_letter(field: str, value: object) -> None:
    kinds = {"digit": "dtmf", "direction": "call_started", "call_category": "call_dialed",
             "releasing_party": "call_released"}
    raw = {
        "event_id": "e1", "type": kinds.get(field, "dtmf"), "ts": "2026-11-24T14:00:00.000Z",
        "switch_id": "sw1", "user_id": "u@x", "group_id": "g", "call_id": "c1", "seq": 0,
        "digit": "1", "direction": "outbound", "called_number": "+1", "call_category": "local",
        "cause": "normal", "releasing_party": "local", field: value,
    }
    with pytest.raises(EventDecodeError, match=field if field != "type" else "unknown event type"):
        decode_event(raw)
