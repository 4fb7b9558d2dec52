"""Typed settings: the TOML file of SPEC section 2 plus cdrstream's own tables.

Every key is checked: an unknown key, a wrong type or an impossible value is refused with a
`ConfigError` that names the key. Secrets and endpoints may come from the environment:
`CDRSTREAM_<TABLE>__<KEY>` overrides `[table] key` (for example
`CDRSTREAM_KAFKA__SASL_PASSWORD`), and `KAFKA_BOOTSTRAP_SERVERS` overrides
`[kafka] bootstrap_servers`.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from streams.errors import ConfigError
from streams.timefmt import zone

CallCategory = Literal[
    "internal", "local", "toll_free", "national", "international", "emergency", "other"
]
CALL_CATEGORIES: tuple[str, ...] = (
    "internal", "local", "toll_free", "national", "international", "emergency", "other",
)

_FAC = re.compile(r"^[*#]?[0-9*#]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GroupPolicy(_Strict):
    """Account-code policy of one group (or the default group)."""

    code_digits: Annotated[int, Field(ge=1, le=20)] = 4
    usage: Literal["optional", "mandatory"] = "optional"
    exempt_users: Annotated[tuple[str, ...], Field(strict=False)] = ()
    allow_without_code: Annotated[tuple[CallCategory, ...], Field(strict=False)] = ()


class KafkaSettings(_Strict):
    """The `[kafka]` table: where and how the streaming commands talk to Kafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    call_events_topic: str = "call-events"
    dtmf_events_topic: str = "dtmf-events"
    cdr_topic: str = "cdr"
    dlq_topic: str = "cdr-dlq"
    partitions: Annotated[int, Field(ge=1, le=10_000)] = 6
    replication_factor: Annotated[int, Field(ge=1, le=100)] = 1
    encoding: Literal["avro", "json"] = "avro"
    cdr_encoding: Literal["avro", "json"] = "avro"
    client_id: str = "cdrstream"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "security_protocol SASL_* needs sasl_mechanism, sasl_username and "
                "sasl_password (the password from CDRSTREAM_KAFKA__SASL_PASSWORD)"
            )
        return self


class WorkerSettings(_Strict):
    """The `[worker]` table: the Faust worker."""

    app_id: str = "cdrstream"
    web_port: Annotated[int, Field(ge=1, le=65535)] = 6066
    web_bind: str = "0.0.0.0"
    store: Literal["memory://", "rocksdb://"] = "memory://"
    data_dir: str = ".cache/worker"
    idle_flush_seconds: Annotated[float, Field(gt=0, le=86_400)] | None = None
    # 500: with 10,000, a worker under live load took fetches of seconds of traffic at
    # once and its fetches stalled between them (docs/decisions.md, "Batches of 500")
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    batch_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 0.25
    # the broker answers a fetch once it has this many bytes for it, or once the wait is
    # over: with Kafka's 1 byte, a quiet worker fetched a few records at a time, about
    # 1 ms of CPU each (docs/decisions.md, "Fetches wait for 64 KiB or 50 ms")
    fetch_min_bytes: Annotated[int, Field(ge=1, le=64 * 2**20)] = 65_536
    fetch_max_wait_seconds: Annotated[float, Field(ge=0, le=10)] = 0.05
    # 10 s: with 1 s, each offset commit held up the next fetches by about a second
    # (docs/decisions.md, "Offsets are committed every ten seconds")
    commit_interval_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    rebalance_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60
    session_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30
    heartbeat_interval_seconds: Annotated[float, Field(gt=0, le=600)] = 3


class ReportSettings(_Strict):
    """The `[report]` table: billing report conventions."""

    billing_increment_minutes: Annotated[float, Field(gt=0, le=1440)] = 6
    minimum_billable_seconds: Annotated[int, Field(ge=0)] = 0


ExportFormat = Literal["csv", "json"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
ALL_GROUPS = "*"


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise ValueError("must list at least one")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"listed more than once: {', '.join(repeated)}")
    return values


