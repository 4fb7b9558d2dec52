"""`cdrstream report`: billing rounding, compliance, unknown codes, CSV, CLI and chart."""

from __future__ import annotations

import csv
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams import cli
from streams.cdr import Cdr, CodeEntry
from streams.charts import panels, write_chart
from streams.commands.report import (
    BILLING_COLUMNS,
    COMPLIANCE_COLUMNS,
    UNKNOWN_CODE_COLUMNS,
    render_text,
    write_csv,
)
from streams.errors import CdrStreamError
from streams.report import (
    BillingPolicy,
    BillingRow,
    ComplianceRow,
    UnknownCodeRow,
    billed_increments,
    build_report,
    format_hours,
)
from streams.serialization import CdrWriter

MIN = 60_000
SIX = BillingPolicy(increment_ms=6 * MIN)
REGISTRY = {"smith-law": {"1001": "Jones v. Acme Corp", "2002": "Estate of Miller"}}
DAY = "2026-11-24"
START = 1_795_996_800_000  # 2026-11-24T05:00:00Z, midnight in New York


def make_cdr(
    number: int,
    *,
    version: int = 1,
    record_type: str = "call",
    group_id: str = "smith-law",
    user_id: str = "alice@smithlaw.example",
    talk_ms: int = 0,
    hold_ms: int = 0,
    answered: bool = True,
    code: str | None = None,
    required: bool = False,
    status: str | None = None,
    code_known: bool | None = None,
    client_name: str | None = None,
    local_date: str = DAY,
    billable: bool | None = None,
) -> Cdr:
    """A CDR with consistent defaults: answered calls are billable, status follows the code,
    code_known and client_name follow REGISTRY for groups that have one."""
    start = START + number * 3_600_000
    answer = start + 10_000 if answered else None
    release = (answer or start) + talk_ms + hold_ms
    registry = REGISTRY.get(group_id)
    if code is not None and registry is not None:
        code_known = code in registry if code_known is None else code_known
        client_name = registry.get(code) if client_name is None else client_name
    if status is None:
        status = "present" if code else ("missing" if required else "not_required")
    entries = () if code is None else (CodeEntry(code, True, "pre_dial", f"c{number}", start),)
    return Cdr(
        cdr_id=f"sw1:c{number}", version=version, record_type=record_type,  # type: ignore[arg-type]
        switch_id="sw1", user_id=user_id, group_id=group_id, call_id=f"c{number}",
        network_call_id=None, direction="outbound", calling_number="2125550100",
        called_number="2125550199", call_category="local", start_time=start,
        answer_time=answer, release_time=release, answered=answered,
        duration_ms=release - start, talk_ms=talk_ms, hold_ms=hold_ms, cause="normal",
        releasing_party="local", account_code=code, account_code_status=status,
        account_code_required=required, account_code_entries=entries,
        client_name=client_name, code_known=code_known, applied_to_cdr_id=None, legs=(),
        user_timezone="America/New_York", local_date=local_date,
        billable=(record_type == "call" and answered) if billable is None else billable,
    )


def by_code(cdrs: list[Cdr], policy: BillingPolicy = SIX, **kw: Any) -> dict[Any, BillingRow]:
    report = build_report(cdrs, policy, REGISTRY, **kw)
    return {(row.group_id, row.account_code): row for row in report.billing}


# ---------------------------------------------------------------- rounding


@pytest.mark.parametrize(("ms", "expected"), [
    (0, 0),
    (1, 1),
    (6 * MIN - 1, 1),
    (6 * MIN, 1),          # an exact multiple bills exactly
    (6 * MIN + 1, 2),      # 1 ms over bills a whole increment more
    (6 * MIN + 1000, 2),   # 6m01s bills 12 minutes
    (12 * MIN, 2),
    (60 * MIN, 10),
    (60 * MIN + 1, 11),
])
def test_rounds_each_call_up_to_the_increment(ms: int, expected: int) -> None:
    assert billed_increments(ms, SIX) == expected


