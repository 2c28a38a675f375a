"""The shared checks, as pure functions: what passes, and what each refusal says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.accounts import validation
from gateway.errors import InvalidRequest

TIERS = ("free", "pro", "enterprise")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"", {}), (b"  \n", {}), (b'{"a": 1}', {"a": 1}), (b'{"a": null}', {"a": None})],
)
def test_json_object_accepts_objects_and_an_empty_body(raw: bytes, expected: object) -> None:
    assert validation.json_object(raw) == expected


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\xff\xfe{", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"null", "JSON object"),
        (b"1", "JSON object"),
        (b'{"a": 1} {"b": 2}', "not valid JSON"),
    ],
)
def test_json_object_refusals(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        validation.json_object(raw)


def test_optional_fields_may_be_null_and_defaults_apply() -> None:
    wanted = validation.create_account({"id": None, "tier": None, "reason": None}, TIERS)
    assert wanted == validation.CreateAccount(None, None, "free", 0, "")
    assert validation.downgrade({}) == validation.Downgrade("")
    assert validation.key_name(" ci ") == "ci"


def test_reasons_are_trimmed_and_bounded() -> None:
    assert validation.grant({"credits": 1, "reason": "  why  "}).reason == "why"
    assert validation.reason(" " + "x" * 500 + " ", required=True) == "x" * 500
    with pytest.raises(InvalidRequest, match="too long"):
        validation.reason("x" * 501, required=True)


@pytest.mark.parametrize("good", ["a", "A9", "acct_0f.x-y", "9" * 64])
def test_account_ids_that_pass(good: str) -> None:
    assert validation.account_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "_a", ".a", "a b", "a:b", "a|b", "{a}", "a/b", "é", "a\n", "9" * 65]
)
def test_account_ids_that_do_not(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="'id'"):
        validation.account_id(bad)


@pytest.mark.parametrize("value", [1, 36, 12])
def test_months_in_range(value: int) -> None:
    assert validation.months(value) == value


@pytest.mark.parametrize("value", [0, 37, -1, True, 1.0, "1", None])
def test_months_out_of_range_or_type(value: object) -> None:
    with pytest.raises(InvalidRequest, match="'months'"):
        validation.months(value)


def test_unknown_fields_are_named_and_the_allowed_ones_listed() -> None:
    with pytest.raises(InvalidRequest) as exc:
        validation.renew({"months": 1, "weeks": 2, "days": 3})
    assert "'days', 'weeks'" in exc.value.message and "allowed: months, reason" in exc.value.message


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(["id", "email", "tier", "months", "reason", "credits", "name", "x"])


@given(body=st.dictionaries(FIELDS, JSON_VALUES, max_size=5))
def test_any_json_body_is_accepted_or_refused_as_invalid_request(body: dict[str, Any]) -> None:
    parsers: list[Callable[[dict[str, Any]], object]] = [
        lambda b: validation.create_account(b, TIERS),
        lambda b: validation.upgrade(b, TIERS),
        validation.renew,
        validation.downgrade,
        validation.grant,
    ]
    for parse in parsers:
        try:
            parse(body)
        except InvalidRequest as exc:
            assert exc.message


@pytest.mark.parametrize("bad", ["a\x00b", "line\nbreak", "tab\there", "bell\x07", "del\x7f"])
def test_free_text_refuses_control_characters(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="control characters"):
        validation.reason(bad, required=True)
    with pytest.raises(InvalidRequest, match="control characters"):
        validation.key_name(bad)
    with pytest.raises(InvalidRequest, match="'email'"):
        validation.email("a" + bad + "@example.com")


@pytest.mark.parametrize("bad", ["x\ud800", "\udfffy", "ok\ud83d"])
def test_free_text_refuses_lone_surrogates(bad: str) -> None:
    """JSON's "\\ud800" decodes to a string no UTF-8 can hold: Redis and the store can't."""
    with pytest.raises(InvalidRequest, match="lone surrogate"):
        validation.reason(bad, required=True)
    with pytest.raises(InvalidRequest, match="lone surrogate"):
        validation.key_name(bad)
    with pytest.raises(InvalidRequest, match="'email'"):
        validation.email("a" + bad + "@example.com")


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
    ids=["array", "object"],
)
def test_deep_nesting_is_an_invalid_request(raw: bytes) -> None:
    with pytest.raises(InvalidRequest, match="nested deeper than"):
        validation.json_object(raw)


def test_nesting_within_the_limit_parses() -> None:
    depth = validation.MAX_JSON_DEPTH
    raw = b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)
    assert validation.json_object(raw)["a"] is not None
    with pytest.raises(InvalidRequest, match="nested deeper than"):
        validation.json_object(b'{"a":' + raw + b"}")