class ExportSettings(_Strict):
    """The `[export]` table: the daily files (one per group per local day) and their schedule.

    See docs/daily-files.md."""

    formats: Annotated[
        tuple[ExportFormat, ...], Field(strict=False), AfterValidator(_unique)
    ] = ("csv",)
    output_dir: Annotated[str, Field(min_length=1)] = "daily-files"
    ledger_path: Annotated[str, Field(min_length=1)] | None = None
    groups: Annotated[tuple[str, ...], Field(strict=False)] = ()
    timezones: dict[str, str] = {}
    grace_seconds: Annotated[float, Field(ge=0, le=7 * 86_400)] = 0
    catch_up_days: Annotated[int, Field(ge=0, le=366)] = 7
    start_date: date | None = None
    worker_enabled: bool = False
    # how often the worker's leader looks again (late corrections become revisions)
    worker_check_seconds: Annotated[float, Field(gt=0, le=86_400)] = 900

    @field_validator("timezones")
    @classmethod
    def _known_zones(cls, value: dict[str, str]) -> dict[str, str]:
        for group, name in value.items():
            if zone(name) is None:
                raise ValueError(f"{group}: unknown IANA time zone {name!r}")
        return value

    @property
    def ledger_file(self) -> Path:
        """The delivery ledger: `ledger_path`, else `delivery-ledger.json` in `output_dir`."""
        if self.ledger_path is not None:
            return Path(self.ledger_path)
        return Path(self.output_dir) / "delivery-ledger.json"


