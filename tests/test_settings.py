"""Settings: the TOML file, its checks, and overrides from the environment."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.settings import load_settings, settings_from_mapping

SASL = {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}}


def test_embedded_default_loads() -> None:
    settings = load_settings(None, environ={})
    assert settings.feature_access_code == "*71"
    assert settings.policy("smith-law").usage == "mandatory"
    assert settings.policy("anyone-else").usage == "optional"


def test_environment_overrides_a_key_of_any_table() -> None:
    settings = settings_from_mapping(
        {},
        "c",
        {
            "CDRSTREAM_SETTLE_SECONDS": "7",
            "CDRSTREAM_KAFKA__PARTITIONS": "12",
            "CDRSTREAM_WORKER__STORE": "rocksdb://",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        },
    )
    assert settings.settle_seconds == 7
    assert settings.kafka.partitions == 12
    assert settings.worker.store == "rocksdb://"
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"


@pytest.mark.parametrize("password", ["123456", "true", "0x1F", "inf", '"quoted"', "12 # x"])
def test_a_secret_from_the_environment_is_taken_verbatim(password: str) -> None:
    settings = settings_from_mapping(SASL, "c", {"CDRSTREAM_KAFKA__SASL_PASSWORD": password})
    assert settings.kafka.sasl_password == password


def test_sasl_without_a_password_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="sasl_password"):
        settings_from_mapping(SASL, "c", {})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"settle_secs": 5}, "c.toml: settle_secs: unknown key"),
        ({"settle_seconds": "5"}, "c.toml: settle_seconds: Input should be a valid number"),
        ({"max_call_hours": 0}, "c.toml: max_call_hours: Input should be greater than 0"),
        (
            {"groups": {"g": {"usage": "sometimes"}}},
            "c.toml: groups.g.usage: Input should be 'optional' or 'mandatory'",
        ),
        ({"feature_access_code": "*7a"}, "c.toml: feature_access_code: must be DTMF digits"),
        (
            {"default_timezone": "Mars/Base"},
            "c.toml: default_timezone: unknown IANA time zone 'Mars/Base'",
        ),
        (
            {"client_codes": {"smith-law": {"12": "x"}}},
            "client_codes.smith-law.12: a code of group 'smith-law' is 4 digits",
        ),
    ],
)
def test_a_bad_config_names_the_key_and_the_problem(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings_from_mapping(raw, "c.toml", {})
    assert message in str(error.value)


def test_an_environment_override_is_checked_like_the_file() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.partitions"):
        settings_from_mapping({}, "c", {"CDRSTREAM_KAFKA__PARTITIONS": "zero"})
