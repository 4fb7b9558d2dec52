"""Explain one CDR: the events that built it, and each decision the engine took.

The CDR's user is found from the events of its first leg (the cdr_id is
`{switch_id}:{call_id}`). Then the user's partition is replayed as a replay does, but
with an engine that holds that user alone: the user's events are fed to it, and every
other event only moves its event time forward (`Engine.advance`), which is all that
another user's event does to this user in the partition's engine. So the versions seen
here are exactly those of a replay, and of the worker where it read the same order.

The decisions are read with the engine's own pure functions (`leg_facts`, `view_user`,
`held_call`, `corrected_call`, `target_of`, `code_required`, `parse_entry`,
`latest_code`, `registry_lookup`) from the user's legs as they were when the final
version was issued; nothing here restates a rule.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TypeVar

from streams import cdr as c
from streams import events as ev
from streams.cdr import CDR_FIELDS, Cdr
from streams.cdr_builder import code_required, latest_code, registry_lookup
from streams.correlation import Call, UserView, corrected_call, held_call, target_of, view_user
from streams.deadletter import DeadLetter, Origin
from streams.dialing import Keyed, parse_entry
from streams.engine import Engine
from streams.errors import AuditError
from streams.events import Event, LegKey
from streams.legs import Leg, LegFacts, leg_facts, split_rejected
from streams.progress import Progress
from streams.replay import (
    EventDecoder,
    PartitionTask,
    ReplaySource,
    partition_items,
    plan_replay,
    raw_records,
)
from streams.serialization import read_events
from streams.settings import Settings
from streams.timefmt import Millis, format_iso

T = TypeVar("T")
END_OF_INPUT = "the end of the replayed events (like file mode, a replay issues what is still open)"


# ---------------------------------------------------------------- finding the user


def _leg_of(cdr_id: str) -> tuple[str, str]:
    switch_id, sep, call_id = cdr_id.rpartition(":")
    if not sep or not switch_id or not call_id:
        raise AuditError(f"not a cdr_id: {cdr_id!r} (expected SWITCH:CALL_ID)")
    return switch_id, call_id


def _matches(event: Event, cdr_id: str) -> bool:
    return event.leg.cdr_id == cdr_id


def find_user(
    settings: Settings, source: ReplaySource, cdr_id: str, progress: bool | None = None
) -> tuple[str, int | None]:
    """(user_id, partition) of the leg `cdr_id`; partition None for event files."""
    _switch, call_id = _leg_of(cdr_id)
    if source.inputs:
        for path in source.inputs:
            for item, _origin in read_events(path):
                if isinstance(item, Event) and _matches(item, cdr_id):
                    return item.user_id, None
        raise AuditError(f"no event of leg {cdr_id} in {', '.join(source.inputs)}")
    needle = call_id.encode()
    decode = EventDecoder().decode
    plan = plan_replay(settings, source)
    with Progress("finding the call", plan.estimated_records, enabled=progress) as bar:
        for record in _counted(chain.from_iterable(raw_records(t) for t in plan.tasks), bar):
            event = record.event
            if event is None:
                if record.value is None or needle not in record.value:
                    continue  # decode only what can be this leg's
                item = decode(record.value, Origin(record.topic, record.partition, record.offset))
                if not isinstance(item, Event):
                    continue
                event = item
            if _matches(event, cdr_id):
                return event.user_id, record.partition
    raise AuditError(f"no event of leg {cdr_id} in {source.describe()}")


# ---------------------------------------------------------------- following the user


@dataclass(slots=True)
class Seen:
    """One of the user's events as the replay read it."""

    index: int  # position among the user's events
    event: Event
    origin: Origin | None
    dead_letter: str | None = None  # why it went to the dead letters, where it did


@dataclass(slots=True)
class Issue:
    """One version of the explained CDR and what made the engine issue it."""

    cdr: Cdr
    watermark: Millis | None
    trigger: str
    seen_count: int  # how many of the user's events had been fed


@dataclass(slots=True)
class Trace:
    user_id: str
    partition: int | None
    seen: list[Seen] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    other_cdrs: dict[str, Cdr] = field(default_factory=dict)  # the user's other CDRs, latest


def _counted(items: Iterable[T], bar: Progress) -> Iterator[T]:
    for number, item in enumerate(items, 1):
        if number % 8192 == 0:
            bar.update(number)
        yield item


