"""Building a CDR from the facts of a call's legs and the entries that go to it."""

from __future__ import annotations

from collections.abc import Sequence

from streams import cdr as c
from streams.cdr import Cdr, CodeEntry, LegSummary
from streams.dialing import EntryAttempt
from streams.events import LegKey
from streams.legs import Hold, LegFacts
from streams.settings import Settings
from streams.timefmt import Millis, local_date_text, zone


def code_entry(attempt: EntryAttempt, via: c.Via, leg: LegFacts) -> CodeEntry:
    keyed = attempt.code if attempt.complete else (attempt.keyed or None)
    return CodeEntry(keyed, attempt.complete, via, leg.key.call_id, attempt.entered_at)


def latest_code(entries: Sequence[CodeEntry]) -> str | None:
    """Rule C3: the complete entry with the latest entry time (entries are in time order)."""
    for entry in reversed(entries):
        if entry.complete:
            return entry.code
    return None


def code_required(settings: Settings, root: LegFacts) -> bool:
    """Rule C6."""
    if root.direction != "outbound":
        return False
    policy = settings.policy(root.group_id)
    category = None if root.dialed is None else root.dialed.call_category
    return (
        policy.usage == "mandatory"
        and root.user_id not in policy.exempt_users
        and category not in policy.allow_without_code
        and category != "emergency"
    )


def registry_lookup(
    settings: Settings, group_id: str, code: str | None
) -> tuple[str | None, bool | None]:
    """(client_name, code_known) for a code under the group's registry."""
    registry = settings.client_codes.get(group_id)
    if registry is None or code is None:
        return None, None
    return registry.get(code), code in registry


def _timezone(settings: Settings, leg: LegFacts) -> str:
    wanted = None if leg.started is None else leg.started.user_timezone
    return wanted if wanted and zone(wanted) is not None else settings.default_timezone


def _held_ms(holds: Sequence[Hold], window_start: Millis, window_end: Millis) -> int:
    """Length of the union of hold intervals, clipped to the window."""
    spans = sorted(
        (max(hold.start, window_start),
         window_end if hold.end is None else min(hold.end, window_end))
        for hold in holds
    )
    total, reach = 0, window_start
    for start, end in spans:
        begin = max(start, reach)
        if end > begin:
            total += end - begin
            reach = end
    return total


def _called_number(leg: LegFacts) -> str | None:
    if leg.dialed is not None:
        return leg.dialed.called_number
    return None if leg.started is None else leg.started.called_number


def _answer_order(leg: LegFacts) -> tuple[Millis, LegKey]:
    assert leg.answer_ts is not None
    return leg.answer_ts, leg.key


def _start_order(leg: LegFacts) -> tuple[Millis, LegKey]:
    return leg.start_ts, leg.key


def build_call_cdr(
    settings: Settings,
    root: LegFacts,
    ring_legs: Sequence[LegFacts],
    entries: Sequence[CodeEntry],
    version: int,
) -> Cdr:
    """The CDR of a call: its first leg `root`, its Simultaneous Ring legs, its entries.

    Every leg must be released and the root must have its call_started.
    """
    assert root.started is not None and root.release is not None
    legs = (root, *ring_legs)
    if ring_legs:
        answers = [leg for leg in legs if leg.answer_ts is not None]
        first_answer = min(answers, key=_answer_order) if answers else None
        release_time = max(leg.release_ts or root.start_ts for leg in legs)
    else:  # the common case, the same outcome
        first_answer = root if root.answer_ts is not None else None
        release_time = root.release_ts or root.start_ts
    start_time = root.start_ts
    answer_time = None if first_answer is None else first_answer.answer_ts
    release = (first_answer or root).release
    assert release is not None
    if answer_time is not None:
        hold_ms = _held_ms([hold for leg in legs for hold in leg.holds], answer_time, release_time)
        talk_ms = max(release_time - answer_time, 0) - hold_ms
    else:
        hold_ms = talk_ms = 0
    code = latest_code(entries)
    required = code_required(settings, root)
    status = c.PRESENT if code is not None else (c.MISSING if required else c.NOT_REQUIRED)
    client_name, code_known = registry_lookup(settings, root.group_id, code)
    tz = _timezone(settings, root)
    started = root.started
    return Cdr(
        cdr_id=root.key.cdr_id, version=version, record_type=c.CALL,
        switch_id=root.key.switch_id, user_id=root.user_id, group_id=root.group_id,
        call_id=root.key.call_id, network_call_id=started.network_call_id,
        direction=started.direction or "", calling_number=started.calling_number,
        called_number=_called_number(root),
        call_category=None if root.dialed is None else root.dialed.call_category,
        start_time=start_time, answer_time=answer_time, release_time=release_time,
        answered=answer_time is not None, duration_ms=max(release_time - start_time, 0),
        talk_ms=talk_ms, hold_ms=hold_ms,
        cause=release.cause or "", releasing_party=release.releasing_party,
        account_code=code, account_code_status=status, account_code_required=required,
        account_code_entries=tuple(entries), client_name=client_name, code_known=code_known,
        applied_to_cdr_id=None,
        legs=tuple(
            LegSummary(
                leg.key.call_id, _called_number(leg), leg.answer_ts is not None,
                leg.answer_ts, leg.release_ts,
            )
            for leg in sorted(ring_legs, key=_start_order)
        ) if ring_legs else (),
        user_timezone=tz, local_date=local_date_text(start_time, tz),
        billable=answer_time is not None,
    )


def build_code_entry_cdr(
    settings: Settings, leg: LegFacts, applied_to: str | None, version: int
) -> Cdr:
    """The `code_entry` record of a code-entry leg (rule C2), applied or orphan (C4)."""
    assert leg.started is not None and leg.release is not None and leg.entry is not None
    attempt = leg.entry
    if not attempt.complete:
        status = c.INCOMPLETE
    else:
        status = c.APPLIED if applied_to is not None else c.ORPHAN
    client_name, code_known = registry_lookup(settings, leg.group_id, attempt.code)
    tz = _timezone(settings, leg)
    started, release = leg.started, leg.release
    return Cdr(
        cdr_id=leg.key.cdr_id, version=version, record_type=c.CODE_ENTRY,
        switch_id=leg.key.switch_id, user_id=leg.user_id, group_id=leg.group_id,
        call_id=leg.key.call_id, network_call_id=started.network_call_id,
        direction=started.direction or "", calling_number=started.calling_number,
        called_number=started.called_number, call_category=None,
        start_time=leg.start_ts, answer_time=None, release_time=release.ts, answered=False,
        duration_ms=max(release.ts - leg.start_ts, 0), talk_ms=0, hold_ms=0,
        cause=release.cause or "", releasing_party=release.releasing_party,
        account_code=attempt.code, account_code_status=status, account_code_required=False,
        account_code_entries=(code_entry(attempt, "second_line", leg),),
        client_name=client_name, code_known=code_known, applied_to_cdr_id=applied_to, legs=(),
        user_timezone=tz, local_date=local_date_text(leg.start_ts, tz), billable=False,
    )
