"""Daily export and delivery: write a group's day to the output directory and upload it to
the `[[sftp]]` destinations, exactly once per content.

- Every file is written under a hidden temporary name and renamed into place, so no
  partial file is ever visible under a final name; leftovers of a cut transfer are removed
  at the start of the next session.
- Data files go first, the manifest last: a manifest on the server means its files are
  complete.
- The ledger (`[export] ledger_path`, JSON) records per destination, group and day the
  revision delivered and each file's sha256. A day whose files are unchanged is skipped
  (and a destination with nothing to send is not even connected to); a changed day becomes
  the next revision (`smith-law_2026-11-24.r2.csv`). A name already taken on the server
  by other content is never overwritten: the revision number goes up instead.
- SFTP: public-key authentication only, host keys always checked against the
  destination's known_hosts file (unknown or changed key: refused, no retry); transient
  failures are retried with exponential backoff.

`run_daily` is the scheduled job (`cdrstream export --daily`, and the streaming worker when
`[export] worker_enabled`); it blocks (network I/O, backoff sleeps), so call it from a
thread in async code.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import posixpath
import secrets
import stat
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
import paramiko

from streams.cdr import Cdr
from streams.errors import DeliveryError
from streams.export import (
    NamedFile,
    RenderedFile,
    build_manifest,
    daily_work,
    data_file_name,
    index_by_group_day,
    is_partial_name,
    manifest_lists,
    manifest_name,
    partial_name,
    render_day,
)
from streams.settings import ExportFormat, Settings, SftpDestination
from streams.timefmt import Millis, format_iso

Notify = Callable[[str], None]
Progress = Callable[[str, int, int], None]
Action = Literal["delivered", "unchanged", "failed"]
LEDGER_VERSION = 1


def _quiet(message: str) -> None:
    del message


def _now_ms() -> Millis:
    return round(time.time() * 1000)


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one group's day at one destination."""

    destination: str
    group_id: str
    day: date
    rows: int
    action: Action
    revision: int | None = None
    names: tuple[str, ...] = ()
    detail: str = ""

    def describe(self) -> str:
        head = f"{self.group_id} {self.day} ({self.rows} CDRs) -> {self.destination}: "
        if self.action == "delivered":
            return head + f"delivered r{self.revision}: {', '.join(self.names)}"
        if self.action == "unchanged":
            return head + f"unchanged since r{self.revision}"
        return head + f"FAILED: {self.detail}"


@dataclass(slots=True)
class ExportReport:
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DeliveryError("; ".join(self.errors))


@dataclass(frozen=True, slots=True)
class DayExport:
    """A group's day, rendered in every format some destination wants."""

    group_id: str
    day: date
    rows: int
    files: Mapping[str, RenderedFile]


# ---------------------------------------------------------------- ledger


class Ledger:
    """What was delivered where: `{destination: {group: {date: entry}}}` in a JSON file.

    An entry: `revision`, `files` (name, format, rows, bytes, sha256 each), `manifest`,
    `delivered_at`, and `earlier` (the entries it replaced, oldest first)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] = {"ledger_version": LEDGER_VERSION, "destinations": {}}
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as error:
            raise DeliveryError(f"ledger {path}: cannot read: {error.strerror}") from None
        try:
            data = orjson.loads(raw)
            if data.get("ledger_version") != LEDGER_VERSION or not isinstance(
                data.get("destinations"), dict
            ):
                raise ValueError("not a cdrstream delivery ledger")
        except (orjson.JSONDecodeError, ValueError, AttributeError) as error:
            raise DeliveryError(
                f"ledger {path}: unreadable ({error}); it records what was delivered, so "
                "repair or move it rather than delete it"
            ) from None
        self._data = data

    def entry(self, destination: str, group_id: str, day: date) -> dict[str, Any] | None:
        found = self._data["destinations"].get(destination, {}).get(group_id, {})
        return found.get(day.isoformat())  # type: ignore[no-any-return]

    def record(
        self, destination: str, export: DayExport, *, revision: int,
        files: Sequence[NamedFile], manifest: str, now_ms: Millis,
    ) -> None:
        days = self._data["destinations"].setdefault(destination, {}).setdefault(
            export.group_id, {}
        )
        previous = days.get(export.day.isoformat())
        earlier: list[Any] = []
        if previous is not None:
            earlier = list(previous.get("earlier", []))
            if previous["revision"] != revision:
                earlier.append({k: v for k, v in previous.items() if k != "earlier"})
        days[export.day.isoformat()] = {
            "revision": revision,
            "files": [item.describe() for item in files],
            "manifest": manifest,
            "delivered_at": format_iso(now_ms),
            "earlier": earlier,
        }
        self.save()

    def save(self) -> None:
        """Write atomically: a temporary file, fsync, rename."""
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(orjson.dumps(self._data, option=orjson.OPT_INDENT_2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise DeliveryError(f"ledger {self.path}: cannot write: {error.strerror}") from None


@contextlib.contextmanager
def open_ledger(path: Path) -> Iterator[Ledger]:
    """The ledger, locked against a second exporter on this host for the duration."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a+b")
    except OSError as error:
        raise DeliveryError(f"ledger {path}: {error.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeliveryError(
                f"ledger {path} is locked: another export is running"
            ) from None
        try:
            yield Ledger(path)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------- targets