def test_minimum_billable_seconds() -> None:
    policy = BillingPolicy.from_settings(6, 30)
    assert policy == BillingPolicy(increment_ms=360_000, minimum_ms=30_000)
    assert billed_increments(29_999, policy) == 0
    assert billed_increments(30_000, policy) == 1
    assert billed_increments(0, policy) == 0


def test_policy_from_fractional_minutes_and_invalid_values() -> None:
    assert BillingPolicy.from_settings(0.1).increment_ms == 6_000
    assert BillingPolicy.from_settings(15).increment_minutes == Decimal(15)
    with pytest.raises(ValueError, match="positive"):
        BillingPolicy(increment_ms=0)
    with pytest.raises(ValueError, match="negative"):
        BillingPolicy(increment_ms=1, minimum_ms=-1)


def test_rounding_is_per_call_not_on_the_sum() -> None:
    # two calls of 3 minutes: 2 increments (0.2 h), not 1 (6 minutes summed)
    rows = by_code([make_cdr(1, talk_ms=3 * MIN, code="1001"),
                    make_cdr(2, talk_ms=3 * MIN, code="1001")])
    row = rows[("smith-law", "1001")]
    assert (row.calls, row.billed_increments, row.billed_ms) == (2, 2, 12 * MIN)
    assert row.billed_hours == Decimal("0.2")
    assert row.connected_ms == 6 * MIN


def test_hold_time_is_billed_with_talk_time() -> None:
    rows = by_code([make_cdr(1, talk_ms=5 * MIN, hold_ms=MIN + 1, code="2002")])
    row = rows[("smith-law", "2002")]
    assert (row.talk_ms, row.hold_ms, row.connected_ms) == (5 * MIN, MIN + 1, 6 * MIN + 1)
    assert row.billed_increments == 2


def test_zero_length_and_under_minimum_calls_are_counted_but_not_billed() -> None:
    policy = BillingPolicy(increment_ms=6 * MIN, minimum_ms=60_000)
    rows = by_code([
        make_cdr(1, talk_ms=0, code="1001"),
        make_cdr(2, talk_ms=59_999, code="1001"),
        make_cdr(3, talk_ms=60_000, code="1001"),
    ], policy)
    row = rows[("smith-law", "1001")]
    assert (row.calls, row.unbilled_calls, row.billed_increments) == (3, 2, 1)
    assert row.talk_ms == 119_999


def test_other_increments() -> None:
    quarter = BillingPolicy.from_settings(15)
    rows = by_code([make_cdr(1, talk_ms=16 * MIN, code="1001")], quarter)
    assert rows[("smith-law", "1001")].billed_increments == 2
    assert rows[("smith-law", "1001")].billed_hours == Decimal("0.5")


@pytest.mark.parametrize(("value", "places", "text"), [
    (Decimal("1.3"), 2, "1.3"), (Decimal("0.25"), 2, "0.25"), (Decimal(2), 2, "2.0"),
    (Decimal(1) / 60, 4, "0.0167"), (Decimal(0), 2, "0.0"), (Decimal("0.005"), 2, "0.01"),
])
def test_format_hours(value: Decimal, places: int, text: str) -> None:
    assert format_hours(value, places) == text


# ---------------------------------------------------------------- what counts


def test_only_the_latest_version_counts() -> None:
    cdrs = [
        make_cdr(1, version=1, talk_ms=20 * MIN),                    # no code at first
        make_cdr(1, version=3, talk_ms=20 * MIN, code="2002"),       # corrected twice
        make_cdr(1, version=2, talk_ms=20 * MIN, code="1001"),       # out of order
        make_cdr(2, version=1, talk_ms=5 * MIN, code="1001"),
        make_cdr(2, version=2, talk_ms=5 * MIN, code="1001", answered=False),
    ]
    rows = by_code(cdrs)
    assert list(rows) == [("smith-law", "2002")]
    assert rows[("smith-law", "2002")].calls == 1
    assert rows[("smith-law", "2002")].billed_increments == 4
    assert build_report(cdrs, SIX).records == 2


