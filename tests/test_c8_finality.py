"""Rule C8: when CDRs are issued and re-issued, unreleased legs, and bounded state."""

from __future__ import annotations

from streams.cdr import Cdr
from streams.deadletter import DeadLetter
from streams.engine import HOLDBACK_DIGIT_TIMEOUTS, Engine
from tests.builders import (
    BOB,
    LegScript,
    at,
    code_entry_at,
    events_of,
    feed_all,
    run,
    settings,
)

WINDOW = settings(correction_window_seconds=120)


def call() -> LegScript:
    return LegScript("a1").inbound(0).answer(2).release(60)


class TestIssue:
    def test_not_issued_before_settle(self) -> None:
        engine = Engine(settings())
        assert feed_all(engine, call().events).outputs == []
        assert engine.advance(at(64.999)) == []

    def test_issued_at_settle(self) -> None:
        engine = Engine(settings())
        feed_all(engine, call().events)
        [cdr] = engine.advance(at(65))
        assert isinstance(cdr, Cdr)
        assert (cdr.cdr_id, cdr.version) == ("sw1:a1", 1)
        assert engine.advance(at(1000)) == []

    def test_issued_when_another_users_event_moves_event_time(self) -> None:
        engine = Engine(settings())
        feed_all(engine, call().events)
        other = LegScript("b1", user=BOB).inbound(64.999)
        assert engine.feed(other.events[0]) == []
        other.answer(65)
        [cdr] = engine.feed(other.events[1])
        assert isinstance(cdr, Cdr) and cdr.cdr_id == "sw1:a1"

    def test_settle_zero_issues_at_the_release(self) -> None:
        engine = Engine(settings(settle_seconds=0))
        [cdr] = feed_all(engine, call().events).cdrs
        assert cdr.release_time == at(60)

    def test_finish_issues_what_has_not_settled(self) -> None:
        engine = Engine(settings())
        feed_all(engine, call().events)
        [cdr] = engine.finish()
        assert isinstance(cdr, Cdr) and cdr.cause == "normal"
        assert engine.open_legs == 0


class TestReissue:
    def test_late_change_issues_version_two(self) -> None:
        # a hold of the call turns up late (after the CDR was issued), while the call is
        # still in memory (correction window)
        leg = LegScript("a1").inbound(0).answer(2).hold(30).retrieve(40).release(60)
        started, answered, held, retrieved, released = leg.events
        engine = Engine(WINDOW)
        feed_all(engine, [started, answered, released])
        [v1] = engine.advance(at(65))
        assert isinstance(v1, Cdr) and (v1.version, v1.hold_ms) == (1, 0)
        # each late event is looked at as it comes: on hold until the release, then retrieved
        reissued = feed_all(engine, [held, retrieved]).cdrs
        assert [(c.cdr_id, c.version, c.hold_ms, c.talk_ms) for c in reissued] == [
            ("sw1:a1", 2, 30_000, 28_000), ("sw1:a1", 3, 10_000, 48_000),
        ]

    def test_correction_issues_the_same_cdr_id_again(self) -> None:
        result = run(WINDOW, call(), code_entry_at("c1", 100))
        assert [(c.cdr_id, c.version, c.account_code) for c in result.cdrs] == [
            ("sw1:a1", 1, None), ("sw1:c1", 1, "2002"), ("sw1:a1", 2, "2002"),
        ]

    def test_redelivery_issues_nothing(self) -> None:
        engine = Engine(WINDOW)
        leg = call()
        feed_all(engine, leg.events)
        engine.advance(at(65))
        assert feed_all(engine, leg.events).outputs == []
        assert engine.advance(at(66)) == []

    def test_event_that_changes_nothing_issues_nothing(self) -> None:
        leg = LegScript("a1").inbound(0).answer(2).key("5", 30).release(60)
        engine = Engine(WINDOW)
        feed_all(engine, [leg.events[0], leg.events[1], leg.events[3]])
        [v1] = engine.advance(at(65))
        # an in-call digit turns up late: it is no account code, the CDR stays as it is
        assert feed_all(engine, [leg.events[2]]).outputs == []
        assert engine.advance(at(70)) == []
        assert isinstance(v1, Cdr) and v1.version == 1

    def test_late_event_for_a_forgotten_leg_is_a_dead_letter(self) -> None:
        leg = LegScript("a1").inbound(0).answer(2).key("5", 30).release(60)
        engine = Engine(settings())  # no correction window: forgotten once issued
        feed_all(engine, [leg.events[0], leg.events[1], leg.events[3]])
        [cdr] = engine.advance(at(65))
        assert engine.open_legs == 0
        [letter] = engine.feed(leg.events[2])
        assert isinstance(letter, DeadLetter)
        assert letter.reason == "late event: call leg sw1:a1 is already final"
        assert letter.event_id == "sw1:a1:2"
        assert engine.finish() == []
        assert isinstance(cdr, Cdr)

    def test_redelivery_for_a_forgotten_leg_is_ignored(self) -> None:
        engine = Engine(settings())
        leg = call()
        feed_all(engine, leg.events)
        engine.advance(at(65))
        assert engine.open_legs == 0
        assert feed_all(engine, leg.events).outputs == []
        assert engine.finish() == []


    def test_an_expired_tombstone_is_gone_whether_or_not_it_was_swept(self) -> None:
        """Tombstones expire by event time and are only swept from memory every so often:
        until then an expired one must not guard anything."""
        config = settings(correction_window_seconds=0, redelivery_horizon_seconds=600)
        leg = call()
        runs = []
        for sweep_often in (True, False):
            engine = Engine(config, sweep_every_ms=None if sweep_often else 2**62)
            feed_all(engine, leg.events)
            engine.advance(at(65))  # issued and forgotten: a tombstone until 665 s
            assert engine.open_legs == 0
            engine.advance(at(700))  # swept by default; never again after the first
            held = sum(len(state.tombstones) for state in engine.users.values())
            assert held == (0 if sweep_often else 1)
            # the same leg again (its call id re-used): not a re-delivery any more
            later = feed_all(engine, call().events).outputs + engine.finish()
            runs.append([(type(o).__name__, getattr(o, "cdr_id", None)) for o in later])
        assert runs[0] == runs[1]
        assert ("DeadLetter", None) not in runs[0]


