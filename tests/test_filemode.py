"""File mode (SPEC section 6): formats, Avro input, the dead-letter file, bad configs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.cdr import Cdr
from streams.cli import main
from streams.filemode import dead_letter_path
from streams.serialization import (
    latest_versions,
    read_cdrs,
    read_events,
    write_events,
)
from tests.builders import BOB, LegScript, code_entry_at, code_entry_leg, events_of, run, settings

CONFIG = Path(__file__).parent / "examples" / "config.toml"
WINDOW_CONFIG = CONFIG.read_text().replace(
    "correction_window_seconds = 0", "correction_window_seconds = 120"
)


def busy_day() -> list[LegScript]:
    """Something of everything: pre-dial, second line, orphan and incomplete entries,
    a correction (two versions), Simultaneous Ring, an unreleased leg, two users,
    a user time zone and a group without registry."""
    return [
        LegScript("x1").outbound(0).keys("*711001", 1).dial(5).answer(8).release(60),
        LegScript("a1").inbound(100).answer(102).hold(110).retrieve(130).release(200),
        code_entry_leg("a2", 111, "*712002"),
        code_entry_leg("o1", 300, "*7199"),
        LegScript("w1").inbound(400, network_call_id="N7").release(406, party=None,
                                                                   cause="answered_elsewhere"),
        LegScript("w2").ring(400.1, "w1").answer(406).hold(420).release(496),
        LegScript("b1", user=BOB, group="other-firm").outbound(
            500, timezone="Europe/Berlin").dial(502, category="international").answer(510)
        .release(600),
        code_entry_at("b2", 650, "*713003", user=BOB),
        LegScript("u1", user=BOB).inbound(700).answer(701),  # never released
    ]


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "config.toml"
    config.write_text(WINDOW_CONFIG)
    events = tmp_path / "events.jsonl"
    write_events(events, events_of(*busy_day()))
    return {"config": config, "events": events, "dir": tmp_path}


def process(config: Path, events: Path, output: Path, *extra: str) -> int:
    return main(["process", "--config", str(config), "--input", str(events),
                 "--output", str(output), *extra])


def test_busy_day_is_what_the_engine_issues(paths: dict[str, Path]) -> None:
    output = paths["dir"] / "cdrs.jsonl"
    assert process(paths["config"], paths["events"], output) == 0
    cdrs = list(read_cdrs(output))
    expected = run(settings(correction_window_seconds=120), *busy_day()).cdrs
    assert cdrs == expected
    assert [(c.cdr_id, c.version, c.account_code_status, c.applied_to_cdr_id) for c in cdrs] == [
        ("sw1:x1", 1, "present", None),
        ("sw1:a2", 1, "applied", "sw1:a1"),
        ("sw1:a1", 1, "present", None),
        ("sw1:o1", 1, "incomplete", "sw1:a1"),  # within the window after a1
        ("sw1:a1", 2, "present", None),
        ("sw1:w1", 1, "not_required", None),
        ("sw1:b1", 1, "not_required", None),
        ("sw1:b2", 1, "applied", "sw1:b1"),  # a correction within the window
        ("sw1:b1", 2, "present", None),
        ("sw1:u1", 1, "not_required", None),
    ]
    latest = latest_versions(cdrs)
    assert latest["sw1:b1"].account_code == "3003"
    assert latest["sw1:b1"].local_date == "2026-11-24"
    assert latest["sw1:b1"].user_timezone == "Europe/Berlin"
    assert latest["sw1:u1"].cause == "unreleased"
    assert latest["sw1:o1"].account_code_status == "incomplete"


@pytest.mark.parametrize("fmt", ["csv", "avro"])
def test_every_output_format_gives_the_same_cdrs(paths: dict[str, Path], fmt: str) -> None:
    jsonl = paths["dir"] / "cdrs.jsonl"
    other = paths["dir"] / f"cdrs.{fmt}"
    assert process(paths["config"], paths["events"], jsonl) == 0
    assert process(paths["config"], paths["events"], other) == 0
    reference = list(read_cdrs(jsonl))
    assert len(reference) == 10
    assert list(read_cdrs(other)) == reference


def test_format_option_overrides_the_extension(paths: dict[str, Path]) -> None:
    output = paths["dir"] / "cdrs.out"
    assert process(paths["config"], paths["events"], output, "--format", "csv") == 0
    assert output.read_text().startswith("cdr_id,version,record_type,")
    renamed = paths["dir"] / "cdrs.csv"
    output.rename(renamed)
    jsonl = paths["dir"] / "cdrs.jsonl"
    assert process(paths["config"], paths["events"], jsonl) == 0
    assert list(read_cdrs(renamed)) == list(read_cdrs(jsonl))


def test_csv_header_is_the_field_order(paths: dict[str, Path]) -> None:
    output = paths["dir"] / "cdrs.csv"
    assert process(paths["config"], paths["events"], output) == 0
    header = output.read_text().splitlines()[0].split(",")
    assert header == list(Cdr.__dataclass_fields__)


def test_avro_input_reads_as_the_same_events(tmp_path: Path) -> None:
    events = events_of(*busy_day())
    assert write_events(tmp_path / "events.avro", events) == len(events)
    read = list(read_events(tmp_path / "events.avro"))
    assert [item for item, _ in read] == events
    assert [origin.offset for _, origin in read] == list(range(1, len(events) + 1))


def test_avro_input_equals_jsonl_input(paths: dict[str, Path]) -> None:
    avro_events = paths["dir"] / "events.avro"
    write_events(avro_events, events_of(*busy_day()))
    from_jsonl = paths["dir"] / "from-jsonl.jsonl"
    from_avro = paths["dir"] / "from-avro.jsonl"
    assert process(paths["config"], paths["events"], from_jsonl) == 0
    assert process(paths["config"], avro_events, from_avro) == 0
    assert from_avro.read_bytes() == from_jsonl.read_bytes()


def test_file_order_is_the_arrival_order(tmp_path: Path) -> None:
    # x1's answer comes after event time has moved well past x1's release: x1 is final
    # without it, and the answer is a late event
    x1 = LegScript("x1").outbound(0).dial(2).answer(3).release(60)
    y1 = LegScript("y1").inbound(100).answer(102).release(160)
    started, dialed, answered, released = x1.events
    events = tmp_path / "events.jsonl"
    write_events(events, [started, dialed, released, *y1.events, answered])
    output = tmp_path / "cdrs.jsonl"
    assert process(CONFIG, events, output) == 0
    [letter] = [orjson.loads(r) for r in dead_letter_path(output).read_bytes().splitlines()]
    assert letter["reason"] == "late event: call leg sw1:x1 is already final"
    assert letter["origin"] == {"file": str(events), "line": 7}
    latest = latest_versions(read_cdrs(output))
    assert latest["sw1:x1"].answered is False
    assert latest["sw1:y1"].answered is True


@pytest.mark.parametrize(("output", "letters"), [
    ("cdrs.jsonl", "cdrs.dlq.jsonl"),
    ("cdrs.csv", "cdrs.dlq.jsonl"),
    ("cdrs.avro", "cdrs.dlq.jsonl"),
    ("cdrs", "cdrs.dlq.jsonl"),
    ("out/day.2026-11-24.jsonl", "out/day.2026-11-24.dlq.jsonl"),
])
def test_dead_letter_file_name(output: str, letters: str) -> None:
    assert dead_letter_path(output) == Path(letters)


@pytest.mark.parametrize("name", ["cdrs.jsonl", "cdrs.csv", "cdrs.avro"])
def test_dead_letters_go_beside_the_output(paths: dict[str, Path], name: str) -> None:
    events = paths["dir"] / "bad.jsonl"
    events.write_bytes(paths["events"].read_bytes() + b"not json\n")
    output = paths["dir"] / name
    assert process(paths["config"], events, output) == 0
    [letter] = [orjson.loads(r) for r in (paths["dir"] / "cdrs.dlq.jsonl").read_bytes()
                .splitlines()]
    assert letter["origin"] == {"file": str(events), "line": len(events_of(*busy_day())) + 1}
    assert len(list(read_cdrs(output))) == 10


def test_stale_dead_letter_file_is_removed(paths: dict[str, Path]) -> None:
    stale = paths["dir"] / "cdrs.dlq.jsonl"
    stale.write_text('{"reason": "from an earlier run"}\n')
    assert process(paths["config"], paths["events"], paths["dir"] / "cdrs.jsonl") == 0
    assert not stale.exists()


@pytest.mark.parametrize(("old", "new", "message"), [
    ("settle_seconds = 5", "settle_seconds = 5\nsettle_sconds = 5",
     "settle_sconds: unknown key"),
    ("settle_seconds = 5", 'settle_seconds = "five"',
     "settle_seconds: Input should be a valid number"),
    ("settle_seconds = 5", "settle_seconds = -1",
     "settle_seconds: Input should be greater than or equal to 0"),
    ("digit_timeout_seconds = 5", "digit_timeout_seconds = 0",
     "digit_timeout_seconds: Input should be greater than 0"),
    ("max_call_hours = 24", "max_call_hours = 0",
     "max_call_hours: Input should be greater than 0"),
    ('feature_access_code = "*71"', 'feature_access_code = "*7a"',
     "feature_access_code: must be DTMF digits"),
    ('default_timezone = "America/New_York"', 'default_timezone = "Mars/Olympus"',
     "default_timezone: unknown IANA time zone 'Mars/Olympus'"),
    ('usage = "mandatory"', 'usage = "always"',
     "groups.smith-law.usage: Input should be 'optional' or 'mandatory'"),
    ('usage = "mandatory"', 'usage = "mandatory"\nexempt = []',
     "groups.smith-law.exempt: unknown key"),
    ('code_digits = 4\nusage = "mandatory"', 'code_digits = "4"\nusage = "mandatory"',
     "groups.smith-law.code_digits: Input should be a valid integer"),
    ('allow_without_code = ["internal", "toll_free"]', 'allow_without_code = ["premium"]',
     "groups.smith-law.allow_without_code.0: Input should be 'internal'"),
    ('"1001" = "Jones v. Acme Corp"', '"10011" = "Jones v. Acme Corp"',
     "client_codes.smith-law.10011: a code of group 'smith-law' is 4 digits 0-9"),
    ("settle_seconds = 5", "settle_seconds = ", "not valid TOML"),
])
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, message: str
) -> None:
    text = CONFIG.read_text()
    assert old in text
    config = tmp_path / "bad.toml"
    config.write_text(text.replace(old, new, 1))
    events = tmp_path / "events.jsonl"
    write_events(events, LegScript("a1").inbound(0).release(5).events)
    output = tmp_path / "cdrs.jsonl"
    assert process(config, events, output) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cdrstream process: {config}: {message}"), err
    assert not output.exists()


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.toml"
    assert process(missing, tmp_path / "events.jsonl", tmp_path / "cdrs.jsonl") == 2
    assert f"{missing}: cannot read" in capsys.readouterr().err


def test_avro_output_is_reproducible(tmp_path: Path) -> None:
    """Same events, same Avro bytes (fixed sync marker, schema header as written)."""
    outputs = []
    for name in ("first.avro", "second.avro"):
        out = tmp_path / name
        events = CONFIG.parent / "2_inbound_second_line.events.jsonl"
        arguments = ["--config", str(CONFIG), "--input", str(events), "--output", str(out)]
        assert main(["process", *arguments]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_a_cdr_json_form_is_every_field_in_spec_order() -> None:
    """`Cdr.to_json_dict` spells its fields out (a hot path): they must be CDR_FIELDS, in
    that order, each the field's value (times as ISO text, entries and legs as objects)."""
    from streams.cdr import CDR_FIELDS
    from streams.timefmt import format_iso

    cdrs = run(settings(correction_window_seconds=120), *busy_day()).cdrs
    assert {c.record_type for c in cdrs} >= {"call", "code_entry"}
    assert any(c.legs for c in cdrs) and any(c.account_code_entries for c in cdrs)
    for cdr in cdrs:
        document = cdr.to_json_dict()
        assert tuple(document) == CDR_FIELDS
        for name in CDR_FIELDS:
            value = getattr(cdr, name)
            if name.endswith("_time"):
                value = None if value is None else format_iso(value)
            elif name in ("account_code_entries", "legs"):
                value = [item.to_json_dict() for item in value]
            assert document[name] == value, name
