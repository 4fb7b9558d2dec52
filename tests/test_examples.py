"""The contract's worked examples (copied into tests/examples) through `cdrstream process`,
compared the way the contract's checker compares them: the listed fields of the latest
version of each CDR, the CDRs that must be `absent`, and the Simultaneous Ring `legs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli import main

EXAMPLES = Path(__file__).parent / "examples"
CONFIG = EXAMPLES / "config.toml"
ENTRY_KEYS = ("code", "complete", "via", "entry_call_id", "entered_at")
NAMES = sorted(path.name.removesuffix(".events.jsonl") for path in EXAMPLES.glob("*.events.jsonl"))


def test_all_four_examples_are_here() -> None:
    assert NAMES == [
        "1_outbound_pre_dial", "2_inbound_second_line", "3_mandatory_policy",
        "4_simultaneous_ring",
    ]


def latest_by_id(path: Path) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in path.read_bytes().splitlines():
        if row.strip():
            cdr = orjson.loads(row)
            if cdr["cdr_id"] not in latest or cdr["version"] >= latest[cdr["cdr_id"]]["version"]:
                latest[cdr["cdr_id"]] = cdr
    return latest


def differences(expected: dict[str, Any], got: dict[str, dict[str, Any]]) -> list[str]:
    diffs = []
    for cdr_id, fields in expected.get("cdrs", {}).items():
        for key, want in fields.items():
            have = got.get(cdr_id, {}).get(key, "<absent>")
            if key == "account_code_entries" and isinstance(have, list):
                keys = [k for k in ENTRY_KEYS if k in (want[0] if want else {})]
                have = [{k: entry.get(k) for k in keys} for entry in have]
            if have != want:
                diffs.append(f"{cdr_id}.{key}: want {want!r}, got {have!r}")
    diffs += [f"{cdr_id}: must not be issued" for cdr_id in expected.get("absent", [])
              if cdr_id in got]
    for cdr_id, legs in expected.get("legs", {}).items():
        have_legs = sorted(leg.get("call_id") for leg in got.get(cdr_id, {}).get("legs") or [])
        if have_legs != sorted(legs):
            diffs.append(f"{cdr_id}.legs: want {legs}, got {have_legs}")
    return diffs


@pytest.mark.parametrize("name", NAMES)
def test_worked_example(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "cdrs.jsonl"
    status = main([
        "process", "--config", str(CONFIG),
        "--input", str(EXAMPLES / f"{name}.events.jsonl"), "--output", str(output),
    ])
    assert status == 0, capsys.readouterr().err
    expected = orjson.loads((EXAMPLES / f"{name}.expected.json").read_bytes())
    got = latest_by_id(output)
    assert differences(expected, got) == []
    # every CDR is issued once, and nothing goes to the dead letters
    assert len(output.read_bytes().splitlines()) == len(got)
    assert not (tmp_path / "cdrs.dlq.jsonl").exists()


def test_comparison_notices_a_difference() -> None:
    expected = {"cdrs": {"sw1:a": {"account_code": "1001", "account_code_entries": [
        {"code": "1001", "via": "pre_dial"}]}}, "absent": ["sw1:b"], "legs": {"sw1:a": ["c"]}}
    got = {
        "sw1:a": {"account_code": "2002", "legs": [],
                  "account_code_entries": [{"code": "1001", "via": "second_line"}]},
        "sw1:b": {},
    }
    assert differences(expected, got) == [
        "sw1:a.account_code: want '1001', got '2002'",
        "sw1:a.account_code_entries: want [{'code': '1001', 'via': 'pre_dial'}], "
        "got [{'code': '1001', 'via': 'second_line'}]",
        "sw1:b: must not be issued",
        "sw1:a.legs: want ['c'], got []",
    ]
