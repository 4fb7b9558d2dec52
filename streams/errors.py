"""One root exception, one subclass per subsystem."""

from __future__ import annotations


class CdrStreamError(Exception):
    """Root of every error cdrstream raises on purpose."""


class ConfigError(CdrStreamError):
    """The configuration file or environment is unusable; the message names the key."""


class EventDecodeError(CdrStreamError):
    """An input event cannot be decoded or breaks the contract (SPEC section 1)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SerializationError(CdrStreamError):
    """A file or message is not in a format cdrstream reads or writes."""


class FileModeError(CdrStreamError):
    """File mode could not run (a shard process of `process --jobs` failed)."""


class KafkaToolError(CdrStreamError):
    """A Kafka admin, publish or consume operation failed."""


class WorkerError(CdrStreamError):
    """The streaming worker cannot start or go on."""


class AuditError(CdrStreamError):
    """Replay, audit, explain or archive cannot be done as asked."""


class DeliveryError(CdrStreamError):
    """Daily export or SFTP delivery failed."""
