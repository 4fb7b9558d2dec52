"""The billing report over a CDR set: pure computation, no I/O.

`build_report` takes CDR versions (any number per `cdr_id`), keeps the latest version of
each (SPEC section 5), optionally filters by `local_date` and `group_id`, and computes three
sections as frozen values; `streams.commands.report` renders them as a terminal table and
CSV files, and `streams.charts` draws the billable hours per client.

1. Billing: per group and account code, the calls billed to that code.

   - Counted: records with `record_type == "call"` and `billable` (answered calls).
     `code_entry` records and unanswered calls are never billed.
   - Billed time of a call: its whole connected time, answer to release, that is
     `talk_ms + hold_ms`. A law firm bills the client for the time the line was
     connected to the matter, including time on hold (the attorney is still engaged on
     the call, and putting the caller on hold to key an account code on a second line,
     SPEC rule C2, must not reduce the bill). Ringing time before the answer is not billed.
   - Rounding: each call separately is rounded UP to a whole number of billing
     increments (`[report] billing_increment_minutes`, default 6 minutes = 0.1 hour,
     the common legal convention): 6:00 bills one increment, 6:00.001 bills two, and a
     call of zero connected time bills nothing. Summing first and rounding once would
     under-bill, and is not what time-keeping rules do.
   - Minimum: a call whose connected time is shorter than
     `[report] minimum_billable_seconds` (default 0) bills nothing; it is still counted
     in `calls` and also in `unbilled_calls`.
   - Client name: from the registry passed in (the report's configuration,
     `[client_codes.GROUP]`), else the name written on the CDRs when they were made,
     else "(unknown code)", or "(no registry)" where the group has no registry at all;
     calls with no code are "(no code)".

2. Compliance: per group and user, the `call` records (answered or not) whose
   `account_code_required` is true, how many ended `present` and how many `missing`,
   and the missing percentage. Users with no such call are left out.

3. Unknown codes: per group and code, the `call` records (answered or not) that carry
   a code that the group's registry did not know (`code_known` is false), and the users
   who keyed it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from streams.cdr import CALL, MISSING, PRESENT, Cdr
from streams.serialization import latest_versions

MS_PER_MINUTE: Final = 60_000
MS_PER_HOUR: Final = 3_600_000
NO_CODE: Final = "(none)"
NO_CODE_CLIENT: Final = "(no code)"
UNKNOWN_CLIENT: Final = "(unknown code)"
NO_REGISTRY_CLIENT: Final = "(no registry)"

Registry = Mapping[str, Mapping[str, str]]
"""group_id -> account code -> client/matter name (`[client_codes.GROUP]`)."""


@dataclass(frozen=True, slots=True)
class BillingPolicy:
    """How call time turns into billed time: increment and minimum, in milliseconds."""

    increment_ms: int
    minimum_ms: int = 0

    def __post_init__(self) -> None:
        if self.increment_ms <= 0:
            raise ValueError(f"billing increment must be positive, not {self.increment_ms} ms")
        if self.minimum_ms < 0:
            raise ValueError(f"minimum billable time must not be negative ({self.minimum_ms} ms)")

    @classmethod
    def from_settings(cls, increment_minutes: float, minimum_seconds: float = 0) -> BillingPolicy:
        """From `billing_increment_minutes` and `minimum_billable_seconds`."""
        return cls(round(increment_minutes * MS_PER_MINUTE), round(minimum_seconds * 1000))

    @property
    def increment_minutes(self) -> Decimal:
        return Decimal(self.increment_ms) / MS_PER_MINUTE


@dataclass(frozen=True, slots=True)
class BillingRow:
    """Billable calls of one group to one account code (None: calls with no code)."""

    group_id: str
    account_code: str | None
    client_name: str
    calls: int
    unbilled_calls: int
    talk_ms: int
    hold_ms: int
    billed_increments: int
    increment_ms: int

    @property
    def code_label(self) -> str:
        return NO_CODE if self.account_code is None else self.account_code

    @property
    def connected_ms(self) -> int:
        """Actual time, answer to release: talk plus hold."""
        return self.talk_ms + self.hold_ms

    @property
    def billed_ms(self) -> int:
        return self.billed_increments * self.increment_ms

    @property
    def billed_hours(self) -> Decimal:
        return hours(self.billed_ms)


@dataclass(frozen=True, slots=True)
class ComplianceRow:
    """One user's calls that required an account code, and how many got none."""

    group_id: str
    user_id: str
    required_calls: int
    present: int
    missing: int

    @property
    def missing_percent(self) -> Decimal:
        """Missing as a percentage of required calls, to one decimal place."""
        if self.required_calls == 0:
            return Decimal("0.0")
        return (Decimal(100 * self.missing) / self.required_calls).quantize(Decimal("0.1"))


