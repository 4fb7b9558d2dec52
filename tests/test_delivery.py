"""SFTP delivery of the daily files against a real OpenSSH server (tests/sftp_fixture.py):
complete and correct files, retries while the server is down, no partial file after a cut
connection, host keys checked, re-runs that send nothing, corrections as revisions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streams.cdr import Cdr
from streams.cli import main
from streams.delivery import ExportReport, export_days
from streams.errors import DeliveryError
from streams.settings import Settings, settings_from_mapping
from tests.sftp_fixture import PASSPHRASE, SftpServer
from tests.test_export import A_DAY, DAY, GROUP, latest_of, make_cdr

pytestmark = pytest.mark.sftp

WORK = [(GROUP, DAY)]
CSV = "smith-law_2026-11-24.csv"
JSON = "smith-law_2026-11-24.json"
MANIFEST = "smith-law_2026-11-24.manifest.json"


def config(tmp_path: Path, *destinations: dict[str, Any], **export: Any) -> Settings:
    table = {"output_dir": str(tmp_path / "out"), **export}
    return settings_from_mapping(
        {"export": table, "sftp": list(destinations)}, "test config", environ={}
    )


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def actions(report: ExportReport, destination: str) -> list[tuple[str, int | None]]:
    return [(o.action, o.revision) for o in report.outcomes if o.destination == destination]


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def test_a_days_files_arrive_complete_and_correct(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = config(tmp_path, sftp_server.destination("acme"), formats=["csv", "json"])
    report = export_days(settings, latest_of(*A_DAY), WORK)
    report.raise_for_errors()
    assert actions(report, "sftp:acme") == [("delivered", 1)]
    remote = sftp_server.root / "acme"
    assert listing(remote) == [CSV, JSON, MANIFEST]
    local = tmp_path / "out"
    for name in (CSV, JSON):  # the customer gets what the local archive holds
        assert (remote / name).read_bytes() == (local / name).read_bytes()
    manifest = json.loads((remote / MANIFEST).read_bytes())
    assert [(f["name"], f["rows"]) for f in manifest["files"]] == [(CSV, 3), (JSON, 3)]
    for item in manifest["files"]:
        data = (remote / item["name"]).read_bytes()
        assert (sha256(data), len(data)) == (item["sha256"], item["bytes"])
    assert json.loads((remote / JSON).read_bytes()) == [
        cdr.to_json_dict() for cdr in sorted(A_DAY, key=lambda c: c.start_time)
    ]


def test_destinations_get_only_their_groups_in_their_formats(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = config(
        tmp_path,
        sftp_server.destination("smith", groups=[GROUP], formats=["json"]),
        sftp_server.destination("jones", groups=["jones-cpa"]),
    )
    cdrs = latest_of(*A_DAY, make_cdr(9, group="jones-cpa"))
    export_days(settings, cdrs, [(GROUP, DAY), ("jones-cpa", DAY)]).raise_for_errors()
    assert listing(sftp_server.root / "smith") == [JSON, MANIFEST]
    assert listing(sftp_server.root / "jones") == [
        "jones-cpa_2026-11-24.csv", "jones-cpa_2026-11-24.manifest.json",
    ]


def test_a_rerun_sends_nothing_and_does_not_even_connect(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = config(tmp_path, sftp_server.destination("acme"))
    export_days(settings, latest_of(*A_DAY), WORK).raise_for_errors()
    remote = sftp_server.root / "acme"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in remote.iterdir()}
    logins = sftp_server.logins()
    assert logins == 1

    again = export_days(settings, latest_of(*A_DAY), WORK)
    assert actions(again, "sftp:acme") == [("unchanged", 1)]
    assert sftp_server.logins() == logins
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in remote.iterdir()} == before


def test_a_correction_produces_a_revision_file(sftp_server: SftpServer, tmp_path: Path) -> None:
    settings = config(tmp_path, sftp_server.destination("acme"))
    export_days(settings, latest_of(*A_DAY), WORK).raise_for_errors()
    remote = sftp_server.root / "acme"
    first = (remote / CSV).read_bytes()
    # the customer picks up and removes the first files; a late correction arrives
    for name in (CSV, MANIFEST):
        (remote / name).unlink()
    corrected = dataclasses.replace(A_DAY[1], version=2, account_code="2002")
    report = export_days(settings, latest_of(A_DAY[0], corrected, A_DAY[2]), WORK)
    assert actions(report, "sftp:acme") == [("delivered", 2)]
    assert listing(remote) == ["smith-law_2026-11-24.r2.csv",
                               "smith-law_2026-11-24.r2.manifest.json"]
    revised = (remote / "smith-law_2026-11-24.r2.csv").read_bytes()
    assert revised != first and b"sw1:c1,2," in revised
    manifest = json.loads((remote / "smith-law_2026-11-24.r2.manifest.json").read_bytes())
    assert (manifest["revision"], manifest["replaces"]) == (2, MANIFEST)
    assert manifest["files"][0]["sha256"] == sha256(revised)


def test_a_lost_ledger_never_overwrites_a_delivered_file(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = config(tmp_path, sftp_server.destination("acme"))
    export_days(settings, latest_of(*A_DAY), WORK).raise_for_errors()
    remote = sftp_server.root / "acme"
    first = (remote / CSV).read_bytes()
    settings.export.ledger_file.unlink()
    same = export_days(settings, latest_of(*A_DAY), WORK)
    assert actions(same, "sftp:acme") == [("unchanged", 1)]
    settings.export.ledger_file.unlink()
    changed = export_days(settings, latest_of(*A_DAY[:2]), WORK)
    assert actions(changed, "sftp:acme") == [("delivered", 2)]
    assert (remote / CSV).read_bytes() == first
    assert "smith-law_2026-11-24.r2.csv" in listing(remote)


def test_server_down_during_the_export_then_back(sftp_server: SftpServer, tmp_path: Path) -> None:
    destination = sftp_server.destination(
        "acme", retries=100, retry_initial_seconds=0.05, retry_max_seconds=0.2,
    )
    settings = config(tmp_path, destination)
    sftp_server.stop()
    messages: list[str] = []
    reports: list[ExportReport] = []
    worker = threading.Thread(daemon=True, target=lambda: reports.append(
        export_days(settings, latest_of(*A_DAY), WORK, notify=messages.append)
    ))
    worker.start()
    try:
        wait_for(lambda: sum("retrying" in m for m in messages) >= 2)
        assert "connection refused" in messages[0]
        sftp_server.start()
    finally:
        worker.join(timeout=20)
    [report] = reports
    report.raise_for_errors()
    assert actions(report, "sftp:acme") == [("delivered", 1)]
    assert listing(sftp_server.root / "acme") == [CSV, MANIFEST]


def test_the_server_down_for_good_is_an_error_after_the_retries(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = config(tmp_path, sftp_server.destination("acme", retries=2),
                      sftp_server.destination("other"))
    slept: list[float] = []
    sftp_server.stop()
    report = export_days(settings, latest_of(*A_DAY), WORK, sleep=slept.append)
    assert slept == [0.05, 0.1]  # exponential backoff
    assert actions(report, "sftp:acme") == [("failed", None)]
    assert actions(report, "sftp:other") == [("failed", None)]
    with pytest.raises(DeliveryError, match=r"sftp acme .*failed after 3 attempt\(s\)"):
        report.raise_for_errors()
    # the local files are written all the same, and the next run delivers
    assert actions(report, f"local:{(tmp_path / 'out').resolve()}") == [("delivered", 1)]
    sftp_server.start()
    retry = export_days(settings, latest_of(*A_DAY), WORK)
    assert actions(retry, "sftp:acme") == [("delivered", 1)]


def big_day(count: int) -> dict[str, Cdr]:
    return latest_of(*(make_cdr(n, start="2026-11-24T14:00:00Z") for n in range(count)))


def test_a_connection_cut_mid_upload_leaves_no_partial_file_visible(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    settings = config(tmp_path, sftp_server.destination("acme"))
    remote = sftp_server.root / "acme"
    cut: list[int] = []

    def progress(name: str, done: int, total: int) -> None:
        if not cut and name == CSV and 0 < done < total:
            cut.append(sftp_server.kill_sessions())

    latest = big_day(1500)
    report = export_days(settings, latest, WORK, progress=progress)
    assert cut and cut[0] > 0
    assert actions(report, "sftp:acme") == [("failed", None)]
    # the cut upload's temporary file: hidden, incomplete, never under the final name
    [partial] = listing(remote)
    assert partial.startswith(".smith-law_2026-11-24.csv.") and partial.endswith(".partial")
    full = (tmp_path / "out" / CSV).read_bytes()
    assert len((remote / partial).read_bytes()) < len(full)

    messages: list[str] = []
    report = export_days(settings, latest, WORK, notify=messages.append)
    report.raise_for_errors()
    assert listing(remote) == [CSV, MANIFEST]
    assert (remote / CSV).read_bytes() == full
    assert json.loads((remote / MANIFEST).read_bytes())["files"][0]["rows"] == 1500
    assert any("removed 1 partial file" in m for m in messages)


def test_a_cut_is_retried_within_the_same_run(sftp_server: SftpServer, tmp_path: Path) -> None:
    settings = config(tmp_path, sftp_server.destination("acme", retries=3))
    cut: list[int] = []

    def progress(name: str, done: int, total: int) -> None:
        if not cut and 0 < done < total:
            cut.append(sftp_server.kill_sessions())

    report = export_days(settings, big_day(1500), WORK, progress=progress)
    report.raise_for_errors()
    assert cut
    assert listing(sftp_server.root / "acme") == [CSV, MANIFEST]


def test_a_wrong_host_key_is_refused_without_retries(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    wrong = sftp_server.known_hosts_with(sftp_server.keys.other_host_public, "wrong_known_hosts")
    settings = config(tmp_path, sftp_server.destination(
        "acme", known_hosts_file=str(wrong), retries=5,
    ))
    messages: list[str] = []
    report = export_days(settings, latest_of(*A_DAY), WORK, notify=messages.append)
    with pytest.raises(DeliveryError, match=r"host key of 127.0.0.1:.* does not match known_hosts"):
        report.raise_for_errors()
    assert messages == []  # not retried
    assert listing(sftp_server.root / "acme") == []
    assert sftp_server.logins() == 0


def test_an_unknown_host_key_is_refused(sftp_server: SftpServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    missing = tmp_path / "no_such_known_hosts"
    for path, message in ((empty, r"host key of \[127.0.0.1\]:\d+ \(ssh-ed25519 SHA256:.*\) "
                                  r"is not in known_hosts"),
                          (missing, "known_hosts_file .* does not exist")):
        settings = config(tmp_path, sftp_server.destination("acme", known_hosts_file=str(path)))
        with pytest.raises(DeliveryError, match=message):
            export_days(settings, latest_of(*A_DAY), WORK).raise_for_errors()
    assert listing(sftp_server.root / "acme") == []


def test_an_encrypted_key_takes_its_passphrase_from_the_environment(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    destination = sftp_server.destination(
        "acme", private_key_file=str(sftp_server.keys.encrypted_client_key),
        passphrase_env="ACME_KEY_PASSPHRASE",
    )
    settings = config(tmp_path, destination)
    with pytest.raises(DeliveryError, match=r"ACME_KEY_PASSPHRASE .* is not set"):
        export_days(settings, latest_of(*A_DAY), WORK, environ={}).raise_for_errors()
    unset = config(tmp_path, {**destination, "passphrase_env": None})
    with pytest.raises(DeliveryError, match=r"is encrypted: .* passphrase_env"):
        export_days(unset, latest_of(*A_DAY), WORK, environ={}).raise_for_errors()
    with pytest.raises(DeliveryError, match=r"cannot load the key \(is ACME_KEY_PASSPHRASE right"):
        export_days(settings, latest_of(*A_DAY), WORK,
                    environ={"ACME_KEY_PASSPHRASE": "wrong"}).raise_for_errors()
    report = export_days(settings, latest_of(*A_DAY), WORK,
                         environ={"ACME_KEY_PASSPHRASE": PASSPHRASE})
    report.raise_for_errors()
    assert listing(sftp_server.root / "acme") == [CSV, MANIFEST]


def test_a_missing_remote_dir_is_refused(sftp_server: SftpServer, tmp_path: Path) -> None:
    settings = config(tmp_path, sftp_server.destination(
        "acme", remote_dir=str(sftp_server.root / "nowhere"), retries=5,
    ))
    with pytest.raises(DeliveryError, match=r"remote_dir .*nowhere: no such directory"):
        export_days(settings, latest_of(*A_DAY), WORK).raise_for_errors()


def test_cli_export_delivers_by_sftp(
    sftp_server: SftpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = sftp_server.destination("acme")
    conf = tmp_path / "config.toml"
    conf.write_text(
        f'[export]\noutput_dir = "{tmp_path / "out"}"\n\n[[sftp]]\n'
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in d.items())
    )
    source = tmp_path / "cdrs.jsonl"
    source.write_bytes(b"".join(json.dumps(c.to_json_dict()).encode() + b"\n" for c in A_DAY))
    args = ["export", "--config", str(conf), "--date", "2026-11-24", "--input", str(source)]
    assert main(args) == 0
    assert "-> sftp:acme: delivered r1: smith-law_2026-11-24.csv" in capsys.readouterr().err
    assert listing(sftp_server.root / "acme") == [CSV, MANIFEST]
    assert main(args) == 0
    assert "-> sftp:acme: unchanged since r1" in capsys.readouterr().err
    assert main([*args, "--destination", "nope"]) == 2
    assert "no [[sftp]] destination named nope" in capsys.readouterr().err
