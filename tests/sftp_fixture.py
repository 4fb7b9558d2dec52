"""pytest plugin: a real OpenSSH server (sshd + internal-sftp) on 127.0.0.1 for SFTP tests.

Enable with ``"tests.sftp_fixture"`` in ``pytest_plugins`` in ``tests/conftest.py``.

``sftp_server`` (function scope) starts ``/usr/sbin/sshd -D -e -f <tmp>/sshd_config`` on a
free 127.0.0.1 port with its own ed25519 host key, public-key authentication only
(``PasswordAuthentication no``, ``UsePAM no``), ``AuthorizedKeysFile`` holding the test
client keys (``sftp_keys``, session scope, generated with ``ssh-keygen``), and
``Subsystem sftp internal-sftp``. The test user is the user running pytest (root in CI,
where ``deploy/install-system-deps.sh`` installs Debian's openssh-server), so nothing
outside the temporary directories is changed and re-runs need no clean-up. The remote
directories are under the test's ``tmp_path``. The server can be stopped, restarted on the
same port and have its sessions killed (a connection cut), and counts logins from its log.

Needs OpenSSH's ``sshd`` and ``ssh-keygen``; without them the tests using the fixture error
out (they are not skipped).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SSHD = os.environ.get("CDRSTREAM_TEST_SSHD", "/usr/sbin/sshd")
START_TIMEOUT_S = 10.0
PASSPHRASE = "correct horse battery staple"


def _keygen(path: Path, passphrase: str = "") -> str:
    """A new ed25519 key at `path`; its public key line."""
    ssh_keygen = shutil.which("ssh-keygen")
    if ssh_keygen is None:
        raise RuntimeError("ssh-keygen not found: install OpenSSH (apt-get install openssh-server)")
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
        check=True, capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


@dataclass(frozen=True)
class SshKeys:
    """Keys for the session: the server's host key, a second (wrong) host key, and the
    client keys (one plain, one encrypted with PASSPHRASE) that the server accepts."""

    directory: Path
    host_key: Path
    host_public: str
    other_host_public: str
    client_key: Path
    encrypted_client_key: Path
    authorized_keys: Path


@pytest.fixture(scope="session")
def sftp_keys(tmp_path_factory: pytest.TempPathFactory) -> SshKeys:
    directory = tmp_path_factory.mktemp("ssh-keys")
    host_public = _keygen(directory / "host_ed25519")
    other_host_public = _keygen(directory / "other_host_ed25519")
    client_public = _keygen(directory / "client_ed25519")
    encrypted_public = _keygen(directory / "client_encrypted_ed25519", PASSPHRASE)
    authorized = directory / "authorized_keys"
    authorized.write_text(f"{client_public}\n{encrypted_public}\n")
    for key in directory.iterdir():
        key.chmod(0o600)
    return SshKeys(
        directory, directory / "host_ed25519", host_public, other_host_public,
        directory / "client_ed25519", directory / "client_encrypted_ed25519", authorized,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssh_version() -> tuple[int, int]:
    result = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stderr + result.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


class SftpServer:
    """One sshd on 127.0.0.1:port, owned by the test that started it."""

    host = "127.0.0.1"

    def __init__(self, keys: SshKeys, directory: Path) -> None:
        self.keys = keys
        self.directory = directory
        self.user = getpass.getuser()
        self.port = _free_port()
        self.root = directory / "remote"
        self.root.mkdir()
        self.log = directory / "sshd.log"
        self.config = directory / "sshd_config"
        self.known_hosts = self.known_hosts_with(keys.host_public, "known_hosts")
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.keys.host_key}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.keys.authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "MaxStartups 100",
        ]
        if _openssh_version() >= (9, 8):
            lines.append("PerSourcePenalties no")  # the tests cut connections on purpose
        self.config.write_text("\n".join(lines) + "\n")

    def known_hosts_with(self, public_key: str, name: str) -> Path:
        """A known_hosts file naming `public_key` as this server's host key."""
        key_type, key_data = public_key.split()[:2]
        path = self.directory / name
        path.write_text(f"[{self.host}]:{self.port} {key_type} {key_data}\n")
        return path

    def remote_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def destination(self, name: str, **overrides: Any) -> dict[str, Any]:
        """An `[[sftp]]` table for this server (remote_dir: a fresh directory `name`)."""
        table: dict[str, Any] = {
            "name": name, "host": self.host, "port": self.port, "user": self.user,
            "private_key_file": str(self.keys.client_key),
            "known_hosts_file": str(self.known_hosts),
            "remote_dir": str(self.remote_dir(name)), "groups": ["*"],
            "connect_timeout_seconds": 5, "io_timeout_seconds": 10,
            "retries": 0, "retry_initial_seconds": 0.05, "retry_max_seconds": 0.2,
        }
        table.update(overrides)
        return table

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} not found: install openssh-server (see .ci/run)")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited ({self.process.returncode}): {self._log_tail()}")
            if self._banner():
                return
            time.sleep(0.02)
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self._log_tail()}")

    def _banner(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def kill_sessions(self) -> int:
        """Kill every connection's sshd process (SIGKILL): a connection cut. Their count."""
        if self.process is None:
            return 0
        sessions = _children(self.process.pid)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(sessions)

    def stop(self) -> None:
        """Stop the server and its sessions: the port refuses connections until start()."""
        if self.process is None:
            return
        self.kill_sessions()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def logins(self) -> int:
        """How many logins the server has accepted so far."""
        return self.log.read_text(errors="replace").count("Accepted publickey for")


@pytest.fixture
def sftp_server(sftp_keys: SshKeys, tmp_path: Path) -> Iterator[SftpServer]:
    directory = tmp_path / "sshd"
    directory.mkdir()
    server = SftpServer(sftp_keys, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