def _items(settings: Settings, source: ReplaySource, partition: int | None,
           progress: bool | None) -> Iterator[tuple[Event | DeadLetter, Origin | None, str]]:
    if partition is None:
        for path in source.inputs:
            for item, origin in read_events(path):
                yield item, origin, f"{origin.source} line {origin.offset}"
        return
    plan = plan_replay(settings, source)
    task: PartitionTask = plan.tasks[partition]
    with Progress(f"partition {partition}", task.estimated_records, enabled=progress) as bar:
        for _record, item, origin in _counted(partition_items(task), bar):
            yield item, origin, describe_origin(origin)


def follow_user(
    settings: Settings, source: ReplaySource, cdr_id: str, user_id: str, partition: int | None,
    *, progress: bool | None = None,
) -> Trace:
    """Replay the user's partition with an engine of that user alone (see module doc)."""
    trace = Trace(user_id, partition)
    engine = Engine(settings)

    def record(outputs: Iterable[Cdr | DeadLetter], trigger: str) -> None:
        for output in outputs:
            if isinstance(output, DeadLetter):
                for seen in reversed(trace.seen):
                    if seen.event.event_id == output.event_id and seen.origin == output.origin:
                        seen.dead_letter = output.reason
                        break
            elif output.cdr_id == cdr_id:
                trace.issues.append(Issue(output, engine.watermark, trigger, len(trace.seen)))
            else:
                trace.other_cdrs[output.cdr_id] = output

    for item, origin, where in _items(settings, source, partition, progress):
        if not isinstance(item, Event):
            continue
        if item.user_id == user_id:
            trace.seen.append(Seen(len(trace.seen), item, origin))
            record(
                engine.feed(item, origin),
                f"event time reaching {format_iso(max(engine.watermark or 0, item.ts))} "
                f"(the user's event {_event_label(item)} at {where})",
            )
        elif engine.watermark is None or item.ts > engine.watermark:
            record(
                engine.advance(item.ts),
                f"event time reaching {format_iso(item.ts)} (another user's event at {where})",
            )
    record(engine.finish(), END_OF_INPUT)
    return trace


# ---------------------------------------------------------------- decisions


@dataclass(slots=True)
class Decision:
    topic: str  # what was decided, e.g. "account code"
    rule: str  # the SPEC rule, e.g. "C3"
    text: str

    def to_json_dict(self) -> dict[str, str]:
        return {"decision": self.topic, "rule": self.rule, "why": self.text}


@dataclass(slots=True)
class Change:
    version: int
    trigger: str
    watermark: str | None
    fields: list[tuple[str, Any, Any]]  # (field, before, after)
    events_since: list[Seen]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "issued_when": self.trigger,
            "event_time": self.watermark,
            "changed": [{"field": f, "before": b, "after": a} for f, b, a in self.fields],
            "events_since_previous_version": [_seen_json(s) for s in self.events_since],
        }


@dataclass(slots=True)
class Explanation:
    cdr_id: str
    user_id: str
    partition: int | None
    cdr: Cdr
    events: list[tuple[Seen, str]]  # with the role of the event's leg
    decisions: list[Decision]
    versions: list[Change]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "cdr_id": self.cdr_id,
            "user_id": self.user_id,
            "partition": self.partition,
            "cdr": self.cdr.to_json_dict(),
            "events": [_seen_json(seen) | {"leg_role": role} for seen, role in self.events],
            "decisions": [d.to_json_dict() for d in self.decisions],
            "versions": [v.to_json_dict() for v in self.versions],
        }

    def render(self) -> str:
        out = io.StringIO()
        cdr = self.cdr
        out.write(f"CDR {cdr.cdr_id} version {cdr.version}: {cdr.record_type} of {cdr.user_id} "
                  f"(group {cdr.group_id}), {cdr.direction}, "
                  f"started {format_iso(cdr.start_time)}\n")
        out.write(f"  account code {cdr.account_code or '-'} [{cdr.account_code_status}]"
                  + (f" {cdr.client_name}" if cdr.client_name else "")
                  + (f", applied to {cdr.applied_to_cdr_id}" if cdr.applied_to_cdr_id else "")
                  + "\n")
        where = "event files" if self.partition is None else f"partition {self.partition}"
        out.write(f"\nEvents that built it ({len(self.events)}, in replay order, from {where}):\n")
        for seen, role in self.events:
            note = f"  -> dead letter: {seen.dead_letter}" if seen.dead_letter else ""
            out.write(f"  {describe_origin(seen.origin):<34} {format_iso(seen.event.ts)}  "
                      f"{role:<18} {_event_label(seen.event)}{note}\n")
        out.write("\nDecisions:\n")
        for decision in self.decisions:
            out.write(f"  [{decision.rule}] {decision.topic}: {decision.text}\n")
        out.write("\nVersions:\n")
        for change in self.versions:
            out.write(f"  v{change.version}: issued on {change.trigger}\n")
            if change.version == 1:
                out.write("      first version: the call was final (all legs released, "
                          "settle_seconds of event time passed)\n")
            for name, before, after in change.fields:
                out.write(f"      {name}: {_short(before)} -> {_short(after)}\n")
            if change.version > 1 and not change.fields:
                out.write("      (no field changed)\n")
            if change.version > 1:
                if change.events_since:
                    out.write("      events of this CDR since the previous version:\n")
                    for seen in change.events_since:
                        where = describe_origin(seen.origin)
                        out.write(f"        {where} {_event_label(seen.event)}\n")
                else:
                    out.write("      no event of this CDR's legs arrived since the previous "
                              "version (event time made a decision final)\n")
        return out.getvalue()