class SftpDestination(_Strict):
    """One `[[sftp]]` destination of the daily files. Public-key authentication only; the
    server's host key must be in `known_hosts_file`."""

    name: Annotated[str, Field(pattern=_NAME)]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(min_length=1)]
    private_key_file: Annotated[str, Field(min_length=1)]
    passphrase_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    known_hosts_file: Annotated[str, Field(min_length=1)]
    remote_dir: Annotated[str, Field(min_length=1)] = "."
    groups: Annotated[tuple[str, ...], Field(strict=False), AfterValidator(_unique)]
    formats: Annotated[
        tuple[ExportFormat, ...], Field(strict=False), AfterValidator(_unique)
    ] | None = None
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 15
    io_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60
    retries: Annotated[int, Field(ge=0, le=100)] = 5
    retry_initial_seconds: Annotated[float, Field(gt=0, le=3600)] = 2
    retry_max_seconds: Annotated[float, Field(gt=0, le=86_400)] = 300

    @model_validator(mode="before")
    @classmethod
    def _no_passwords(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in ("password", "passphrase"):
                if key in data:
                    raise ValueError(
                        f"{key}: not accepted: no passwords in config files. Authenticate "
                        "with private_key_file; if that key is encrypted, put its passphrase "
                        "in an environment variable and name the variable in passphrase_env"
                    )
        return data

    @field_validator("passphrase_env")
    @classmethod
    def _not_an_override(cls, value: str | None) -> str | None:
        if value is not None and value.upper().startswith(ENV_PREFIX):
            raise ValueError(
                f"must not start with {ENV_PREFIX} (such variables are read as config "
                "overrides); e.g. SFTP_ACME_KEY_PASSPHRASE"
            )
        return value

    def serves(self, group_id: str) -> bool:
        """True where this destination receives `group_id`'s files."""
        return ALL_GROUPS in self.groups or group_id in self.groups


def _unique_destinations(
    value: tuple[SftpDestination, ...],
) -> tuple[SftpDestination, ...]:
    if value:
        _unique(tuple(destination.name for destination in value))
    return value


class Settings(_Strict):
    """The whole configuration."""

    feature_access_code: str = "*71"
    settle_seconds: Annotated[float, Field(ge=0, le=86_400)] = 5
    correction_window_seconds: Annotated[float, Field(ge=0, le=86_400 * 7)] = 0
    max_call_hours: Annotated[float, Field(gt=0, le=24 * 31)] = 24
    # cdrstream's own: how long, in event time, a final call's legs are remembered after
    # they leave memory, so a re-delivered event of theirs is known and ignored (later,
    # it would be a dead letter as a late event). See README, "Decisions".
    redelivery_horizon_seconds: Annotated[float, Field(gt=0, le=86_400 * 7)] = 3600
    digit_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 5
    default_timezone: str = "America/New_York"
    default_group: GroupPolicy = GroupPolicy()
    groups: dict[str, GroupPolicy] = {}
    client_codes: dict[str, dict[str, str]] = {}
    kafka: KafkaSettings = KafkaSettings()
    worker: WorkerSettings = WorkerSettings()
    report: ReportSettings = ReportSettings()
    export: ExportSettings = ExportSettings()
    sftp: Annotated[
        tuple[SftpDestination, ...], Field(strict=False), AfterValidator(_unique_destinations)
    ] = ()

    @field_validator("feature_access_code")
    @classmethod
    def _fac_digits(cls, value: str) -> str:
        if not _FAC.match(value):
            raise ValueError("must be DTMF digits (0-9, * and #), e.g. '*71'")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if zone(value) is None:
            raise ValueError(f"unknown IANA time zone {value!r}")
        return value

    @model_validator(mode="after")
    def _registry_codes_fit(self) -> Settings:
        for group, registry in self.client_codes.items():
            digits = self.policy(group).code_digits
            for code in registry:
                if not (code.isdigit() and len(code) == digits):
                    raise ValueError(
                        f"client_codes.{group}.{code}: a code of group {group!r} is "
                        f"{digits} digits 0-9"
                    )
        return self

    def policy(self, group_id: str) -> GroupPolicy:
        """The account-code policy that applies to `group_id`."""
        return self.groups.get(group_id, self.default_group)

    @property
    def settle_ms(self) -> int:
        return round(self.settle_seconds * 1000)

    @property
    def correction_window_ms(self) -> int:
        return round(self.correction_window_seconds * 1000)

    @property
    def redelivery_horizon_ms(self) -> int:
        return round(self.redelivery_horizon_seconds * 1000)

    @property
    def max_call_ms(self) -> int:
        return round(self.max_call_hours * 3_600_000)

    @property
    def digit_timeout_ms(self) -> int:
        return round(self.digit_timeout_seconds * 1000)


ENV_PREFIX = "CDRSTREAM_"
# environment variables with the prefix that are not config keys
NOT_CONFIG = frozenset({"CDRSTREAM_PURE"})  # see streams/native.py


def _expects_text(path: list[str]) -> bool:
    """True where the key at `path` is a string setting (so `123456` stays a string)."""
    model: Any = Settings
    for index, part in enumerate(path):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        annotation = field.annotation
        args = typing.get_args(annotation)
        if index == len(path) - 1:
            return annotation is str or (str in args and all(a in (str, type(None)) for a in args))
        if typing.get_origin(annotation) is dict:  # groups."name", client_codes."name"
            model = args[1]
            path = path[: index + 1] + path[index + 2:]  # skip the table's key
            if len(path) == index + 1:
                return False
        else:
            model = annotation
    return False


def _env_value(text: str, path: list[str]) -> Any:
    """An environment value: the plain string for a string setting (a password of digits
    stays a password), else a TOML value where it parses as one, else the string."""
    if _expects_text(path):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _overlay_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        target = merged
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is not a table")
        target[path[-1]] = _env_value(text, path)
    if environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        merged.setdefault("kafka", {})["bootstrap_servers"] = environ["KAFKA_BOOTSTRAP_SERVERS"]
    return merged


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{source}: {key}: {message}" if key else f"{source}: {message}")
    return "\n".join(lines)


def settings_from_mapping(
    raw: Mapping[str, Any], source: str = "config", environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate a parsed TOML document (plus environment overrides) into Settings."""
    merged = _overlay_env(dict(raw), os.environ if environ is None else environ)
    try:
        return Settings.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def default_config_text() -> str:
    """The embedded default configuration (streams/default_config.toml)."""
    return resources.files("streams").joinpath("default_config.toml").read_text("utf-8")


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load the TOML file at `path`, or the embedded default when `path` is None."""
    if path is None:
        text, source = default_config_text(), "embedded default config"
    else:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as error:
            raise ConfigError(f"{source}: cannot read: {error.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    return settings_from_mapping(raw, source, environ)
