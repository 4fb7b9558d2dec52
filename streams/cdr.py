"""Call detail records (SPEC section 4) as immutable values, and their JSON form."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Final, Literal

from streams.timefmt import Millis, format_iso

RecordType = Literal["call", "code_entry"]
Via = Literal["pre_dial", "second_line"]

CALL: Final = "call"
CODE_ENTRY: Final = "code_entry"
PRESENT: Final = "present"
MISSING: Final = "missing"
NOT_REQUIRED: Final = "not_required"
APPLIED: Final = "applied"
ORPHAN: Final = "orphan"
INCOMPLETE: Final = "incomplete"


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """One account-code entry: complete or not, pre-dial or on a second line."""

    code: str | None
    complete: bool
    via: Via
    entry_call_id: str
    entered_at: Millis

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "code": self.code, "complete": self.complete, "via": self.via,
            "entry_call_id": self.entry_call_id, "entered_at": format_iso(self.entered_at),
        }

    def __reduce__(self) -> tuple[type[CodeEntry], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return CodeEntry, (self.code, self.complete, self.via, self.entry_call_id, self.entered_at)


@dataclass(frozen=True, slots=True)
class LegSummary:
    """A Simultaneous Ring leg folded into its call."""

    call_id: str
    called_number: str | None
    answered: bool
    answer_time: Millis | None
    release_time: Millis | None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id, "called_number": self.called_number,
            "answered": self.answered, "answer_time": _iso_or_none(self.answer_time),
            "release_time": _iso_or_none(self.release_time),
        }

    def __reduce__(self) -> tuple[type[LegSummary], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return LegSummary, (self.call_id, self.called_number, self.answered, self.answer_time,
                            self.release_time)


@dataclass(frozen=True, slots=True)
class Cdr:
    """One version of one call detail record. Field order is the CSV column order."""

    cdr_id: str
    version: int
    record_type: RecordType
    switch_id: str
    user_id: str
    group_id: str
    call_id: str
    network_call_id: str | None
    direction: str
    calling_number: str | None
    called_number: str | None
    call_category: str | None
    start_time: Millis
    answer_time: Millis | None
    release_time: Millis
    answered: bool
    duration_ms: int
    talk_ms: int
    hold_ms: int
    cause: str
    releasing_party: str | None
    account_code: str | None
    account_code_status: str
    account_code_required: bool
    account_code_entries: tuple[CodeEntry, ...]
    client_name: str | None
    code_known: bool | None
    applied_to_cdr_id: str | None
    legs: tuple[LegSummary, ...]
    user_timezone: str
    local_date: str
    billable: bool

    def __reduce__(self) -> tuple[type[Cdr], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return Cdr, _all_fields(self)

    def same_content(self, other: Cdr) -> bool:
        """Equal in everything but the version number."""
        return _content(self) == _content(other)

    def to_json_dict(self) -> dict[str, Any]:
        out = dict(zip(CDR_FIELDS, _all_fields(self), strict=True))
        out["start_time"] = _iso_or_none(self.start_time)
        out["answer_time"] = _iso_or_none(self.answer_time)
        out["release_time"] = _iso_or_none(self.release_time)
        out["account_code_entries"] = [entry.to_json_dict() for entry in self.account_code_entries]
        out["legs"] = [leg.to_json_dict() for leg in self.legs]
        return out


CDR_FIELDS: Final[tuple[str, ...]] = tuple(field.name for field in fields(Cdr))
_all_fields = attrgetter(*CDR_FIELDS)
_content = attrgetter(*(name for name in CDR_FIELDS if name != "version"))


def _iso_or_none(ms: Millis | None) -> str | None:
    return None if ms is None else format_iso(ms)