@dataclass(frozen=True, slots=True)
class UnknownCodeRow:
    """A code that the group's registry does not know, and who keyed it."""

    group_id: str
    account_code: str
    calls: int
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Report:
    """The three sections, for the selected CDRs (latest versions only).

    `records` counts the selected CDRs (every record type); `dates` are their local dates."""

    date: str | None
    group: str | None
    policy: BillingPolicy
    records: int
    dates: tuple[str, ...]
    billing: tuple[BillingRow, ...]
    compliance: tuple[ComplianceRow, ...]
    unknown_codes: tuple[UnknownCodeRow, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """Groups with a billing row, sorted."""
        return tuple(sorted({row.group_id for row in self.billing}))


def hours(ms: int) -> Decimal:
    """Milliseconds as (exact, up to 28 significant digits) decimal hours."""
    return Decimal(ms) / MS_PER_HOUR


def format_hours(value: Decimal, places: int = 2) -> str:
    """Hours as text, rounded half up to `places`, trailing zeros dropped but one decimal
    kept: 1.3, 0.25, 2.0."""
    text = f"{value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP):f}"
    if "." in text:
        text = text.rstrip("0")
    return text + "0" if text.endswith(".") else text


def latest(cdrs: Iterable[Cdr]) -> list[Cdr]:
    """The latest version of each cdr_id, in cdr_id order."""
    newest = latest_versions(cdrs)
    return [newest[key] for key in sorted(newest)]


def select(cdrs: Iterable[Cdr], date: str | None = None, group: str | None = None) -> list[Cdr]:
    """CDRs of that local date and group (None: any)."""
    return [
        cdr for cdr in cdrs
        if (date is None or cdr.local_date == date) and (group is None or cdr.group_id == group)
    ]


def connected_ms(cdr: Cdr) -> int:
    """The billed time base of a call: answer to release (talk plus hold)."""
    return cdr.talk_ms + cdr.hold_ms


def billed_increments(duration_ms: int, policy: BillingPolicy) -> int:
    """Increments billed for one call of that connected time: rounded up, none under the
    minimum, none for zero."""
    if duration_ms <= 0 or duration_ms < policy.minimum_ms:
        return 0
    return -(-duration_ms // policy.increment_ms)


def is_billable_call(cdr: Cdr) -> bool:
    return cdr.record_type == CALL and cdr.billable


def client_label(
    group_id: str, code: str | None, registry: Registry, recorded: Iterable[str | None] = ()
) -> str:
    """The client/matter name of a code: registry, else a name recorded on the CDRs, else
    "(unknown code)", or "(no registry)" where the group has no registry at all."""
    if code is None:
        return NO_CODE_CLIENT
    names = registry.get(group_id)
    if names is not None and code in names:
        return names[code]
    recorded_names = sorted({item for item in recorded if item})
    if recorded_names:
        return recorded_names[0]
    return UNKNOWN_CLIENT if names is not None else NO_REGISTRY_CLIENT


def billing_rows(
    cdrs: Iterable[Cdr], policy: BillingPolicy, registry: Registry
) -> tuple[BillingRow, ...]:
    """Section 1: per group and account code."""
    buckets: dict[tuple[str, str | None], list[Cdr]] = defaultdict(list)
    for cdr in cdrs:
        if is_billable_call(cdr):
            buckets[(cdr.group_id, cdr.account_code)].append(cdr)
    rows = []
    for (group_id, code), calls in buckets.items():
        increments = [billed_increments(connected_ms(cdr), policy) for cdr in calls]
        rows.append(BillingRow(
            group_id=group_id,
            account_code=code,
            client_name=client_label(group_id, code, registry, (c.client_name for c in calls)),
            calls=len(calls),
            unbilled_calls=sum(1 for count in increments if count == 0),
            talk_ms=sum(cdr.talk_ms for cdr in calls),
            hold_ms=sum(cdr.hold_ms for cdr in calls),
            billed_increments=sum(increments),
            increment_ms=policy.increment_ms,
        ))
    return tuple(sorted(rows, key=_billing_order))


def _billing_order(row: BillingRow) -> tuple[str, bool, str]:
    return (row.group_id, row.account_code is None, row.account_code or "")


def compliance_rows(cdrs: Iterable[Cdr]) -> tuple[ComplianceRow, ...]:
    """Section 2: per group and user, the calls that required a code."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for cdr in cdrs:
        if cdr.record_type != CALL or not cdr.account_code_required:
            continue
        tally = counts[(cdr.group_id, cdr.user_id)]
        tally[0] += 1
        tally[1] += cdr.account_code_status == PRESENT
        tally[2] += cdr.account_code_status == MISSING
    return tuple(
        ComplianceRow(group_id, user_id, required, present, missing)
        for (group_id, user_id), (required, present, missing) in sorted(counts.items())
    )


def unknown_code_rows(cdrs: Iterable[Cdr]) -> tuple[UnknownCodeRow, ...]:
    """Section 3: per group and code, calls with a code the registry did not know."""
    calls: dict[tuple[str, str], int] = defaultdict(int)
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    for cdr in cdrs:
        if cdr.record_type != CALL or cdr.code_known is not False or cdr.account_code is None:
            continue
        key = (cdr.group_id, cdr.account_code)
        calls[key] += 1
        users[key].add(cdr.user_id)
    return tuple(
        UnknownCodeRow(group_id, code, count, tuple(sorted(users[(group_id, code)])))
        for (group_id, code), count in sorted(calls.items())
    )


def build_report(
    cdrs: Iterable[Cdr],
    policy: BillingPolicy,
    registry: Registry | None = None,
    date: str | None = None,
    group: str | None = None,
) -> Report:
    """The report over the latest version of each CDR, filtered by local date and group."""
    chosen = select(latest(cdrs), date, group)
    return Report(
        date=date,
        group=group,
        policy=policy,
        records=len(chosen),
        dates=tuple(sorted({cdr.local_date for cdr in chosen})),
        billing=billing_rows(chosen, policy, registry or {}),
        compliance=compliance_rows(chosen),
        unknown_codes=unknown_code_rows(chosen),
    )
