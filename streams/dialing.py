"""Account-code entries in a leg's dialing digits (SPEC section 3, "Entry")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from streams.timefmt import Millis

TERMINATORS = frozenset("*#")


@dataclass(init=False)
class Keyed:
    """One dialing digit and when it was keyed."""

    digit: Final[str]
    ts: Final[Millis]

    def __init__(self, digit: str, ts: Millis) -> None:
        self.digit = digit
        self.ts = ts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keyed):
            return NotImplemented
        return self.digit == other.digit and self.ts == other.ts

    def __hash__(self) -> int:
        return hash((self.digit, self.ts))


@dataclass(init=False, unsafe_hash=True)
class EntryAttempt:
    """What the dialing digits of one leg say about an account code."""

    code: Final[str | None]  # the code where complete, else None
    keyed: Final[str]  # the code digits keyed, complete or not
    complete: Final[bool]
    entered_at: Final[Millis]

    def __init__(self, code: str | None, keyed: str, complete: bool, entered_at: Millis) -> None:
        self.code = code
        self.keyed = keyed
        self.complete = complete
        self.entered_at = entered_at

    def __reduce__(self) -> tuple[type[EntryAttempt], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return EntryAttempt, (self.code, self.keyed, self.complete, self.entered_at)


def is_fac_prefix(digits: Sequence[Keyed], fac: str) -> bool:
    """True while the digits so far could still become the feature access code."""
    return len(digits) < len(fac) and "".join(d.digit for d in digits) == fac[: len(digits)]


def parse_entry(
    digits: Sequence[Keyed], fac: str, code_digits: int, digit_timeout_ms: Millis
) -> EntryAttempt | None:
    """The entry that `digits` make, or None where they do not begin with the FAC.

    The FAC must be keyed without a gap longer than the inter-digit timeout. The code is
    the next `code_digits` digits; the entry ends early (incomplete) at `*` or `#`, at a gap
    longer than the timeout, or where the digits run out (the dial or the release).
    Its time is that of its last code digit, or of the FAC's last digit when no code
    digit was keyed.
    """
    if len(digits) < len(fac):
        return None
    for index, char in enumerate(fac):
        if digits[index].digit != char:
            return None
        if index and digits[index].ts - digits[index - 1].ts > digit_timeout_ms:
            return None
    keyed: list[str] = []
    last = digits[len(fac) - 1]
    for current in digits[len(fac):]:
        if current.digit in TERMINATORS or current.ts - last.ts > digit_timeout_ms:
            break
        keyed.append(current.digit)
        last = current
        if len(keyed) == code_digits:
            code = "".join(keyed)
            return EntryAttempt(code, code, True, last.ts)
    return EntryAttempt(None, "".join(keyed), False, last.ts)