def test_non_billable_and_code_entry_records_are_not_billed() -> None:
    rows = by_code([
        make_cdr(1, talk_ms=7 * MIN, code="1001"),
        make_cdr(2, answered=False, code="1001"),
        make_cdr(3, talk_ms=9 * MIN, code="1001", billable=False),
        make_cdr(4, talk_ms=9 * MIN, code="1001", record_type="code_entry", status="applied",
                 billable=True),
    ])
    row = rows[("smith-law", "1001")]
    assert (row.calls, row.billed_increments, row.talk_ms) == (1, 2, 7 * MIN)


def test_rows_per_group_and_code_with_client_names() -> None:
    report = build_report([
        make_cdr(1, talk_ms=6 * MIN, code="1001"),
        make_cdr(2, talk_ms=6 * MIN, code="9999"),
        make_cdr(3, talk_ms=6 * MIN),
        make_cdr(4, talk_ms=6 * MIN, code="1001", group_id="other", client_name="Recorded name"),
        make_cdr(5, talk_ms=6 * MIN, code="2002", group_id="other"),
    ], SIX, REGISTRY)
    assert [(r.group_id, r.code_label, r.client_name, r.calls) for r in report.billing] == [
        ("other", "1001", "Recorded name", 1),        # no registry: the name on the CDR
        ("other", "2002", "(no registry)", 1),
        ("smith-law", "1001", "Jones v. Acme Corp", 1),
        ("smith-law", "9999", "(unknown code)", 1),
        ("smith-law", "(none)", "(no code)", 1),      # no code sorts last
    ]
    assert report.groups == ("other", "smith-law")


def test_registry_of_the_report_wins_over_the_name_on_the_cdr() -> None:
    rows = by_code([make_cdr(1, talk_ms=MIN, code="1001", client_name="Old name")])
    assert rows[("smith-law", "1001")].client_name == "Jones v. Acme Corp"


# ---------------------------------------------------------------- compliance, unknown codes


def test_compliance_per_user() -> None:
    bob = "bob@smithlaw.example"
    report = build_report([
        make_cdr(1, required=True, code="1001", talk_ms=MIN),
        make_cdr(2, required=True, talk_ms=MIN),                  # missing
        make_cdr(3, required=True, answered=False),               # missing, unanswered
        make_cdr(4, required=False, talk_ms=MIN),                 # not required: not counted
        make_cdr(5, required=True, user_id=bob, code="2002", talk_ms=MIN),
        make_cdr(6, required=True, user_id=bob, record_type="code_entry", status="orphan"),
        make_cdr(7, user_id="carol@smithlaw.example", talk_ms=MIN),   # nothing required
        make_cdr(8, version=1, required=True, user_id=bob, talk_ms=MIN),
        make_cdr(8, version=2, required=True, user_id=bob, code="1001", talk_ms=MIN),
    ], SIX, REGISTRY)
    assert report.compliance == (
        ComplianceRow("smith-law", "alice@smithlaw.example", 3, 1, 2),
        ComplianceRow("smith-law", bob, 2, 2, 0),
    )
    assert report.compliance[0].missing_percent == Decimal("66.7")
    assert report.compliance[1].missing_percent == Decimal("0.0")


def test_unknown_codes_with_users() -> None:
    report = build_report([
        make_cdr(1, code="9999", talk_ms=MIN),
        make_cdr(2, code="9999", answered=False, user_id="bob@smithlaw.example"),
        make_cdr(3, code="9999", user_id="bob@smithlaw.example", talk_ms=MIN),
        make_cdr(4, code="8888", talk_ms=MIN),
        make_cdr(5, code="1001", talk_ms=MIN),                                # known
        make_cdr(6, code="7777", group_id="other", talk_ms=MIN),              # no registry
        make_cdr(7, code="6666", record_type="code_entry", status="orphan"),  # not a call
    ], SIX, REGISTRY)
    assert report.unknown_codes == (
        UnknownCodeRow("smith-law", "8888", 1, ("alice@smithlaw.example",)),
        UnknownCodeRow("smith-law", "9999", 3, ("alice@smithlaw.example", "bob@smithlaw.example")),
    )


