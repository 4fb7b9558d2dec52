"""Event time text: the canonical-form fast path agrees with the ISO 8601 parser."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from streams.timefmt import format_iso, local_date_text, parse_canonical_iso, parse_iso

YEAR_10000_MS = 253_402_300_800_000


def reference(text: str) -> int | None:
    """What `datetime.fromisoformat` makes of the text: epoch ms, or None where it has no
    zone or is not ISO 8601."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return None if moment.tzinfo is None else round(moment.timestamp() * 1000)


@given(st.integers(0, YEAR_10000_MS - 1))
def test_canonical_text_round_trips(ms: int) -> None:
    text = format_iso(ms)
    assert parse_canonical_iso(text) == ms == parse_iso(text) == reference(text)


@given(
    st.integers(0, YEAR_10000_MS - 1), st.integers(0, 23),
    st.sampled_from("0123456789:.-TZ+ x٣"),
)
def test_one_character_changed_is_parsed_as_iso_or_refused(ms: int, at: int, char: str) -> None:
    text = format_iso(ms)
    changed = text[:at] + char + text[at + 1:]
    fast = parse_canonical_iso(changed)
    assert fast == -1 or fast == reference(changed)


def test_the_same_second_twice_then_another() -> None:
    assert parse_canonical_iso("2026-11-24T13:00:00.288Z") == 1_795_525_200_288
    assert parse_canonical_iso("2026-11-24T13:00:00.999Z") == 1_795_525_200_999
    assert parse_canonical_iso("2026-11-24T13:00:01.000Z") == 1_795_525_201_000
    assert parse_canonical_iso("2026-11-24T13:00:00.00xZ") == -1
    assert parse_canonical_iso("2026-11-24T13:00:60.000Z") == -1
    assert parse_canonical_iso("2026-11-24T13:00:00.000+00:00") == -1  # not canonical
    assert parse_iso("2026-11-24T13:00:00.000+00:00") == 1_795_525_200_000


# zones with clock changes at midnight (Havana, Santiago), half-hour offsets and changes
# (St Johns, Lord Howe), a skipped day (Apia, 2011), none (Kolkata), and UTC
TRICKY_ZONES = [
    "America/New_York", "America/Havana", "America/Santiago", "America/St_Johns",
    "Australia/Lord_Howe", "Pacific/Apia", "Asia/Kolkata", "UTC",
]


def expected_date(ms: int, zone_name: str) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(zone_name)).date().isoformat()


def test_local_dates_through_two_years_of_clock_changes() -> None:
    """The local day is remembered per zone: every 37 minutes through 2011 (Apia skipped
    a day) and 2026, in time order, as CDRs come."""
    for zone_name in TRICKY_ZONES:
        for first in (1_293_840_000_000, 1_767_225_600_000):  # 2011-01-01, 2026-01-01
            for ms in range(first, first + 366 * 86_400_000, 37 * 60_000):
                assert local_date_text(ms, zone_name) == expected_date(ms, zone_name)


@given(st.sampled_from(TRICKY_ZONES),
       st.lists(st.integers(1_293_840_000_000, 1_830_000_000_000), min_size=1, max_size=20))
def test_local_dates_in_any_order(zone_name: str, moments: list[int]) -> None:
    for ms in moments:
        assert local_date_text(ms, zone_name) == expected_date(ms, zone_name)
