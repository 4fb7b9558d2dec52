"""Where an input came from, and dead-letter records (SPEC rule C9)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(init=False)
class Origin:
    """Where an event was read: a topic partition and offset, or a file and line number.
    (A value class with spelled-out methods, native in the compiled core.)"""

    source: Final[str]
    partition: Final[int | None]
    offset: Final[int]

    def __init__(self, source: str, partition: int | None, offset: int) -> None:
        self.source = source
        self.partition = partition
        self.offset = offset

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Origin):
            return NotImplemented
        return (
            self.offset == other.offset and self.partition == other.partition
            and self.source == other.source
        )

    def __hash__(self) -> int:
        return hash((self.source, self.partition, self.offset))

    def __reduce__(self) -> tuple[type[Origin], tuple[Any, ...]]:
        return Origin, (self.source, self.partition, self.offset)

    def to_json_dict(self) -> dict[str, Any]:
        if self.partition is None:
            return {"file": self.source, "line": self.offset}
        return {"topic": self.source, "partition": self.partition, "offset": self.offset}


@dataclass(init=False, unsafe_hash=True)
class DeadLetter:
    """An input that could not be used, why, and where it came from.

    `payload` is the decoded event (as its JSON form) where it decoded, else the raw text.
    """

    reason: Final[str]
    origin: Final[Origin | None]
    payload: Final[dict[str, Any] | str]
    event_id: Final[str | None]

    def __init__(
        self,
        reason: str, origin: Origin | None, payload: dict[str, Any] | str,
        event_id: str | None = None,
    ) -> None:
        self.reason = reason
        self.origin = origin
        self.payload = payload
        self.event_id = event_id

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason}
        out["origin"] = None if self.origin is None else self.origin.to_json_dict()
        if isinstance(self.payload, dict):
            out["event"] = self.payload
        else:
            out["raw"] = self.payload
        return out

    def __reduce__(self) -> tuple[type[DeadLetter], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return DeadLetter, (self.reason, self.origin, self.payload, self.event_id)


def raw_text(data: bytes | str) -> str:
    """Raw input as text for a dead-letter record: undecodable bytes replaced, without the
    line's ending."""
    text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
    return text.rstrip("\r\n")