# ---------------------------------------------------------------- filters


def test_date_and_group_filters() -> None:
    cdrs = [
        make_cdr(1, talk_ms=6 * MIN, code="1001"),
        make_cdr(2, talk_ms=12 * MIN, code="1001", local_date="2026-11-25"),
        make_cdr(3, talk_ms=18 * MIN, code="1001", group_id="other"),
    ]
    every = build_report(cdrs, SIX, REGISTRY)
    assert [(r.group_id, r.billed_increments) for r in every.billing] == [
        ("other", 3), ("smith-law", 3)]
    assert every.dates == (DAY, "2026-11-25")
    day = build_report(cdrs, SIX, REGISTRY, date=DAY)
    assert [(r.group_id, r.billed_increments) for r in day.billing] == [
        ("other", 3), ("smith-law", 1)]
    both = build_report(cdrs, SIX, REGISTRY, date=DAY, group="smith-law")
    assert [(r.group_id, r.billed_increments) for r in both.billing] == [("smith-law", 1)]
    assert (both.records, both.date, both.group) == (1, DAY, "smith-law")
    assert build_report(cdrs, SIX, REGISTRY, date="2026-01-01").billing == ()


# ---------------------------------------------------------------- rendering


def sample() -> list[Cdr]:
    return [
        make_cdr(1, talk_ms=6 * MIN + 1000, code="1001", required=True),
        make_cdr(2, talk_ms=30 * MIN, hold_ms=2 * MIN, code="2002", required=True),
        make_cdr(3, talk_ms=4 * MIN, required=True),
        make_cdr(4, talk_ms=MIN, code="9999", user_id="bob@smithlaw.example"),
        make_cdr(5, answered=False, required=True),
    ]


def read_csv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_csv_files_and_columns(tmp_path: Path) -> None:
    report = build_report(sample(), SIX, REGISTRY, date=DAY)
    written = write_csv(report, str(tmp_path / "out" / "day"))
    assert [path.name for path in written] == [
        "day-billing.csv", "day-compliance.csv", "day-unknown-codes.csv"]
    assert read_csv(tmp_path / "out" / "day-billing.csv") == [
        list(BILLING_COLUMNS),
        ["smith-law", "1001", "Jones v. Acme Corp", "1", "0", "361.000", "0.000", "361.000",
         "2", "6.0", "12.0", "0.2"],
        ["smith-law", "2002", "Estate of Miller", "1", "0", "1800.000", "120.000", "1920.000",
         "6", "6.0", "36.0", "0.6"],
        ["smith-law", "9999", "(unknown code)", "1", "0", "60.000", "0.000", "60.000",
         "1", "6.0", "6.0", "0.1"],
        ["smith-law", "(none)", "(no code)", "1", "0", "240.000", "0.000", "240.000",
         "1", "6.0", "6.0", "0.1"],
    ]
    assert BILLING_COLUMNS == (
        "group_id", "account_code", "client_name", "calls", "unbilled_calls", "talk_seconds",
        "hold_seconds", "connected_seconds", "billed_increments", "increment_minutes",
        "billed_minutes", "billed_hours")
    assert read_csv(tmp_path / "out" / "day-compliance.csv") == [
        ["group_id", "user_id", "required_calls", "present", "missing", "missing_percent"],
        ["smith-law", "alice@smithlaw.example", "4", "2", "2", "50.0"],
    ]
    assert list(COMPLIANCE_COLUMNS) == read_csv(tmp_path / "out" / "day-compliance.csv")[0]
    assert read_csv(tmp_path / "out" / "day-unknown-codes.csv") == [
        list(UNKNOWN_CODE_COLUMNS), ["smith-law", "9999", "1", "bob@smithlaw.example"]]