def describe_origin(origin: Origin | None) -> str:
    if origin is None:
        return "-"
    if origin.partition is None:
        return f"{origin.source}:{origin.offset}"
    return f"{origin.source}[{origin.partition}]@{origin.offset}"


def _seen_json(seen: Seen) -> dict[str, Any]:
    return {
        "origin": None if seen.origin is None else seen.origin.to_json_dict(),
        "event": seen.event.to_json_dict(),
        "dead_letter": seen.dead_letter,
    }


def _short(value: Any, width: int = 70) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _event_label(event: Event) -> str:
    kind = event.type
    base = f"{event.call_id} #{event.seq} {kind}"
    if kind == ev.CALL_STARTED:
        extra = f" {event.direction} {event.calling_number or '?'} -> {event.called_number or '?'}"
        if event.related_call_id:
            extra += f" ({event.related_reason} of {event.related_call_id})"
        return base + extra
    if kind == ev.CALL_DIALED:
        return base + f" {event.called_number} ({event.call_category})"
    if kind == ev.CALL_RELEASED:
        return base + f" {event.cause} by {event.releasing_party or '?'}"
    if kind == ev.DTMF:
        return base + f" '{event.digit}'"
    return base


def _legs_until(trace: Trace, count: int) -> dict[LegKey, Leg]:
    """The user's legs from their first `count` events, without those the engine sent to
    the dead letters (late for a leg already final)."""
    legs: dict[LegKey, Leg] = {}
    for seen in trace.seen[:count]:
        if seen.dead_letter and seen.dead_letter.startswith("late"):
            continue
        leg = legs.get(seen.event.leg)
        if leg is None:
            legs[seen.event.leg] = Leg(seen.event.leg, (seen.event,), (seen.origin,))
        elif not leg.has_event(seen.event):
            legs[seen.event.leg] = leg.with_event(seen.event, seen.origin)
    return legs


def _facts(settings: Settings, legs: dict[LegKey, Leg], watermark: Millis, final: bool
           ) -> dict[LegKey, LegFacts]:
    """The facts of each leg as the engine reads them; `legs` are replaced by the legs
    without the events that break the contract (as the engine drops them)."""
    facts = {}
    for key, raw in list(legs.items()):
        leg, _rejected = split_rejected(raw)
        legs[key] = leg
        read = leg_facts(leg, settings)
        if read.release is None and (final or read.start_ts + settings.max_call_ms <= watermark):
            read = leg_facts(leg.closed_now(), settings)  # closed, rule C8
        facts[key] = read
    return facts


def _dialing_digits(leg: Leg) -> tuple[list[Keyed], list[Event]]:
    """(dialing digits, in-call digits) of a leg, by seq (SPEC section 3, "Dialing
    digits"; the same split as `leg_facts`, kept here only to show it)."""
    dialing, in_call = [], []
    before = True
    for event in sorted(leg.events, key=lambda e: e.seq):
        if event.type == ev.DTMF:
            if before:
                dialing.append(Keyed(event.digit or "", event.ts))
            else:
                in_call.append(event)
        elif event.type in (ev.CALL_DIALED, ev.CALL_ANSWERED, ev.CALL_RELEASED):
            before = False
    return dialing, in_call


