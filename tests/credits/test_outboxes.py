"""Reading an outbox event's fields: the packed form the scripts write, and the forms of
gateways before it, a packed one and one field per name (a stream written before an upgrade
still syncs)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.credits.outboxes import PACKED_NUMBERS, PACKED_TEXTS, event_fields

Packer = Callable[[dict[str, str]], str]

OLD_FORM = {
    "acct": "a1", "kind": "charge", "dp": "-1", "db": "0", "tok": "2000", "rid": "r1",
    "note": "", "rp": "1", "rb": "0", "ts": "1790000000000", "v": "1790000000000001",
    "plan": "5", "bonus": "0", "tier": "free", "sub": "0", "se": "0", "pe": "1792592000000",
    "tt": "2000", "mt": "2000", "key": "k1", "route": "/api/projects/",
}  # fmt: skip


def packed(fields: dict[str, str]) -> str:
    """``emit``'s string (common.lua), built the way the Lua format builds it."""
    numbers = [fields[name] for name in PACKED_NUMBERS]
    numbers += [str(len(fields[name].encode())) for name in PACKED_TEXTS]
    return " ".join(numbers) + " " + "".join(fields[name] for name in PACKED_TEXTS)


def sized(fields: dict[str, str]) -> str:
    """The string of ``emit`` before it: each text after its length."""
    numbers = " ".join(fields[name] for name in PACKED_NUMBERS)
    texts = "".join(f"{len(fields[n].encode())}:{fields[n]}" for n in PACKED_TEXTS)
    return f"{numbers} {texts}"


def test_an_older_gateways_event_is_read_as_it_is() -> None:
    assert event_fields(OLD_FORM) == OLD_FORM


def test_a_packed_event_reads_as_the_old_form_did() -> None:
    assert event_fields({"f": packed(OLD_FORM)}) == OLD_FORM


def test_an_event_of_the_packed_form_before_reads_the_same() -> None:
    assert event_fields({"e": sized(OLD_FORM)}) == OLD_FORM


@pytest.mark.parametrize(("field", "pack"), [("f", packed), ("e", sized)])
def test_texts_hold_any_character_and_are_counted_in_bytes(field: str, pack: Packer) -> None:
    awkward = OLD_FORM | {"note": "12:3 4\nstill: é ünï\x00", "rid": "", "tier": "x 9:y"}
    assert event_fields({field: pack(awkward)}) == awkward


@pytest.mark.parametrize(
    "broken",
    [
        packed(OLD_FORM)[:-1],  # cut short
        packed(OLD_FORM) + "x",  # more than its fields
        packed(OLD_FORM).replace(" 2 6 ", " -2 6 "),  # a negative length
        packed(OLD_FORM).replace(" 2 6 ", " x 6 "),  # a length that is no number
        " ".join(OLD_FORM[n] for n in PACKED_NUMBERS),  # no lengths, no texts
    ],
)
def test_a_malformed_packed_event_is_a_value_error(broken: str) -> None:
    with pytest.raises(ValueError):
        event_fields({"f": broken})


@pytest.mark.parametrize(
    "broken",
    [
        sized(OLD_FORM)[:-1],  # cut short
        sized(OLD_FORM) + "1:x",  # more than its fields
        sized(OLD_FORM).replace("2:a1", "-2:a1"),  # a negative length
        sized(OLD_FORM).replace("2:a1", "a1"),  # no length
        " ".join(OLD_FORM[n] for n in PACKED_NUMBERS[:-1]),  # a number short, no texts
    ],
)
def test_a_malformed_event_of_the_form_before_is_a_value_error(broken: str) -> None:
    with pytest.raises(ValueError):
        event_fields({"e": broken})