class TestHeldCallWaitsForTheSecondLine:
    @staticmethod
    def held_call() -> LegScript:
        # released by the far end while still on hold
        return LegScript("a1").inbound(0).answer(2).hold(20).release(30)

    def test_first_version_already_has_the_code(self) -> None:
        entry = LegScript("c1").outbound(25).keys("*711001", 26).release(40)
        engine = Engine(settings())
        feed_all(engine, events_of(self.held_call(), entry))
        assert engine.advance(at(44.999)) == []  # a1 settled at 35 but waits for c1
        issued = engine.advance(at(45))
        assert [(c.cdr_id, c.version, c.account_code) for c in issued
                if isinstance(c, Cdr)] == [("sw1:c1", 1, "1001"), ("sw1:a1", 1, "1001")]

    def test_wait_is_bounded(self) -> None:
        config = settings()
        limit = 30 + 5 + HOLDBACK_DIGIT_TIMEOUTS * 5
        entry = LegScript("c1").outbound(25).keys("*711001", 26).release(limit + 30)
        engine = Engine(config)
        feed_all(engine, events_of(self.held_call(), entry.events[:-1]))
        assert engine.advance(at(limit - 0.001)) == []
        [v1] = engine.advance(at(limit))
        assert isinstance(v1, Cdr) and (v1.cdr_id, v1.version, v1.account_code) == (
            "sw1:a1", 1, None,
        )
        feed_all(engine, entry.events[-1:])
        issued = engine.advance(at(limit + 35))
        assert [(c.cdr_id, c.version, c.account_code) for c in issued
                if isinstance(c, Cdr)] == [("sw1:c1", 1, "1001"), ("sw1:a1", 2, "1001")]

    @staticmethod
    def issued_at_settle(*legs: LegScript) -> list[str]:
        """The CDRs issued when event time reaches 35 s (a1's release + settle), having
        seen every event before then."""
        engine = Engine(settings())
        feed_all(engine, [e for e in events_of(*legs) if e.ts < at(35)])
        return [c.cdr_id for c in engine.advance(at(35)) if isinstance(c, Cdr)]

    def test_no_wait_without_a_hold(self) -> None:
        unheld = LegScript("a1").inbound(0).answer(2).release(30)
        entry = LegScript("c1").outbound(25).keys("*711001", 26).release(40)
        assert self.issued_at_settle(unheld, entry) == ["sw1:a1"]

    def test_wait_for_a_line_opened_before_the_release(self) -> None:
        entry = LegScript("c1").outbound(29).keys("*711001", 30).release(40)
        assert self.issued_at_settle(self.held_call(), entry) == []

    def test_no_wait_for_a_line_opened_after_the_release(self) -> None:
        entry = LegScript("c1").outbound(31).keys("*711001", 32).release(40)
        assert self.issued_at_settle(self.held_call(), entry) == ["sw1:a1"]

    def test_no_wait_for_a_line_that_dialed(self) -> None:
        other = LegScript("c1").outbound(25).dial(26).answer(27).release(300)
        assert self.issued_at_settle(self.held_call(), other) == ["sw1:a1"]

    def test_no_wait_for_digits_that_are_no_fac(self) -> None:
        other = LegScript("c1").outbound(25).keys("555", 26).dial(300).release(400)
        assert self.issued_at_settle(self.held_call(), other) == ["sw1:a1"]

    def test_no_wait_for_an_inbound_line(self) -> None:
        other = LegScript("c1").inbound(25).release(300)
        assert self.issued_at_settle(self.held_call(), other) == ["sw1:a1"]

    def test_no_wait_for_another_users_line(self) -> None:
        other = LegScript("c1", user=BOB).outbound(25).keys("*71", 26).release(300)
        assert self.issued_at_settle(self.held_call(), other) == ["sw1:a1"]

    def test_decided_line_ends_the_wait_once_its_event_has_surely_arrived(self) -> None:
        # c1 dials at 37: it is no code-entry leg. That counts once every event up to 37
        # has surely arrived (37 + settle), whether the dial came early or late.
        other = LegScript("c1").outbound(25).dial(37).answer(38).release(300)
        engine = Engine(settings())
        feed_all(engine, events_of(self.held_call(), other.events[:1]))
        assert engine.advance(at(36.5)) == []  # c1 still undecided
        assert engine.feed(other.events[1]) == []
        assert engine.advance(at(41.999)) == []
        [a1] = engine.advance(at(42))
        assert isinstance(a1, Cdr) and a1.cdr_id == "sw1:a1"

    def test_decided_line_that_arrived_before_the_wait(self) -> None:
        other = LegScript("c1").outbound(25).dial(33).answer(34).release(300)
        engine = Engine(settings())
        feed_all(engine, events_of(self.held_call(), other.events[:2]))  # the dial too
        assert engine.advance(at(37.999)) == []  # a1 settled at 35, the dial counts at 38
        [a1] = engine.advance(at(38))
        assert isinstance(a1, Cdr) and a1.cdr_id == "sw1:a1"