def _entry_text(settings: Settings, leg: Leg, facts: LegFacts) -> str:
    digits, in_call = _dialing_digits(leg)
    keyed = "".join(d.digit for d in digits) or "none"
    fac = settings.feature_access_code
    policy = settings.policy(facts.group_id)
    text = f"leg {leg.key.cdr_id}: dialing digits {keyed}"
    if facts.direction == "inbound":
        text += " (an inbound leg has no dialing digits)"
    attempt = facts.entry
    check = (
        parse_entry(digits, fac, policy.code_digits, settings.digit_timeout_ms)
        if facts.direction != "inbound" else None
    )
    if attempt is None:
        text += f"; they do not begin with the feature access code {fac}, so no entry"
    else:
        if check != attempt:  # the digits shown are not those the engine read: say so
            text += " (as listed here; the engine read the entry below from them)"
        if attempt.complete:
            text += (f"; {fac} then {policy.code_digits} code digits: code {attempt.code}, "
                     f"entered at {format_iso(attempt.entered_at)}")
        else:
            text += (f"; {fac} then only {len(attempt.keyed)} of {policy.code_digits} code "
                     f"digits ({attempt.keyed or 'none'}): incomplete, "
                     f"{_why_incomplete(digits, fac, attempt.keyed, settings.digit_timeout_ms)}; "
                     "recorded, sets no code")
    if in_call:
        text += (f"; {len(in_call)} digit(s) after the dial or answer "
                 f"({''.join(e.digit or '' for e in in_call)}) are in-call digits (menus, PINs), "
                 "never account codes")
    return text


def _why_incomplete(digits: Sequence[Keyed], fac: str, keyed: str, timeout_ms: Millis) -> str:
    position = len(fac) + len(keyed)
    if position >= len(digits):
        return "the digits ran out (the leg was dialed or released)"
    after = digits[position]
    if after.digit in "*#":
        return f"ended by '{after.digit}'"
    gap = after.ts - digits[position - 1].ts
    if gap > timeout_ms:
        return f"ended by a pause of {gap / 1000:.1f} s (longer than digit_timeout_seconds)"
    return "ended early"


def _required_text(settings: Settings, root: LegFacts) -> tuple[bool, str]:
    required = code_required(settings, root)
    policy = settings.policy(root.group_id)
    category = None if root.dialed is None else root.dialed.call_category
    if root.direction != "outbound":
        why = f"only outbound calls can require a code; this one is {root.direction or 'unknown'}"
    elif policy.usage != "mandatory":
        why = f"group {root.group_id}'s account codes are {policy.usage}"
    elif root.user_id in policy.exempt_users:
        why = f"{root.user_id} is exempt in group {root.group_id}"
    elif category == "emergency":
        why = "emergency calls never require a code"
    elif category in policy.allow_without_code:
        why = f"group {root.group_id} allows {category} calls without a code"
    else:
        why = (f"group {root.group_id} requires codes (mandatory), {root.user_id} is not "
               f"exempt, and the call's category {category or '(none: never dialed)'} is not "
               "allowed without one")
    return required, f"{'required' if required else 'not required'}: {why}"


def _hold_text(view: UserView, key: LegKey, at: Millis) -> str:
    call = view.calls[key]
    for leg in call.legs:
        for hold in leg.holds:
            if hold.start <= at and (hold.end is None or hold.end > at):
                until = "still on hold" if hold.end is None else f"until {format_iso(hold.end)}"
                return f"on hold since {format_iso(hold.start)} ({until})"
    return "on hold"


