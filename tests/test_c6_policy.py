"""Rule C6: account_code_required and account_code_status."""

from __future__ import annotations

import pytest

from streams.cdr import Cdr
from streams.settings import CALL_CATEGORIES, Settings
from tests.builders import ALICE, RECEPTION, LegScript, run, settings


def outbound(
    category: str = "national", *, user: str = ALICE, group: str = "smith-law",
    digits: str = "", config: Settings | None = None,
) -> Cdr:
    leg = LegScript("x1", user=user, group=group).outbound(0)
    if digits:
        leg.keys(digits, 1)
    leg.dial(5, category=category).answer(8).release(60)
    return run(config or settings(), leg).latest["sw1:x1"]


def policy(cdr: Cdr) -> tuple[bool, str, str | None]:
    return cdr.account_code_required, cdr.account_code_status, cdr.account_code


def test_mandatory_without_code_is_missing() -> None:
    assert policy(outbound()) == (True, "missing", None)


def test_mandatory_with_code_is_present() -> None:
    assert policy(outbound(digits="*711001")) == (True, "present", "1001")


def test_mandatory_with_incomplete_code_is_missing() -> None:
    assert policy(outbound(digits="*7110#")) == (True, "missing", None)


@pytest.mark.parametrize("category", ["internal", "toll_free"])
def test_allowed_categories_need_no_code(category: str) -> None:
    assert policy(outbound(category)) == (False, "not_required", None)
    assert policy(outbound(category, digits="*711001")) == (False, "present", "1001")


@pytest.mark.parametrize("category", ["local", "national", "international", "other"])
def test_other_categories_need_a_code(category: str) -> None:
    assert policy(outbound(category)) == (True, "missing", None)


def test_emergency_never_needs_a_code() -> None:
    config = settings(groups={"strict": {"usage": "mandatory"}})  # allows nothing
    assert policy(outbound("emergency", group="strict", config=config)) == (
        False, "not_required", None,
    )
    assert policy(outbound("international", group="strict", config=config))[0] is True


def test_exempt_user() -> None:
    assert policy(outbound(user=RECEPTION)) == (False, "not_required", None)
    assert policy(outbound(user=RECEPTION, digits="*712002")) == (False, "present", "2002")


def test_optional_group() -> None:
    config = settings(groups={"smith-law": {"usage": "optional"}})
    assert policy(outbound(config=config)) == (False, "not_required", None)
    assert policy(outbound(config=config, digits="*711001")) == (False, "present", "1001")


def test_unlisted_group_uses_the_default_group() -> None:
    assert policy(outbound(group="unlisted")) == (False, "not_required", None)
    mandatory = settings(default_group={"usage": "mandatory", "allow_without_code": ["local"]})
    assert policy(outbound(group="unlisted", config=mandatory)) == (True, "missing", None)
    assert policy(outbound("local", group="unlisted", config=mandatory)) == (
        False, "not_required", None,
    )
    # a listed group keeps its own policy
    assert policy(outbound("local", config=mandatory)) == (True, "missing", None)


def test_inbound_never_requires_a_code() -> None:
    config = settings(
        groups={"smith-law": {"usage": "mandatory"}}, default_group={"usage": "mandatory"}
    )
    for group in ("smith-law", "unlisted"):
        leg = LegScript("y1", group=group).inbound(0).answer(2).release(60)
        assert policy(run(config, leg).latest["sw1:y1"]) == (False, "not_required", None)


def test_every_category_of_a_mandatory_group() -> None:
    required = {
        category: outbound(category).account_code_required for category in CALL_CATEGORIES
    }
    assert required == {
        "internal": False, "local": True, "toll_free": False, "national": True,
        "international": True, "emergency": False, "other": True,
    }


def test_inbound_with_second_line_code_is_present() -> None:
    call = LegScript("y1").inbound(0).answer(2).hold(10).retrieve(30).release(60)
    entry = LegScript("y2").outbound(11).keys("*711001", 12).release(16)
    cdr = run(settings(), call, entry).latest["sw1:y1"]
    assert policy(cdr) == (False, "present", "1001")


def test_unanswered_mandatory_call_is_still_missing() -> None:
    leg = LegScript("x1").outbound(0).dial(5).release(30, cause="no_answer")
    assert policy(run(settings(), leg).latest["sw1:x1"]) == (True, "missing", None)


def test_code_entry_records_never_require_a_code() -> None:
    leg = LegScript("c1").outbound(0).keys("*711001", 1).release(5)
    cdr = run(settings(), leg).latest["sw1:c1"]
    assert cdr.account_code_required is False
    assert cdr.account_code_status == "orphan"