class TestUnreleased:
    def test_closed_after_max_call_hours(self) -> None:
        config = settings(max_call_hours=1)
        leg = LegScript("a1").inbound(0).answer(2).hold(100)
        engine = Engine(config)
        feed_all(engine, leg.events)
        assert engine.advance(at(3599.999)) == []
        [cdr] = engine.advance(at(3600))
        assert isinstance(cdr, Cdr)
        assert cdr.cause == "unreleased"
        assert cdr.releasing_party is None
        assert cdr.release_time == at(100)
        assert (cdr.duration_ms, cdr.talk_ms, cdr.hold_ms) == (100_000, 98_000, 0)
        assert engine.open_legs == 0

    def test_closed_leg_counts_from_its_first_event(self) -> None:
        config = settings(max_call_hours=1)
        leg = LegScript("a1").inbound(10).answer(12).hold(500).retrieve(3000)
        engine = Engine(config)
        feed_all(engine, leg.events)
        assert engine.advance(at(3609.999)) == []
        [cdr] = engine.advance(at(3610))
        assert isinstance(cdr, Cdr) and cdr.release_time == at(3000)
        assert cdr.hold_ms == 2_500_000

    def test_closed_code_entry_leg(self) -> None:
        config = settings(max_call_hours=1)
        leg = LegScript("c1").outbound(0).keys("*711001", 1)
        [cdr] = run(config, leg, LegScript("z9", user=BOB).inbound(4000)).versions("sw1:c1")
        assert (cdr.record_type, cdr.cause, cdr.account_code_status) == (
            "code_entry", "unreleased", "orphan",
        )
        assert cdr.release_time == at(2.8)

    def test_end_of_input_closes_open_legs(self) -> None:
        leg = LegScript("a1").outbound(0).keys("*711001", 1).dial(5).answer(9)
        result = run(settings(), leg)
        [cdr] = result.cdrs
        assert (cdr.cause, cdr.release_time, cdr.account_code) == ("unreleased", at(9), "1001")
        assert cdr.talk_ms == 0

    def test_end_of_input_closes_ring_legs_and_their_call(self) -> None:
        w1 = LegScript("w1").inbound(0).release(6, cause="answered_elsewhere", party=None)
        w2 = LegScript("w2").ring(0.1, "w1").answer(6)
        [cdr] = run(settings(), w1, w2).cdrs
        assert cdr.release_time == at(6)
        assert cdr.legs[0].release_time == at(6)

    def test_release_after_the_close_is_a_late_event(self) -> None:
        config = settings(max_call_hours=1)
        leg = LegScript("a1").inbound(0).answer(2)
        engine = Engine(config)
        feed_all(engine, leg.events)
        [v1] = engine.advance(at(3600))
        assert isinstance(v1, Cdr) and v1.cause == "unreleased"
        leg.release(3601)
        [letter] = engine.feed(leg.events[-1])
        assert isinstance(letter, DeadLetter)
        assert letter.reason.startswith("late event")