class Target(Protocol):
    """A directory that receives daily files (local or on an SFTP server)."""

    def exists(self, name: str) -> bool:
        """True where a file `name` is there."""

    def fetch(self, name: str) -> bytes | None:
        """The content of `name`, or None where there is no such file."""

    def put(self, name: str, data: bytes) -> None:
        """Make `name` appear with `data`, complete or not at all (may replace `name`)."""

    def clean_partials(self) -> int:
        """Remove the temporary files of earlier, interrupted writes; their count."""


class LocalTarget:
    """The local output directory (`[export] output_dir`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DeliveryError(f"output_dir {directory}: {error.strerror}") from None

    def exists(self, name: str) -> bool:
        return (self.directory / name).is_file()

    def fetch(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> None:
        tmp = self.directory / partial_name(name, secrets.token_hex(6))
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / name)

    def clean_partials(self) -> int:
        stale = [path for path in self.directory.iterdir() if is_partial_name(path.name)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)


class SftpTarget:
    """`remote_dir` over an open SFTP session."""

    def __init__(self, sftp: paramiko.SFTPClient, remote_dir: str, progress: Progress | None):
        self.sftp = sftp
        self.remote_dir = remote_dir
        self.progress = progress

    def _path(self, name: str) -> str:
        return posixpath.join(self.remote_dir, name)

    def exists(self, name: str) -> bool:
        try:
            self.sftp.stat(self._path(name))
        except FileNotFoundError:
            return False
        return True

    def fetch(self, name: str) -> bytes | None:
        if not self.exists(name):
            return None
        buffer = io.BytesIO()
        self.sftp.getfo(self._path(name), buffer)
        return buffer.getvalue()

    def put(self, name: str, data: bytes) -> None:
        tmp = self._path(partial_name(name, secrets.token_hex(6)))
        progress = self.progress
        callback = None if progress is None else (lambda done, total: progress(name, done, total))
        self.sftp.putfo(io.BytesIO(data), tmp, file_size=len(data), callback=callback,
                        confirm=True)
        try:
            self.sftp.posix_rename(tmp, self._path(name))
        except OSError as error:
            if error.errno is not None or "unsupported" not in str(error).lower():
                raise
            # no posix-rename@openssh.com: plain SFTP rename (refuses an existing target)
            self.sftp.rename(tmp, self._path(name))

    def clean_partials(self) -> int:
        stale = [name for name in self.sftp.listdir(self.remote_dir) if is_partial_name(name)]
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                self.sftp.remove(self._path(name))
        return len(stale)


# ---------------------------------------------------------------- one day, one target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same_files(entry: Mapping[str, Any], files: Sequence[RenderedFile]) -> bool:
    delivered = sorted((f["format"], f["sha256"]) for f in entry["files"])
    return delivered == sorted((f.format, f.sha256) for f in files)


def delivered_revision(
    ledger: Ledger, key: str, export: DayExport, formats: Sequence[ExportFormat]
) -> int | None:
    """The revision `key` has of this day where the ledger says it has exactly these
    files, else None."""
    entry = ledger.entry(key, export.group_id, export.day)
    if entry is None or not _same_files(entry, [export.files[f] for f in formats]):
        return None
    return int(entry["revision"])


def _replaced_manifest(entry: Mapping[str, Any] | None, revision: int) -> str | None:
    """The manifest of the revision before `revision` that the destination received."""
    if entry is None:
        return None
    if int(entry["revision"]) != revision:
        return str(entry["manifest"])
    earlier = entry.get("earlier") or []
    return str(earlier[-1]["manifest"]) if earlier else None


def deliver_day(
    target: Target,
    ledger: Ledger,
    key: str,
    export: DayExport,
    *,
    formats: Sequence[ExportFormat],
    now_ms: Millis,
    verify_present: bool = False,
) -> Outcome:
    """Deliver one group's day to `target` unless the ledger says it already has it.

    `verify_present` (the local directory): files the ledger lists but the directory no
    longer has are written again under the same names."""
    files = [export.files[fmt] for fmt in formats]
    entry = ledger.entry(key, export.group_id, export.day)
    if entry is not None and _same_files(entry, files):
        revision = int(entry["revision"])
        listed = [f["name"] for f in entry["files"]] + [entry["manifest"]]
        if not verify_present or all(target.exists(name) for name in listed):
            return Outcome(key, export.group_id, export.day, export.rows, "unchanged", revision)
    else:
        revision = 1 if entry is None else int(entry["revision"]) + 1
    # Never overwrite a name that holds other content (the ledger was lost or another
    # system wrote there): take the next revision instead. Files already there with
    # this content (an earlier run stopped before its ledger entry) are kept as they are.
    while True:
        named = [
            NamedFile(data_file_name(export.group_id, export.day, revision, f.format), f)
            for f in files
        ]
        manifest = manifest_name(export.group_id, export.day, revision)
        present: set[str] = set()
        taken = False
        for item in named:
            existing = target.fetch(item.name)
            if existing is not None:
                taken = taken or _sha256(existing) != item.file.sha256
                present.add(item.name)
        existing_manifest = target.fetch(manifest)
        if existing_manifest is not None:
            taken = taken or not manifest_lists(existing_manifest, named)
            present.add(manifest)
        if not taken:
            break
        revision += 1
    sent = []
    for item in named:
        if item.name not in present:
            target.put(item.name, item.file.data)
            sent.append(item.name)
    if manifest not in present:
        target.put(manifest, build_manifest(
            export.group_id, export.day, revision=revision, files=named, created_ms=now_ms,
            replaces=_replaced_manifest(entry, revision),
        ))
        sent.append(manifest)
    ledger.record(key, export, revision=revision, files=named, manifest=manifest, now_ms=now_ms)
    action: Action = "delivered" if sent else "unchanged"
    return Outcome(key, export.group_id, export.day, export.rows, action, revision, tuple(sent))


# ---------------------------------------------------------------- SFTP sessions


class _Refused(Exception):
    """A failure that retrying will not mend (host key, authentication, configuration)."""


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _Refused(
            f"host key of {hostname} ({key.get_name()} {key.fingerprint}) is not in "
            f"known_hosts file {self.known_hosts}: refused. Check the fingerprint with the "
            f"server's operator, then add the key to that file (e.g. ssh-keyscan)"
        )


def _private_key(destination: SftpDestination, environ: Mapping[str, str]) -> paramiko.PKey:
    passphrase = None
    if destination.passphrase_env is not None:
        passphrase = environ.get(destination.passphrase_env)
        if passphrase is None:
            raise _Refused(
                f"passphrase_env: environment variable {destination.passphrase_env} "
                "(the private key's passphrase) is not set"
            )
    path = destination.private_key_file
    try:
        return paramiko.PKey.from_path(path, None if passphrase is None else passphrase.encode())
    except (paramiko.PasswordRequiredException, TypeError):
        # (cryptography raises TypeError for an encrypted key without a passphrase)
        raise _Refused(
            f"private_key_file {path} is encrypted: put its passphrase in an environment "
            "variable and name it in passphrase_env"
        ) from None
    except OSError as error:
        raise _Refused(f"private_key_file {path}: cannot read: {error.strerror}") from None
    except (paramiko.SSHException, ValueError) as error:
        hint = f" (is {destination.passphrase_env} right?)" if passphrase is not None else ""
        raise _Refused(f"private_key_file {path}: cannot load the key{hint}: {error}") from None


@contextlib.contextmanager
def sftp_session(
    destination: SftpDestination, environ: Mapping[str, str] | None = None
) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session to `destination`, its host key checked against its known_hosts file.

    Raises `_Refused` for what a retry cannot mend, OSError/SSHException/EOFError else."""
    key = _private_key(destination, os.environ if environ is None else environ)
    known_hosts = destination.known_hosts_file
    if not os.path.isfile(known_hosts):
        raise _Refused(
            f"known_hosts_file {known_hosts} does not exist; host keys are always checked: "
            "create it with the server's verified host key"
        )
    client = paramiko.SSHClient()
    try:
        try:
            client.load_system_host_keys(known_hosts)  # read only, never written back
        except (OSError, paramiko.SSHException) as error:
            raise _Refused(f"known_hosts_file {known_hosts}: cannot read: {error}") from None
        client.set_missing_host_key_policy(_RefuseUnknownHost(known_hosts))
        timeout = destination.connect_timeout_seconds
        try:
            client.connect(
                destination.host, destination.port, username=destination.user, pkey=key,
                allow_agent=False, look_for_keys=False, timeout=timeout,
                banner_timeout=timeout, auth_timeout=timeout,
                channel_timeout=destination.io_timeout_seconds,
            )
        except paramiko.BadHostKeyException as error:
            raise _Refused(
                f"host key of {destination.host}:{destination.port} "
                f"({error.key.get_name()} {error.key.fingerprint}) does not match known_hosts "
                f"file {known_hosts} (expected {error.expected_key.fingerprint}): refused. "
                "A changed host key may mean a man-in-the-middle; if the server's key really "
                "changed, verify the new fingerprint and update that file"
            ) from None
        except paramiko.AuthenticationException as error:
            raise _Refused(
                f"authentication as {destination.user!r} with {destination.private_key_file} "
                f"failed: {error}"
            ) from None
        sftp = client.open_sftp()
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(destination.io_timeout_seconds)
        try:
            mode = sftp.stat(destination.remote_dir).st_mode
        except FileNotFoundError:
            mode = None
        if mode is None or not stat.S_ISDIR(mode):
            raise _Refused(f"remote_dir {destination.remote_dir}: no such directory")
        yield sftp
    finally:
        client.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        causes = {_describe(cause) for cause in error.errors.values()}
        return "; ".join(sorted(causes))
    text = str(error) or type(error).__name__
    if isinstance(error, TimeoutError):
        return f"timed out ({text})"
    if isinstance(error, OSError) and error.errno == errno.ECONNREFUSED:
        return "connection refused"
    return text