def _target_text(
    settings: Settings, view: UserView, entry_leg: LegFacts
) -> tuple[LegKey | None, str, str]:
    """Where a code-entry leg's code went, the rule that decided it, and why."""
    assert entry_leg.entry is not None
    at = entry_leg.entry.entered_at
    window = settings.correction_window_ms
    target = target_of(view, entry_leg, window)
    held = held_call(view, at)
    if held is not None and target == held:
        others = [
            key for key, call in view.calls.items()
            if key != held and call.root is not None and _on_hold(call, at)
        ]
        text = (f"at {format_iso(at)} the call {held.cdr_id} was {_hold_text(view, held, at)}, "
                "so the code goes to it (rule C2: the call on hold at the entry's time)")
        if others:
            text += ("; also on hold then: " + ", ".join(k.cdr_id for k in others)
                     + ", held earlier (the most recently held call wins)")
        ring_held = [
            leg.key.call_id for leg in view.calls[held].ring
            if any(h.start <= at and (h.end is None or h.end > at) for h in leg.holds)
        ]
        if ring_held:
            text += (f" (the held leg {ring_held[0]} is a Simultaneous Ring leg: the code goes "
                     "to the call it rings for, rule C7)")
        return target, "C2", text
    corrected = corrected_call(view, at, window)
    if target is not None and target == corrected:
        released = view.calls[corrected].release_time
        return target, "C5", (
            f"no call was on hold at {format_iso(at)}; {corrected.cdr_id} was released at "
            f"{format_iso(released)}, {(at - released) / 1000:.1f} s before, within the "
            f"correction window of {settings.correction_window_seconds:g} s, so the code "
            "corrects it (rule C5)"
        )
    reason = f"no call of {entry_leg.user_id} was on hold at {format_iso(at)}"
    if window <= 0:
        reason += " and the correction window is off"
    else:
        reason += (f" and none was released in the {settings.correction_window_seconds:g} s "
                   "before it")
    return None, "C4", reason + ": an orphan, reported and applied to no call (rule C4)"


def _on_hold(call: Call, at: Millis) -> bool:
    return any(
        hold.start <= at and (hold.end is None or hold.end > at)
        for leg in call.legs for hold in leg.holds
    )