def test_csv_into_a_directory(tmp_path: Path) -> None:
    report = build_report(sample(), SIX, REGISTRY, date=DAY, group="smith-law")
    written = write_csv(report, str(tmp_path))
    assert [path.name for path in written] == [
        f"cdr-report-{DAY}-smith-law-billing.csv", f"cdr-report-{DAY}-smith-law-compliance.csv",
        f"cdr-report-{DAY}-smith-law-unknown-codes.csv"]
    assert all(path.parent == tmp_path for path in written)


def test_terminal_table() -> None:
    text = render_text(build_report(sample(), SIX, REGISTRY, date=DAY))
    assert text.splitlines() == [
        f"cdrstream report: date {DAY}, all groups; 5 CDRs (latest versions)",
        "billing: 6-minute increments (0.1 h), rounded up per call; minimum 0 s",
        "",
        "Billable time per client (answered calls; connected = talk + hold)",
        "GROUP      CODE    CLIENT              CALLS  UNBILLED  CONNECTED  INCREMENTS  HOURS",
        "smith-law  1001    Jones v. Acme Corp      1         0    0:06:01           2    0.2",
        "smith-law  2002    Estate of Miller        1         0    0:32:00           6    0.6",
        "smith-law  9999    (unknown code)          1         0    0:01:00           1    0.1",
        "smith-law  (none)  (no code)               1         0    0:04:00           1    0.1",
        "smith-law  TOTAL                           4         0    0:43:01          10    1.0",
        "",
        "Account-code compliance (calls that required a code)",
        "GROUP      USER                    REQUIRED  PRESENT  MISSING  MISSING %",
        "smith-law  alice@smithlaw.example         4        2        2      50.0%",
        "",
        "Unknown account codes (not in the group's registry)",
        "GROUP      CODE  CALLS  USERS",
        "smith-law  9999      1  bob@smithlaw.example",
    ]


def test_terminal_table_when_empty() -> None:
    text = render_text(build_report([], SIX, REGISTRY, group="nobody"))
    assert text.count("  (none)") == 3
    assert "all dates, group nobody; 0 CDRs" in text


# ---------------------------------------------------------------- chart


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_chart_panels() -> None:
    report = build_report([*sample(), make_cdr(9, talk_ms=MIN, code="1001", group_id="other")],
                          SIX, REGISTRY, date=DAY)
    drawn = panels(report)
    assert [panel.title for panel in drawn] == [f"other \u2014 {DAY}", f"smith-law \u2014 {DAY}"]
    assert [(bar.label, bar.hours) for bar in drawn[1].bars] == [
        ("Estate of Miller (2002)", Decimal("0.6")),
        ("Jones v. Acme Corp (1001)", Decimal("0.2")),
        ("(no code)", Decimal("0.1")),
        ("9999 (unknown code)", Decimal("0.1")),
    ]


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = write_chart(build_report(sample(), SIX, REGISTRY, date=DAY), tmp_path / "chart.png")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000


