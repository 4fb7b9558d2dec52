"""Daily files (SPEC section 4): selecting a day's final CDRs, CSV/JSON rendering, names,
manifests, the schedule, the local output directory with its ledger, and the CLI.

SFTP delivery against a real sshd is in test_delivery.py."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
import sys
import tomllib
import types
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from streams.cdr import CDR_FIELDS, Cdr, CodeEntry, LegSummary
from streams.cli import main
from streams.delivery import Ledger, export_days, open_ledger, run_daily
from streams.errors import ConfigError, DeliveryError
from streams.export import (
    NamedFile,
    build_manifest,
    daily_work,
    data_file_name,
    day_due_ms,
    day_end_ms,
    day_records,
    due_days,
    file_stem,
    is_partial_name,
    manifest_lists,
    manifest_name,
    next_due_ms,
    partial_name,
    render,
    render_csv,
    render_json,
)
from streams.serialization import CdrWriter, read_cdrs, write_events
from streams.settings import Settings, settings_from_mapping
from streams.timefmt import local_date, parse_iso
from tests.builders import LegScript, events_of

GROUP = "smith-law"
DAY = date(2026, 11, 24)
NY = "America/New_York"


# ---------------------------------------------------------------- test data


def make_cdr(
    n: int,
    *,
    group: str = GROUP,
    start: str = "2026-11-24T14:00:00Z",
    version: int = 1,
    tz: str = NY,
    **changes: Any,
) -> Cdr:
    """A billable outbound call `sw1:c{n}` of `group`, 60 s from `start`."""
    begin = parse_iso(start) + n * 1000
    cdr = Cdr(
        cdr_id=f"sw1:c{n}", version=version, record_type="call", switch_id="sw1",
        user_id="alice@smithlaw.example", group_id=group, call_id=f"c{n}",
        network_call_id=None, direction="outbound", calling_number="+12125550001",
        called_number="+13125550100", call_category="national", start_time=begin,
        answer_time=begin + 2000, release_time=begin + 60_000, answered=True,
        duration_ms=60_000, talk_ms=58_000, hold_ms=0, cause="normal",
        releasing_party="local", account_code="1001", account_code_status="present",
        account_code_required=True,
        account_code_entries=(CodeEntry("1001", True, "pre_dial", f"c{n}", begin + 1000),),
        client_name="Jones v. Acme Corp", code_known=True, applied_to_cdr_id=None, legs=(),
        user_timezone=tz, local_date=local_date(begin, tz).isoformat(), billable=True,
    )
    return dataclasses.replace(cdr, **changes)


def latest_of(*cdrs: Cdr) -> dict[str, Cdr]:
    return {cdr.cdr_id: cdr for cdr in cdrs}


def config(tmp_path: Path, **export: Any) -> Settings:
    table = {"output_dir": str(tmp_path / "out"), **export}
    return settings_from_mapping({"export": table}, "test config", environ={})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


A_DAY = [
    make_cdr(3, start="2026-11-24T20:00:00Z"),
    make_cdr(1, start="2026-11-24T14:00:00Z", client_name='Smith, "Jr." & Co'),
    make_cdr(2, start="2026-11-24T15:00:00Z",
             legs=(LegSummary("c2b", "+19175550100", True, parse_iso("2026-11-24T15:00:05Z"),
                              parse_iso("2026-11-24T15:01:00Z")),),
             answer_time=None, answered=False, account_code=None, client_name=None,
             code_known=None, account_code_entries=()),
]


# ---------------------------------------------------------------- selecting and rendering


def test_a_day_is_the_groups_cdrs_of_that_local_date_in_start_order() -> None:
    late_evening = make_cdr(7, start="2026-11-25T04:30:00Z")  # 23:30 in New York
    next_day = make_cdr(8, start="2026-11-25T05:30:00Z")  # 00:30 in New York
    other_group = make_cdr(9, group="jones-cpa")
    chosen = day_records([*A_DAY, late_evening, next_day, other_group], GROUP, DAY)
    assert [c.cdr_id for c in chosen] == ["sw1:c1", "sw1:c2", "sw1:c3", "sw1:c7"]


def test_csv_has_the_spec_columns_in_order_and_reads_back_as_the_same_cdrs(
    tmp_path: Path,
) -> None:
    rows = day_records(A_DAY, GROUP, DAY)
    data = render_csv(rows)
    table = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert table[0] == list(CDR_FIELDS)
    assert len(table) == 4
    assert data.endswith(b"\r\n")
    path = tmp_path / "day.csv"
    path.write_bytes(data)
    assert list(read_cdrs(path)) == rows
    # the same cells as the CDR file writer's CSV
    with CdrWriter(tmp_path / "writer.csv", "csv") as writer:
        for cdr in rows:
            writer.write(cdr)
    assert (tmp_path / "writer.csv").read_bytes() == data


def test_json_is_an_array_of_cdr_objects_with_the_spec_fields_in_order() -> None:
    rows = day_records(A_DAY, GROUP, DAY)
    document = json.loads(render_json(rows))
    assert [list(item) for item in document] == [list(CDR_FIELDS)] * 3
    assert document == [cdr.to_json_dict() for cdr in rows]
    assert document[0]["start_time"] == "2026-11-24T14:00:01.000Z"
    assert json.loads(render_json([])) == []
    lines = render_json(rows).split(b"\n")  # one object per line, between the brackets
    assert lines[0] == b"[" and lines[-2:] == [b"]", b""]
    assert [json.loads(line.rstrip(b",")) for line in lines[1:-2]] == document
    assert [line.endswith(b",") for line in lines[1:-2]] == [True, True, False]


def test_rendering_is_deterministic_and_counts_rows() -> None:
    first = render("csv", day_records(A_DAY, GROUP, DAY))
    again = render("csv", day_records(list(reversed(A_DAY)), GROUP, DAY))
    assert first == again
    assert first.rows == 3
    assert first.sha256 == sha256(first.data)
    assert render("csv", []).data == (",".join(CDR_FIELDS) + "\r\n").encode()


def test_names_revisions_and_partials() -> None:
    assert data_file_name(GROUP, DAY, 1, "csv") == "smith-law_2026-11-24.csv"
    assert data_file_name(GROUP, DAY, 2, "json") == "smith-law_2026-11-24.r2.json"
    assert manifest_name(GROUP, DAY, 1) == "smith-law_2026-11-24.manifest.json"
    assert manifest_name(GROUP, DAY, 3) == "smith-law_2026-11-24.r3.manifest.json"
    # not file-name safe: percent-encoded, so that names stay distinct and visible
    assert file_stem("a/b c", DAY) == "a%2Fb%20c_2026-11-24"
    assert file_stem(".hidden", DAY) != file_stem("_hidden", DAY)
    assert not file_stem(".hidden", DAY).startswith(".")
    tmp = partial_name("smith-law_2026-11-24.csv", "0123456789ab")
    assert tmp.startswith(".") and is_partial_name(tmp)
    assert not is_partial_name("smith-law_2026-11-24.csv")


def test_manifest_lists_each_file_with_sha256_and_rows() -> None:
    csv_file = render("csv", day_records(A_DAY, GROUP, DAY))
    json_file = render("json", day_records(A_DAY, GROUP, DAY))
    named = [NamedFile("smith-law_2026-11-24.r2.csv", csv_file),
             NamedFile("smith-law_2026-11-24.r2.json", json_file)]
    data = build_manifest(GROUP, DAY, revision=2, files=named,
                          created_ms=parse_iso("2026-11-25T05:00:05Z"),
                          replaces="smith-law_2026-11-24.manifest.json")
    manifest = json.loads(data)
    assert manifest == {
        "manifest_version": 1, "group_id": GROUP, "local_date": "2026-11-24", "revision": 2,
        "replaces": "smith-law_2026-11-24.manifest.json",
        "created_at": "2026-11-25T05:00:05.000Z", "columns": list(CDR_FIELDS),
        "files": [
            {"name": "smith-law_2026-11-24.r2.csv", "format": "csv", "rows": 3,
             "bytes": len(csv_file.data), "sha256": sha256(csv_file.data)},
            {"name": "smith-law_2026-11-24.r2.json", "format": "json", "rows": 3,
             "bytes": len(json_file.data), "sha256": sha256(json_file.data)},
        ],
    }
    assert manifest_lists(data, named)
    assert not manifest_lists(data, named[:1])
    assert not manifest_lists(b"not json", named)


# ---------------------------------------------------------------- schedule


def test_a_day_ends_at_local_midnight_also_on_a_25_hour_day() -> None:
    assert day_end_ms(DAY, NY) == parse_iso("2026-11-25T05:00:00Z")
    assert day_end_ms(date(2026, 11, 1), NY) == parse_iso("2026-11-02T05:00:00Z")  # DST ends
    assert day_end_ms(date(2026, 10, 31), NY) == parse_iso("2026-11-01T04:00:00Z")
    # every zone the group's users are in must have finished the day
    assert day_due_ms(DAY, {NY, "America/Los_Angeles"}, 5000) == parse_iso(
        "2026-11-25T08:00:05Z"
    )


def test_due_days_wait_for_midnight_plus_settle_and_catch_up() -> None:
    zones = {NY}
    just_before = parse_iso("2026-11-25T05:00:04.999Z")
    due = parse_iso("2026-11-25T05:00:05Z")
    assert due_days(just_before, zones, 5000, catch_up_days=0) == []
    assert due_days(due, zones, 5000, catch_up_days=0) == []  # today is the 25th, not due
    assert due_days(due, zones, 5000, catch_up_days=1) == [DAY]
    assert due_days(due, zones, 5000, catch_up_days=3) == [
        date(2026, 11, 22), date(2026, 11, 23), DAY,
    ]
    assert due_days(due, zones, 5000, catch_up_days=3, start_date=date(2026, 11, 23)) == [
        date(2026, 11, 23), DAY,
    ]


def test_daily_work_listed_groups_get_every_day_unlisted_only_days_with_calls(
    tmp_path: Path,
) -> None:
    cdrs = [make_cdr(1), make_cdr(2, group="jones-cpa", start="2026-11-22T15:00:00Z")]
    now = parse_iso("2026-11-25T06:00:00Z")
    settings = config(tmp_path, catch_up_days=3)
    assert daily_work(settings, cdrs, now) == [
        ("jones-cpa", date(2026, 11, 22)), (GROUP, DAY),
    ]
    listed = config(tmp_path, catch_up_days=2, groups=[GROUP])
    assert daily_work(listed, cdrs, now) == [(GROUP, date(2026, 11, 23)), (GROUP, DAY)]
    assert daily_work(listed, cdrs, now, groups=["jones-cpa"]) == [
        ("jones-cpa", date(2026, 11, 23)), ("jones-cpa", DAY),
    ]


def test_a_west_coast_user_delays_the_groups_day(tmp_path: Path) -> None:
    cdrs = [make_cdr(1), make_cdr(2, tz="America/Los_Angeles")]
    settings = config(tmp_path, catch_up_days=1)
    assert daily_work(settings, cdrs, parse_iso("2026-11-25T07:59:00Z")) == []
    assert daily_work(settings, cdrs, parse_iso("2026-11-25T08:00:05Z")) == [(GROUP, DAY)]


def test_next_due_is_the_next_midnight_plus_settle_and_grace(tmp_path: Path) -> None:
    settings = config(tmp_path, grace_seconds=600)
    now = parse_iso("2026-11-24T18:00:00Z")
    assert next_due_ms(settings, [make_cdr(1)], now) == parse_iso("2026-11-25T05:10:05Z")
    assert next_due_ms(settings, [], parse_iso("2026-11-25T05:10:05Z")) == parse_iso(
        "2026-11-26T05:10:05Z"
    )
    slow = config(tmp_path, grace_seconds=2 * 86_400)  # due two days after midnight
    assert next_due_ms(slow, [], now) == parse_iso("2026-11-25T05:00:05Z")
    two_days = [make_cdr(1, start="2026-11-21T15:00:00Z"),
                make_cdr(2, start="2026-11-22T15:00:00Z")]
    assert daily_work(slow, two_days, now) == [(GROUP, date(2026, 11, 21))]


# ---------------------------------------------------------------- settings


def test_export_settings_defaults_and_checks() -> None:
    settings = settings_from_mapping({}, environ={})
    assert settings.export.formats == ("csv",)
    assert settings.export.ledger_file == Path("daily-files/delivery-ledger.json")
    assert settings.sftp == ()
    destination = {
        "name": "acme", "host": "sftp.example", "user": "cdr", "groups": [GROUP],
        "private_key_file": "/etc/cdrstream/id_ed25519",
        "known_hosts_file": "/etc/cdrstream/known_hosts",
    }
    assert settings_from_mapping({"sftp": [destination]}, environ={}).sftp[0].port == 22
    refused = {
        "password": "sftp.0: password: not accepted: no passwords in config files",
        "passphrase": "sftp.0: passphrase: not accepted",
    }
    for key, message in refused.items():
        with pytest.raises(ConfigError, match=message) as error:
            settings_from_mapping({"sftp": [{**destination, key: "hunter2"}]}, environ={})
        assert "passphrase_env" in str(error.value)
        assert "hunter2" not in str(error.value)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"sftp": [{**destination, "passphrase_env": "CDRSTREAM_KEY"}]},
         "sftp.0.passphrase_env: must not start with CDRSTREAM_"),
        ({"sftp": [{**destination, "groups": []}]}, "sftp.0.groups: must list at least one"),
        ({"sftp": [destination, destination]}, "sftp: listed more than once: acme"),
        ({"sftp": [{**destination, "port": 0}]}, "sftp.0.port"),
        ({"sftp": [{k: v for k, v in destination.items() if k != "known_hosts_file"}]},
         "sftp.0.known_hosts_file: Field required"),
        ({"export": {"formats": ["xml"]}}, "export.formats.0"),
        ({"export": {"formats": []}}, "export.formats: must list at least one"),
        ({"export": {"timezones": {GROUP: "Mars/Olympus"}}}, "export.timezones"),
        ({"export": {"outputdir": "x"}}, "export.outputdir: unknown key"),
    ]
    for raw, message in bad:
        with pytest.raises(ConfigError, match=message):
            settings_from_mapping(raw, environ={})


# ---------------------------------------------------------------- local output and ledger


def read(path: Path) -> bytes:
    return path.read_bytes()


def test_export_writes_the_day_and_a_rerun_writes_nothing(tmp_path: Path) -> None:
    settings = config(tmp_path, formats=["csv", "json"])
    out = tmp_path / "out"
    now = parse_iso("2026-11-25T06:00:00Z")
    report = export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)], now_ms=now)
    report.raise_for_errors()
    [outcome] = report.outcomes
    assert (outcome.action, outcome.revision, outcome.rows) == ("delivered", 1, 3)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("delivery-ledger"))
    assert names == ["smith-law_2026-11-24.csv", "smith-law_2026-11-24.json",
                     "smith-law_2026-11-24.manifest.json"]
    manifest = json.loads(read(out / "smith-law_2026-11-24.manifest.json"))
    for item in manifest["files"]:
        assert sha256(read(out / item["name"])) == item["sha256"]
        assert item["rows"] == 3
    assert manifest["replaces"] is None
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    again = export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)], now_ms=now + 60_000)
    assert [o.action for o in again.outcomes] == ["unchanged"]
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {k: v for k, v in after.items() if "ledger" not in k} == {
        k: v for k, v in before.items() if "ledger" not in k
    }


def test_a_correction_becomes_revision_2_and_revision_1_stays(tmp_path: Path) -> None:
    settings = config(tmp_path)
    out = tmp_path / "out"
    export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)]).raise_for_errors()
    first = read(out / "smith-law_2026-11-24.csv")
    corrected = dataclasses.replace(A_DAY[0], version=2, account_code="2002",
                                    client_name="Estate of Miller")
    report = export_days(settings, latest_of(corrected, *A_DAY[1:]), [(GROUP, DAY)])
    assert [(o.action, o.revision) for o in report.outcomes] == [("delivered", 2)]
    assert read(out / "smith-law_2026-11-24.csv") == first
    revised = list(read_cdrs(out / "smith-law_2026-11-24.r2.csv"))
    assert corrected in revised and A_DAY[0] not in revised
    manifest = json.loads(read(out / "smith-law_2026-11-24.r2.manifest.json"))
    assert manifest["revision"] == 2
    assert manifest["replaces"] == "smith-law_2026-11-24.manifest.json"
    entry = Ledger(settings.export.ledger_file).entry(
        f"local:{out.resolve()}", GROUP, DAY
    )
    assert entry is not None
    assert entry["revision"] == 2 and [e["revision"] for e in entry["earlier"]] == [1]


def test_a_lost_ledger_never_overwrites_other_content(tmp_path: Path) -> None:
    settings = config(tmp_path)
    out = tmp_path / "out"
    export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)]).raise_for_errors()
    settings.export.ledger_file.unlink()
    # same content: the files there are taken as delivered, nothing is written
    same = export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)])
    assert [(o.action, o.revision) for o in same.outcomes] == [("unchanged", 1)]
    settings.export.ledger_file.unlink()
    first = read(out / "smith-law_2026-11-24.csv")
    changed = export_days(settings, latest_of(*A_DAY[:2]), [(GROUP, DAY)])
    assert [(o.action, o.revision) for o in changed.outcomes] == [("delivered", 2)]
    assert read(out / "smith-law_2026-11-24.csv") == first
    assert len(list(read_cdrs(out / "smith-law_2026-11-24.r2.csv"))) == 2


def test_files_removed_from_the_output_dir_are_written_again(tmp_path: Path) -> None:
    settings = config(tmp_path)
    out = tmp_path / "out"
    export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)]).raise_for_errors()
    content = read(out / "smith-law_2026-11-24.csv")
    (out / "smith-law_2026-11-24.csv").unlink()
    report = export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)])
    assert [(o.action, o.revision) for o in report.outcomes] == [("delivered", 1)]
    assert read(out / "smith-law_2026-11-24.csv") == content


def test_partial_files_are_cleaned_and_a_second_exporter_is_refused(tmp_path: Path) -> None:
    settings = config(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / partial_name("smith-law_2026-11-24.csv", "0123456789ab")
    stale.write_bytes(b"cdr_id,vers")
    with (
        open_ledger(settings.export.ledger_file),
        pytest.raises(DeliveryError, match="locked: another export is running"),
    ):
        export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)])
    export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)]).raise_for_errors()
    assert not stale.exists()


def test_an_unreadable_ledger_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    settings = config(tmp_path)
    settings.export.ledger_file.parent.mkdir(parents=True)
    settings.export.ledger_file.write_text("{not json")
    with pytest.raises(DeliveryError, match="unreadable"):
        export_days(settings, latest_of(*A_DAY), [(GROUP, DAY)])


def test_run_daily_catches_up_missed_days_once(tmp_path: Path) -> None:
    settings = config(tmp_path, catch_up_days=7)
    cdrs = latest_of(
        make_cdr(1, start="2026-11-21T15:00:00Z"), make_cdr(2, start="2026-11-23T15:00:00Z"),
        make_cdr(3), make_cdr(4, start="2026-11-25T15:00:00Z"),
    )
    now = parse_iso("2026-11-25T18:00:00Z")
    report = run_daily(settings, cdrs, now_ms=now)
    assert [(o.day.isoformat(), o.action) for o in report.outcomes] == [
        ("2026-11-21", "delivered"), ("2026-11-23", "delivered"), ("2026-11-24", "delivered"),
    ]
    assert [o.action for o in run_daily(settings, cdrs, now_ms=now).outcomes] == [
        "unchanged"
    ] * 3
    tomorrow = parse_iso("2026-11-26T05:00:05Z")
    assert [(o.day.isoformat(), o.action) for o in run_daily(
        settings, cdrs, now_ms=tomorrow
    ).outcomes if o.action == "delivered"] == [("2026-11-25", "delivered")]


# ---------------------------------------------------------------- command line


def write_cdr_file(path: Path, cdrs: list[Cdr]) -> Path:
    with CdrWriter(path, "jsonl") as writer:
        for cdr in cdrs:
            writer.write(cdr)
    return path


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[export]\noutput_dir = "{tmp_path / "out"}"\n{text}')
    return path


def test_cli_export_date_from_a_cdr_file_uses_latest_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = dataclasses.replace(A_DAY[0], version=1, account_code="9999")
    new = dataclasses.replace(A_DAY[0], version=2)
    source = write_cdr_file(tmp_path / "cdrs.jsonl", [old, *A_DAY[1:], new])
    conf = write_config(tmp_path, 'formats = ["csv", "json"]\n')
    code = main(["export", "--config", str(conf), "--date", "2026-11-24",
                 "--input", str(source)])
    assert code == 0
    out = tmp_path / "out"
    assert sorted(read_cdrs(out / "smith-law_2026-11-24.csv"), key=lambda c: c.cdr_id) == sorted(
        [new, *A_DAY[1:]], key=lambda c: c.cdr_id
    )
    assert len(json.loads(read(out / "smith-law_2026-11-24.json"))) == 3
    assert "smith-law 2026-11-24 (3 CDRs) -> local:" in capsys.readouterr().err

    assert main(["export", "--config", str(conf), "--date", "2026-11-24",
                 "--input", str(source)]) == 0
    assert "unchanged since r1" in capsys.readouterr().err


def test_cli_group_format_and_output_dir_options(tmp_path: Path) -> None:
    source = write_cdr_file(tmp_path / "cdrs.jsonl", [*A_DAY, make_cdr(9, group="jones-cpa")])
    conf = write_config(tmp_path, "")
    elsewhere = tmp_path / "elsewhere"
    assert main(["export", "--config", str(conf), "--date", "2026-11-24", "--input",
                 str(source), "--group", "jones-cpa", "--group", "empty-group",
                 "--format", "json", "--output-dir", str(elsewhere)]) == 0
    files = sorted(p.name for p in elsewhere.iterdir())
    assert files == ["delivery-ledger.json", "delivery-ledger.json.lock",
                     "empty-group_2026-11-24.json", "empty-group_2026-11-24.manifest.json",
                     "jones-cpa_2026-11-24.json", "jones-cpa_2026-11-24.manifest.json"]
    assert json.loads(read(elsewhere / "empty-group_2026-11-24.json")) == []


def test_cli_daily_with_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_cdr_file(tmp_path / "cdrs.jsonl", A_DAY)
    conf = write_config(tmp_path, "")
    args = ["export", "--config", str(conf), "--daily", "--input", str(source)]
    assert main([*args, "--now", "2026-11-25T05:00:04Z"]) == 0
    assert "nothing to export" in capsys.readouterr().err
    assert main([*args, "--now", "2026-11-25T05:00:05Z"]) == 0
    assert "delivered r1" in capsys.readouterr().err
    assert (tmp_path / "out" / "smith-law_2026-11-24.csv").exists()


def test_cli_refuses_to_deliver_a_day_that_is_not_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_cdr_file(tmp_path / "cdrs.jsonl", A_DAY)
    conf = write_config(tmp_path, "[[sftp]]\nname = \"acme\"\nhost = \"127.0.0.1\"\n"
                        "user = \"cdr\"\nprivate_key_file = \"k\"\nknown_hosts_file = \"kh\"\n"
                        "groups = [\"*\"]\n")
    args = ["export", "--config", str(conf), "--date", "2026-11-24", "--input", str(source),
            "--now", "2026-11-24T23:00:00Z"]
    assert main(args) == 2
    assert "not over until 2026-11-25T05:00:05.000Z" in capsys.readouterr().err
    assert main([*args, "--no-deliver"]) == 0


def test_cli_from_topic_is_one_call_and_a_clear_error_without_kafka_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_config(tmp_path, "")
    args = ["export", "--config", str(conf), "--date", "2026-11-24", "--from-topic"]
    monkeypatch.setitem(sys.modules, "streams.kafka_io", None)
    assert main(args) == 2
    assert "--from-topic: this build cannot read the cdr topic" in capsys.readouterr().err

    calls: list[Settings] = []

    def read_latest_cdrs(settings: Settings) -> dict[str, Cdr]:
        calls.append(settings)
        return latest_of(*A_DAY)

    fake = types.ModuleType("streams.kafka_io")
    fake.read_latest_cdrs = read_latest_cdrs  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "streams.kafka_io", fake)
    assert main(args) == 0
    assert len(calls) == 1
    assert len(list(read_cdrs(tmp_path / "out" / "smith-law_2026-11-24.csv"))) == 3


def test_cli_needs_a_day_and_a_source(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["export", "--input", "x.jsonl"], ["export", "--daily"],
                 ["export", "--date", "24.11.2026", "--input", "x.jsonl"]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2
    assert "not a date YYYY-MM-DD" in capsys.readouterr().err


def test_events_to_daily_file_end_to_end(tmp_path: Path) -> None:
    """Events through `process` (file mode), then `export`: the day's file holds the
    final CDRs of the call and of its code-entry leg."""
    call = (LegScript("a1").inbound(0).answer(2).hold(60).retrieve(70).release(100))
    entry = LegScript("a2").outbound(61).keys("*712002", 62).release(66)
    events = tmp_path / "events.jsonl"
    write_events(events, events_of(call, entry))
    cdrs = tmp_path / "cdrs.jsonl"
    assert main(["process", "--input", str(events), "--output", str(cdrs)]) == 0
    conf = write_config(tmp_path, "")
    assert main(["export", "--config", str(conf), "--date", "2026-11-24", "--input",
                 str(cdrs)]) == 0
    rows = list(read_cdrs(tmp_path / "out" / "smith-law_2026-11-24.csv"))
    assert [(r.cdr_id, r.record_type, r.account_code) for r in rows] == [
        ("sw1:a1", "call", "2002"), ("sw1:a2", "code_entry", "2002"),
    ]


# ---------------------------------------------------------------- the docs stay true

DOC = Path(__file__).resolve().parents[1] / "docs" / "daily-files.md"


def test_the_documented_columns_are_the_csv_columns_in_order() -> None:
    text = DOC.read_text("utf-8")
    documented = re.findall(r"^\| (\d+) \| `([a-z_]+)` \|", text, re.MULTILINE)
    assert [int(n) for n, _ in documented] == list(range(1, len(CDR_FIELDS) + 1))
    assert tuple(name for _, name in documented) == CDR_FIELDS


def test_the_documented_configuration_is_valid() -> None:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text("utf-8"), re.DOTALL)
    assert block is not None
    settings = settings_from_mapping(tomllib.loads(block.group(1)), "docs", environ={})
    assert [d.name for d in settings.sftp] == ["smith-law", "bi-warehouse"]
    assert settings.export.formats == ("csv", "json")