def explain(settings: Settings, source: ReplaySource, cdr_id: str, user_id: str | None = None,
            progress: bool | None = None) -> Explanation:
    """Everything about one CDR (see the module docstring). `progress`: None shows it
    where stderr is a terminal."""
    if user_id is None:
        user_id, partition = find_user(settings, source, cdr_id, progress)
    else:
        partition = None if source.inputs else _partition_of_user(settings, source, user_id)
    trace = follow_user(settings, source, cdr_id, user_id, partition, progress=progress)
    if not trace.issues:
        letters = [s for s in trace.seen if s.event.leg.cdr_id == cdr_id and s.dead_letter]
        why = f": its events went to the dead letters ({letters[0].dead_letter})" if letters else ""
        raise AuditError(f"the events make no CDR {cdr_id}{why}")
    final = trace.issues[-1]
    finished = final.trigger == END_OF_INPUT
    legs = _legs_until(trace, final.seen_count)
    facts = _facts(settings, legs, final.watermark or 0, finished)
    view = view_user(facts)
    key = LegKey(*_leg_of(cdr_id))
    decisions: list[Decision] = []
    relevant: dict[LegKey, str] = {}
    cdr = final.cdr
    if (key not in view.code_entry_legs) if cdr.record_type == c.CODE_ENTRY else (
        key not in view.calls or view.calls[key].root is None
    ):
        raise AuditError(
            f"cannot read the decisions of {cdr_id} back from its events (were events of "
            "its legs rejected or sent to the dead letters?)"
        )
    if cdr.record_type == c.CODE_ENTRY:
        entry_leg = view.code_entry_legs[key]
        relevant[key] = "code-entry leg"
        decisions.append(Decision("account-code entry", "C2",
                                  _entry_text(settings, legs[key], entry_leg)
                                  + "; released without a dial: a code-entry leg"))
        target, rule, text = _target_text(settings, view, entry_leg)
        decisions.append(Decision("where the code went", rule, text))
        if target is not None:
            call = view.calls[target]
            for leg in call.legs:
                relevant.setdefault(leg.key, "held call" if leg.key == target else "its ring leg")
        status = cdr.account_code_status
        decisions.append(Decision("status", "C2", {
            c.APPLIED: f"applied to {cdr.applied_to_cdr_id}",
            c.ORPHAN: "orphan: no call to apply it to",
            c.INCOMPLETE: "incomplete entry: recorded on the call it went to, sets no code",
        }.get(status, status)))
    else:
        call = view.calls[key]
        assert call.root is not None
        relevant[key] = "this call"
        for leg in call.ring:
            relevant[leg.key] = "ring leg (C7)"
        if call.ring:
            answered = [leg.key.call_id for leg in call.legs if leg.answer_ts is not None]
            decisions.append(Decision(
                "Simultaneous Ring", "C7",
                f"{len(call.ring)} leg(s) rang for this call ("
                + ", ".join(leg.key.call_id for leg in call.ring) + "); one CDR for all; "
                + (f"answered on {answered[0]}" if answered else "none answered"),
            ))
        for leg in call.legs:
            if leg.entry is not None or leg.direction == "outbound":
                text = _entry_text(settings, legs[leg.key], leg)
                decisions.append(Decision("pre-dial digits", "C1", text))
        for entry_key, entry_leg in view.code_entry_legs.items():
            target, rule, text = _target_text(settings, view, entry_leg)
            assert entry_leg.entry is not None
            at = entry_leg.entry.entered_at
            if target == key:
                relevant[entry_key] = "second line"
                decisions.append(Decision(
                    "second-line entry", rule,
                    _entry_text(settings, legs[entry_key], entry_leg) + "; " + text,
                ))
            elif call.first_ts <= at <= call.release_time + max(settings.correction_window_ms, 0):
                where = "an orphan" if target is None else f"call {target.cdr_id}"
                decisions.append(Decision(
                    "second-line entry not for this call", rule,
                    f"code-entry leg {entry_key.cdr_id} (entered {format_iso(at)}) went to "
                    f"{where}: {text}",
                ))
        entries = cdr.account_code_entries
        code = latest_code(entries)
        if entries:
            listing = "; ".join(
                f"{e.code or '(none)'} {'complete' if e.complete else 'incomplete'} "
                f"{e.via} on {e.entry_call_id} at {format_iso(e.entered_at)}"
                for e in entries
            )
            if code is None:
                text = f"entries {listing}; none is complete, so no code"
            else:
                text = (f"entries {listing}; the code is {code}, from the complete entry "
                        "with the latest entry time")
        else:
            text = "no account-code entry for this call"
        decisions.append(Decision("account code", "C3", text))
        required, required_text = _required_text(settings, call.root)
        decisions.append(Decision("code required", "C6", required_text))
        status = {
            c.PRESENT: "present: the call has a code",
            c.MISSING: "missing: a code is required and the call has none",
            c.NOT_REQUIRED: "not_required: no code, and none is required",
        }[cdr.account_code_status]
        if required != cdr.account_code_required:
            status += " (the CDR was issued under another configuration)"
        decisions.append(Decision("status", "C6", status))
    if cdr.account_code is not None:
        name, known = registry_lookup(settings, cdr.group_id, cdr.account_code)
        if known is None:
            text = f"group {cdr.group_id} has no client-code registry"
        elif known:
            text = f"code {cdr.account_code} is {name!r} in group {cdr.group_id}'s registry"
        else:
            text = (f"code {cdr.account_code} is not in group {cdr.group_id}'s registry "
                    "(accepted all the same)")
        decisions.append(Decision("client", "registry", text))
    decisions.append(Decision(
        "final", "C8",
        f"all legs released at {format_iso(cdr.release_time)}; final once event time passed "
        f"{format_iso(cdr.release_time + settings.settle_ms)} (settle_seconds "
        f"{settings.settle_seconds:g})",
    ))
    events = [(seen, relevant[seen.event.leg]) for seen in trace.seen if seen.event.leg in relevant]
    versions = _versions(trace, relevant)
    return Explanation(cdr_id, user_id, partition, cdr, events, decisions, versions)


def _versions(trace: Trace, relevant: dict[LegKey, str]) -> list[Change]:
    changes: list[Change] = []
    previous: Issue | None = None
    for issue in trace.issues:
        fields: list[tuple[str, Any, Any]] = []
        since: list[Seen] = []
        if previous is not None:
            before, after = previous.cdr.to_json_dict(), issue.cdr.to_json_dict()
            fields = [(name, before[name], after[name]) for name in CDR_FIELDS
                      if name != "version" and before[name] != after[name]]
            since = [s for s in trace.seen[previous.seen_count:issue.seen_count]
                     if s.event.leg in relevant]
        watermark = None if issue.watermark is None else format_iso(issue.watermark)
        changes.append(Change(issue.cdr.version, issue.trigger, watermark, fields, since))
        previous = issue
    return changes


def _partition_of_user(settings: Settings, source: ReplaySource, user_id: str) -> int:
    needle = user_id.encode()
    for task in plan_replay(settings, source).tasks:
        for record in raw_records(task):
            event = record.event
            if record.key == needle or (event is not None and event.user_id == user_id):
                return task.partition
    raise AuditError(f"no event of user {user_id} in {source.describe()}")