def test_chart_of_nothing_is_still_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = write_chart(build_report([], SIX, REGISTRY), tmp_path / "empty.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_chart_without_matplotlib_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(CdrStreamError, match=r"pip install 'cdrstream\[charts\]'"):
        write_chart(build_report(sample(), SIX, REGISTRY), tmp_path / "chart.png")
    assert not (tmp_path / "chart.png").exists()


# ---------------------------------------------------------------- CLI end to end


CONFIG = """
[groups."smith-law"]
usage = "mandatory"

[client_codes."smith-law"]
"1001" = "Jones v. Acme Corp (config)"
"2002" = "Estate of Miller"

[report]
billing_increment_minutes = 6
minimum_billable_seconds = 90
"""


def write_cdrs(path: Path, cdrs: list[Cdr]) -> Path:
    fmt = "avro" if path.suffix == ".avro" else "csv" if path.suffix == ".csv" else "jsonl"
    with CdrWriter(path, fmt) as writer:  # type: ignore[arg-type]
        for cdr in cdrs:
            writer.write(cdr)
    return path


def cli_cdrs() -> list[Cdr]:
    return [
        *sample(),
        make_cdr(2, version=2, talk_ms=30 * MIN, hold_ms=2 * MIN, code="1001", required=True),
        make_cdr(6, talk_ms=MIN, code="1001", local_date="2026-11-25"),
        make_cdr(7, talk_ms=9 * MIN, code="1001", group_id="other"),
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".avro"])
def test_cli_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    cdrs = write_cdrs(tmp_path / f"cdrs{suffix}", cli_cdrs())
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    code = cli.main([
        "report", "--input", str(cdrs), "--config", str(config), "--date", DAY,
        "--group", "smith-law", "--csv", str(tmp_path / "out" / "r"),
        "--chart", str(tmp_path / "chart.png"),
    ])
    out, err = capsys.readouterr()
    assert code == 0, err
    # version 2 moved call 2 to 1001; the 1-minute call to 9999 is under the 90 s minimum
    assert out.splitlines()[:10] == [
        f"cdrstream report: date {DAY}, group smith-law; 5 CDRs (latest versions)",
        "billing: 6-minute increments (0.1 h), rounded up per call; minimum 90 s",
        "",
        "Billable time per client (answered calls; connected = talk + hold)",
        "GROUP      CODE    CLIENT                       CALLS  UNBILLED  CONNECTED  INCREMENTS"
        "  HOURS",
        "smith-law  1001    Jones v. Acme Corp (config)      2         0    0:38:01           8"
        "    0.8",
        "smith-law  9999    (unknown code)                   1         1    0:01:00           0"
        "    0.0",
        "smith-law  (none)  (no code)                        1         0    0:04:00           1"
        "    0.1",
        "smith-law  TOTAL                                    4         1    0:43:01           9"
        "    0.9",
        "",
    ]
    assert "wrote " + str(tmp_path / "out" / "r-billing.csv") in err
    billing = read_csv(tmp_path / "out" / "r-billing.csv")
    assert [row[:5] + row[8:] for row in billing[1:]] == [
        ["smith-law", "1001", "Jones v. Acme Corp (config)", "2", "0", "8", "6.0", "48.0", "0.8"],
        ["smith-law", "9999", "(unknown code)", "1", "1", "0", "6.0", "0.0", "0.0"],
        ["smith-law", "(none)", "(no code)", "1", "0", "1", "6.0", "6.0", "0.1"],
    ]
    assert read_csv(tmp_path / "out" / "r-compliance.csv")[1] == [
        "smith-law", "alice@smithlaw.example", "4", "2", "2", "50.0"]
    png = (tmp_path / "chart.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    assert len(png) > 1000


def test_cli_increment_override_and_all_groups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cdrs = write_cdrs(tmp_path / "cdrs.jsonl", cli_cdrs())
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    assert cli.main(["report", "--input", str(cdrs), "--config", str(config),
                     "--increment-minutes", "15"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "billing: 15-minute increments (0.25 h), rounded up per call; minimum 90 s"
    assert [line.split()[:2] + line.split()[-2:] for line in lines[5:11]] == [
        ["other", "1001", "1", "0.25"],
        ["other", "TOTAL", "1", "0.25"],
        ["smith-law", "1001", "4", "1.0"],    # 32:00 -> 3, 6:01 -> 1, 1:00 under the minimum
        ["smith-law", "9999", "0", "0.0"],
        ["smith-law", "(none)", "1", "0.25"],
        ["smith-law", "TOTAL", "5", "1.25"],
    ]


def test_cli_rejects_a_bad_date(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--input", str(tmp_path / "x.jsonl"), "--date", "2026-13-01"])
    assert exit_info.value.code == 2
    assert "is not a date YYYY-MM-DD" in capsys.readouterr().err


def test_cli_reports_a_missing_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["report", "--input", str(tmp_path / "none.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_starts_without_importing_matplotlib() -> None:
    code = (
        "import sys; from streams import cli; cli.build_parser(); "
        "sys.exit(1 if any(m.startswith('matplotlib') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