def simulated_day(calls: int, users: int) -> list[LegScript]:
    """`calls` calls, one every 10 minutes, round-robin over `users` users: every third a
    held call with a second-line code, every fifth with a Simultaneous Ring leg, every
    seventh followed by an orphan code entry."""
    legs: list[LegScript] = []
    for n in range(calls):
        user = f"user{n % users}@smithlaw.example"
        start = 600.0 * n
        root = LegScript(f"r{n}", user=user).inbound(start).answer(start + 2)
        if n % 3 == 0:
            root.hold(start + 20).retrieve(start + 30)
            entry = LegScript(f"e{n}", user=user).outbound(start + 21)
            legs.append(entry.keys("*711001", start + 22).release(start + 25))
        if n % 5 == 0:
            ring = LegScript(f"s{n}", user=user).ring(start + 0.1, f"r{n}")
            legs.append(ring.release(start + 2.1, cause="answered_elsewhere", party=None))
        legs.append(root.release(start + 60))
        if n % 7 == 0:
            orphan = LegScript(f"o{n}", user=user).outbound(start + 200)
            legs.append(orphan.keys("*712002", start + 201).release(start + 205))
    return legs


class TestBoundedState:
    def test_memory_holds_only_what_can_still_change(self) -> None:
        config = settings(max_call_hours=1, correction_window_seconds=60)
        legs = simulated_day(calls=144, users=5)  # 24 hours
        events = events_of(*legs)
        engine = Engine(config)
        issued: list[Cdr] = []
        peak_legs = 0
        for event in events:
            issued.extend(c for c in engine.feed(event) if isinstance(c, Cdr))
            peak_legs = max(peak_legs, engine.open_legs)
        # never more than one call's legs: root, second line and ring leg (every 15th call)
        assert peak_legs == 3
        assert engine.open_legs == 1  # the last call, released but not settled
        last_release = max(e.ts for e in events)
        settled = last_release + 5000
        issued.extend(c for c in engine.advance(settled) if isinstance(c, Cdr))
        assert engine.open_legs == 1  # issued, but kept for the correction window
        assert engine.advance(settled + 60_000) == []
        assert engine.open_legs == 0
        assert all(not state.issued for state in engine.users.values())
        # Left: the tombstones (re-delivery guards) of legs forgotten in the last hour of
        # event time. A call is forgotten at its release + settle + window (start + 125 s),
        # an orphan once issued; a tombstone lasts max_call_hours from then. Now is call
        # 143's start + 125 s: calls 138..143 are within the hour (users n % 5): 138 root +
        # second line; 139 root; 140 root + ring leg + orphan; 141 root + second line;
        # 142 root; 143 root. (Expired tombstones count as gone at once and are swept from
        # memory every so often of event time: sweep now, to count what is held.)
        engine.sweep()
        assert {user: len(state.tombstones) for user, state in engine.users.items()} == {
            "user0@smithlaw.example": 3, "user1@smithlaw.example": 2,
            "user2@smithlaw.example": 1, "user3@smithlaw.example": 3,
            "user4@smithlaw.example": 1,
        }
        # ... and they go too once max_call_hours have passed
        assert engine.advance(settled + 60_000 + 3_600_000) == []
        assert engine.users == {}
        assert engine.open_legs == 0
        assert engine.finish() == []
        latest = {c.cdr_id: c for c in issued}
        assert len(issued) == len(latest)  # nothing re-issued
        calls = [c for c in latest.values() if c.record_type == "call"]
        assert len(calls) == 144
        assert sum(1 for c in calls if c.account_code == "1001") == 48  # n % 3 == 0
        assert sum(1 for c in calls if c.legs) == 29  # n % 5 == 0
        orphans = [c for c in latest.values() if c.account_code_status == "orphan"]
        assert len(orphans) == 21  # n % 7 == 0: 142.8 s after the release, past the window

    def test_user_state_is_dropped_when_idle(self) -> None:
        config = settings(max_call_hours=1)
        engine = Engine(config)
        feed_all(engine, call().events)
        engine.advance(at(65))
        assert engine.open_legs == 0
        assert list(engine.users) == ["alice@smithlaw.example"]  # tombstones only
        engine.advance(at(65 + 3600))
        assert engine.users == {}
