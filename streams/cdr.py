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


@dataclass(init=False)
class CodeEntry:
    """One account-code entry: complete or not, pre-dial or on a second line."""

    code: Final[str | None]
    complete: Final[bool]
    via: Final[Via]
    entry_call_id: Final[str]
    entered_at: Final[Millis]

    def __init__(
        self,
        code: str | None, complete: bool, via: Via, entry_call_id: str, entered_at: Millis,
    ) -> None:
        self.code = code
        self.complete = complete
        self.via = via
        self.entry_call_id = entry_call_id
        self.entered_at = entered_at

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "code": self.code, "complete": self.complete, "via": self.via,
            "entry_call_id": self.entry_call_id, "entered_at": format_iso(self.entered_at),
        }

    def __eq__(self, other: object) -> bool:
        # spelled out: a dataclass's generated __eq__ stays interpreted in the compiled core
        if not isinstance(other, CodeEntry):
            return NotImplemented
        return (
            self.entered_at == other.entered_at and self.entry_call_id == other.entry_call_id
            and self.code == other.code and self.complete == other.complete
            and self.via == other.via
        )

    def __hash__(self) -> int:
        return hash((self.code, self.complete, self.via, self.entry_call_id, self.entered_at))

    def __reduce__(self) -> tuple[type[CodeEntry], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return CodeEntry, (self.code, self.complete, self.via, self.entry_call_id, self.entered_at)


@dataclass(init=False)
class LegSummary:
    """A Simultaneous Ring leg folded into its call."""

    call_id: Final[str]
    called_number: Final[str | None]
    answered: Final[bool]
    answer_time: Final[Millis | None]
    release_time: Final[Millis | None]

    def __init__(
        self,
        call_id: str, called_number: str | None, answered: bool, answer_time: Millis | None,
        release_time: Millis | None,
    ) -> None:
        self.call_id = call_id
        self.called_number = called_number
        self.answered = answered
        self.answer_time = answer_time
        self.release_time = release_time

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id, "called_number": self.called_number,
            "answered": self.answered, "answer_time": _iso_or_none(self.answer_time),
            "release_time": _iso_or_none(self.release_time),
        }

    def __eq__(self, other: object) -> bool:
        # spelled out: a dataclass's generated __eq__ stays interpreted in the compiled core
        if not isinstance(other, LegSummary):
            return NotImplemented
        return (
            self.call_id == other.call_id and self.release_time == other.release_time
            and self.answer_time == other.answer_time and self.answered == other.answered
            and self.called_number == other.called_number
        )

    def __hash__(self) -> int:
        return hash(
            (self.call_id, self.called_number, self.answered, self.answer_time, self.release_time)
        )

    def __reduce__(self) -> tuple[type[LegSummary], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return LegSummary, (self.call_id, self.called_number, self.answered, self.answer_time,
                            self.release_time)


@dataclass(init=False, unsafe_hash=True)
class Cdr:
    """One version of one call detail record. Field order is the CSV column order."""

    cdr_id: Final[str]
    version: Final[int]
    record_type: Final[RecordType]
    switch_id: Final[str]
    user_id: Final[str]
    group_id: Final[str]
    call_id: Final[str]
    network_call_id: Final[str | None]
    direction: Final[str]
    calling_number: Final[str | None]
    called_number: Final[str | None]
    call_category: Final[str | None]
    start_time: Final[Millis]
    answer_time: Final[Millis | None]
    release_time: Final[Millis]
    answered: Final[bool]
    duration_ms: Final[int]
    talk_ms: Final[int]
    hold_ms: Final[int]
    cause: Final[str]
    releasing_party: Final[str | None]
    account_code: Final[str | None]
    account_code_status: Final[str]
    account_code_required: Final[bool]
    account_code_entries: Final[tuple[CodeEntry, ...]]
    client_name: Final[str | None]
    code_known: Final[bool | None]
    applied_to_cdr_id: Final[str | None]
    legs: Final[tuple[LegSummary, ...]]
    user_timezone: Final[str]
    local_date: Final[str]
    billable: Final[bool]

    def __init__(  # noqa: PLR0917 (a record, built positionally as before)
        self,
        cdr_id: str, version: int, record_type: RecordType, switch_id: str, user_id: str,
        group_id: str, call_id: str, network_call_id: str | None, direction: str,
        calling_number: str | None, called_number: str | None, call_category: str | None,
        start_time: Millis, answer_time: Millis | None, release_time: Millis, answered: bool,
        duration_ms: int, talk_ms: int, hold_ms: int, cause: str, releasing_party: str | None,
        account_code: str | None, account_code_status: str, account_code_required: bool,
        account_code_entries: tuple[CodeEntry, ...], client_name: str | None,
        code_known: bool | None, applied_to_cdr_id: str | None, legs: tuple[LegSummary, ...],
        user_timezone: str, local_date: str, billable: bool,
    ) -> None:
        self.cdr_id = cdr_id
        self.version = version
        self.record_type = record_type
        self.switch_id = switch_id
        self.user_id = user_id
        self.group_id = group_id
        self.call_id = call_id
        self.network_call_id = network_call_id
        self.direction = direction
        self.calling_number = calling_number
        self.called_number = called_number
        self.call_category = call_category
        self.start_time = start_time
        self.answer_time = answer_time
        self.release_time = release_time
        self.answered = answered
        self.duration_ms = duration_ms
        self.talk_ms = talk_ms
        self.hold_ms = hold_ms
        self.cause = cause
        self.releasing_party = releasing_party
        self.account_code = account_code
        self.account_code_status = account_code_status
        self.account_code_required = account_code_required
        self.account_code_entries = account_code_entries
        self.client_name = client_name
        self.code_known = code_known
        self.applied_to_cdr_id = applied_to_cdr_id
        self.legs = legs
        self.user_timezone = user_timezone
        self.local_date = local_date
        self.billable = billable

    def __reduce__(self) -> tuple[type[Cdr], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return Cdr, _all_fields(self)

    def same_content(self, other: Cdr) -> bool:
        """Equal in everything but the version number."""
        return _content(self) == _content(other)

    def to_json_dict(self) -> dict[str, Any]:
        # spelled out (in CDR_FIELDS order, which a test checks): the hot path of file mode
        return {
            "cdr_id": self.cdr_id, "version": self.version, "record_type": self.record_type,
            "switch_id": self.switch_id, "user_id": self.user_id, "group_id": self.group_id,
            "call_id": self.call_id, "network_call_id": self.network_call_id,
            "direction": self.direction, "calling_number": self.calling_number,
            "called_number": self.called_number, "call_category": self.call_category,
            "start_time": format_iso(self.start_time),
            "answer_time": _iso_or_none(self.answer_time),
            "release_time": format_iso(self.release_time),
            "answered": self.answered, "duration_ms": self.duration_ms,
            "talk_ms": self.talk_ms, "hold_ms": self.hold_ms, "cause": self.cause,
            "releasing_party": self.releasing_party, "account_code": self.account_code,
            "account_code_status": self.account_code_status,
            "account_code_required": self.account_code_required,
            "account_code_entries": [entry.to_json_dict() for entry in self.account_code_entries],
            "client_name": self.client_name, "code_known": self.code_known,
            "applied_to_cdr_id": self.applied_to_cdr_id,
            "legs": [leg.to_json_dict() for leg in self.legs],
            "user_timezone": self.user_timezone, "local_date": self.local_date,
            "billable": self.billable,
        }


CDR_FIELDS: Final[tuple[str, ...]] = tuple(field.name for field in fields(Cdr))
_all_fields = attrgetter(*CDR_FIELDS)
_content = attrgetter(*(name for name in CDR_FIELDS if name != "version"))


def _iso_or_none(ms: Millis | None) -> str | None:
    return None if ms is None else format_iso(ms)
