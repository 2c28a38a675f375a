"""Reading an outbox event's fields: the packed form the scripts write, and the one field per
name of gateways before it (a stream written before an upgrade still syncs)."""

from __future__ import annotations

import pytest

from gateway.credits.outboxes import PACKED_NUMBERS, PACKED_TEXTS, event_fields

OLD_FORM = {
    "acct": "a1", "kind": "charge", "dp": "-1", "db": "0", "tok": "2000", "rid": "r1",
    "note": "", "rp": "1", "rb": "0", "ts": "1790000000000", "v": "1790000000000001",
    "plan": "5", "bonus": "0", "tier": "free", "sub": "0", "se": "0", "pe": "1792592000000",
    "tt": "2000", "mt": "2000", "key": "k1", "route": "/api/projects/",
}  # fmt: skip


def packed(fields: dict[str, str]) -> str:
    """``emit``'s string (common.lua), built the way the Lua format builds it."""
    numbers = " ".join(fields[name] for name in PACKED_NUMBERS)
    texts = "".join(f"{len(fields[n].encode())}:{fields[n]}" for n in PACKED_TEXTS)
    return f"{numbers} {texts}"


def test_an_older_gateways_event_is_read_as_it_is() -> None:
    assert event_fields(OLD_FORM) == OLD_FORM


def test_a_packed_event_reads_as_the_old_form_did() -> None:
    assert event_fields({"e": packed(OLD_FORM)}) == OLD_FORM


def test_texts_hold_any_character_and_are_counted_in_bytes() -> None:
    awkward = OLD_FORM | {"note": "12:3 4\nstill: é ünï", "rid": "", "tier": "x 9:y"}
    assert event_fields({"e": packed(awkward)}) == awkward


@pytest.mark.parametrize(
    "broken",
    [
        packed(OLD_FORM)[:-1],  # cut short
        packed(OLD_FORM) + "1:x",  # more than its fields
        packed(OLD_FORM).replace("2:a1", "-2:a1"),  # a negative length
        packed(OLD_FORM).replace("2:a1", "a1"),  # no length
        " ".join(OLD_FORM[n] for n in PACKED_NUMBERS[:-1]),  # a number short, no texts
    ],
)
def test_a_malformed_packed_event_is_a_value_error(broken: str) -> None:
    with pytest.raises(ValueError):
        event_fields({"e": broken})