def with_retries(
    destination: SftpDestination,
    job: Callable[[], None],
    notify: Notify = _quiet,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run `job` (which opens its own session) until it succeeds: `retries` more times
    after a transient failure, waiting `retry_initial_seconds`, doubling up to
    `retry_max_seconds`. What a retry cannot mend raises DeliveryError at once."""
    where = f"sftp {destination.name} ({destination.host}:{destination.port})"
    attempt = 0
    while True:
        attempt += 1
        try:
            job()
            return
        except _Refused as error:
            raise DeliveryError(f"{where}: {error}") from None
        except (FileNotFoundError, PermissionError) as error:
            raise DeliveryError(f"{where}: {error}") from None
        except (OSError, EOFError, paramiko.SSHException) as error:
            if attempt > destination.retries:
                raise DeliveryError(
                    f"{where}: failed after {attempt} attempt(s): {_describe(error)}"
                ) from None
            delay = min(
                destination.retry_max_seconds,
                destination.retry_initial_seconds * 2 ** (attempt - 1),
            )
            notify(f"{where}: attempt {attempt} failed: {_describe(error)}; "
                   f"retrying in {delay:g}s")
            sleep(delay)


# ---------------------------------------------------------------- export runs


def _formats_for(settings: Settings, destination: SftpDestination) -> tuple[ExportFormat, ...]:
    return destination.formats or settings.export.formats


def _render(
    settings: Settings, latest: Mapping[str, Cdr], work: Sequence[tuple[str, date]]
) -> list[DayExport]:
    formats: set[ExportFormat] = set(settings.export.formats)
    for destination in settings.sftp:
        formats.update(_formats_for(settings, destination))
    index = index_by_group_day(latest.values())
    exports = []
    for group, day in work:
        cdrs = index.get((group, day.isoformat()), [])
        exports.append(DayExport(group, day, len(cdrs), render_day(cdrs, sorted(formats))))
    return exports


@dataclass(slots=True)
class _Run:
    """What one export run shares between its destinations."""

    ledger: Ledger
    report: ExportReport
    now_ms: Millis
    notify: Notify
    sleep: Callable[[float], None]
    progress: Progress | None
    environ: Mapping[str, str] | None


def _deliver_local(run: _Run, directory: Path, exports: Sequence[DayExport],
                   formats: Sequence[ExportFormat]) -> None:
    target = LocalTarget(directory)
    target.clean_partials()
    key = f"local:{directory.resolve()}"
    for export in exports:
        try:
            outcome = deliver_day(target, run.ledger, key, export, formats=formats,
                                  now_ms=run.now_ms, verify_present=True)
        except OSError as error:
            run.report.errors.append(f"output_dir {directory}: {error}")
            outcome = Outcome(key, export.group_id, export.day, export.rows, "failed",
                              detail=str(error))
        run.report.outcomes.append(outcome)


def _deliver_sftp(run: _Run, destination: SftpDestination, exports: Sequence[DayExport],
                  formats: Sequence[ExportFormat]) -> None:
    key = f"sftp:{destination.name}"
    done: dict[tuple[str, date], Outcome] = {}
    for export in exports:
        revision = delivered_revision(run.ledger, key, export, formats)
        if revision is not None:
            done[(export.group_id, export.day)] = Outcome(
                key, export.group_id, export.day, export.rows, "unchanged", revision
            )
    pending = [e for e in exports if (e.group_id, e.day) not in done]

    def job() -> None:
        with sftp_session(destination, run.environ) as sftp:
            target = SftpTarget(sftp, destination.remote_dir, run.progress)
            cleaned = target.clean_partials()
            if cleaned:
                run.notify(f"sftp {destination.name}: removed {cleaned} partial file(s) of "
                           "an interrupted upload")
            for export in pending:
                if (export.group_id, export.day) not in done:
                    outcome = deliver_day(target, run.ledger, key, export, formats=formats,
                                          now_ms=run.now_ms)
                    done[(export.group_id, export.day)] = outcome

    error = ""
    if pending:
        try:
            with_retries(destination, job, run.notify, run.sleep)
        except DeliveryError as failure:
            error = str(failure)
            run.report.errors.append(error)
    for export in exports:
        outcome = done.get((export.group_id, export.day)) or Outcome(
            key, export.group_id, export.day, export.rows, "failed", detail=error
        )
        run.report.outcomes.append(outcome)


def export_days(
    settings: Settings,
    latest: Mapping[str, Cdr],
    work: Sequence[tuple[str, date]],
    *,
    deliver: bool = True,
    destinations: Collection[str] | None = None,
    now_ms: Millis | None = None,
    notify: Notify = _quiet,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress | None = None,
    environ: Mapping[str, str] | None = None,
) -> ExportReport:
    """Write each (group, day) of `work` to `[export] output_dir` and, where `deliver`,
    upload it to every `[[sftp]]` destination that serves the group (only those named in
    `destinations`, where given). `latest` is the final CDR set (cdr_id -> latest version).

    A destination that fails (after its retries) does not stop the others: its error is in
    the report (`raise_for_errors`)."""
    now = _now_ms() if now_ms is None else now_ms
    report = ExportReport()
    if not work:
        return report
    chosen = [d for d in settings.sftp if destinations is None or d.name in destinations]
    if destinations is not None:
        unknown = sorted(set(destinations) - {d.name for d in settings.sftp})
        if unknown:
            raise DeliveryError(f"no [[sftp]] destination named {', '.join(unknown)}")
    exports = _render(settings, latest, work)
    with open_ledger(settings.export.ledger_file) as ledger:
        run = _Run(ledger, report, now, notify, sleep, progress, environ)
        _deliver_local(run, Path(settings.export.output_dir), exports, settings.export.formats)
        for destination in chosen if deliver else ():
            served = [e for e in exports if destination.serves(e.group_id)]
            if served:
                _deliver_sftp(run, destination, served, _formats_for(settings, destination))
    return report


def run_daily(
    settings: Settings,
    latest: Mapping[str, Cdr],
    *,
    now_ms: Millis | None = None,
    groups: Sequence[str] | None = None,
    deliver: bool = True,
    destinations: Collection[str] | None = None,
    notify: Notify = _quiet,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress | None = None,
    environ: Mapping[str, str] | None = None,
) -> ExportReport:
    """The scheduled export: every group's days that are due at `now_ms` (local midnight
    plus settle time plus `[export] grace_seconds`) within `[export] catch_up_days`,
    missed ones included; days already delivered unchanged are skipped, changed ones go
    out as new revisions. Safe to call as often as you like (e.g. every minute)."""
    now = _now_ms() if now_ms is None else now_ms
    work = daily_work(settings, latest.values(), now, groups)
    return export_days(
        settings, latest, work, deliver=deliver, destinations=destinations, now_ms=now,
        notify=notify, sleep=sleep, progress=progress, environ=environ,
    )
