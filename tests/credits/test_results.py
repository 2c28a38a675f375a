"""The account's fields on the Redis side: one list (Snapshot), one table of hash names, and
the Lua scripts agree with both."""

from __future__ import annotations

import re
from dataclasses import fields
from importlib import resources

from gateway.credits import packed
from gateway.credits.outboxes import PACKED_NUMBERS, PACKED_TEXTS
from gateway.credits.packed import HOLD_FIELDS, HOLD_STATES, STATE_FIELDS
from gateway.credits.results import (
    HASH_FIELDS,
    IN_HASH,
    SNAPSHOT_FIELDS,
    AccountState,
    Snapshot,
    snapshot_args,
    snapshot_fields,
    snapshot_values,
)

COMMON = resources.files("gateway.credits").joinpath("common.lua").read_text()
HOLD = resources.files("gateway.credits").joinpath("hold.lua").read_text()


def lua_names(pattern: str) -> list[str]:
    """The quoted names in what the group of ``pattern`` matches first in common.lua."""
    found = re.search(pattern, COMMON, re.DOTALL)
    assert found is not None, pattern
    return re.findall(r"'(\w+)'", found.group(1))


def test_the_hash_table_names_every_snapshot_field_in_its_order() -> None:
    assert tuple(IN_HASH) == SNAPSHOT_FIELDS
    assert len(set(HASH_FIELDS)) == len(HASH_FIELDS)


def test_an_account_state_is_its_snapshot_and_what_the_scripts_add() -> None:
    names = tuple(f.name for f in fields(AccountState))
    own = ("account", "allowance", "requests_per_minute", "now_ms")
    assert names == SNAPSHOT_FIELDS + own


def lua_list(pattern: str, text: str = COMMON) -> list[str]:
    """The comma-separated names the group of ``pattern`` matches first, ``a.`` dropped."""
    found = re.search(pattern, text, re.DOTALL)
    assert found is not None, pattern
    return [name.strip().removeprefix("a.").removeprefix("r.") for name in found[1].split(",")]


def test_common_lua_packs_and_unpacks_the_fields_python_reads() -> None:
    width = re.search(r"^local STATE = '<((?:i8)+)'$", COMMON, re.MULTILINE)
    assert width is not None and len(width[1]) // 2 == len(STATE_FIELDS)
    assert packed.STATE.size == 8 * len(STATE_FIELDS)
    assert lua_list(r"local (plan, .*?), at = bunpack\(STATE, s\)") == list(STATE_FIELDS)
    assert lua_list(r"bpack\(STATE, (.*?)\) \.\. a\.tier") == list(STATE_FIELDS)
    assert lua_names(r"'HMGET', key,(.*?)\)")[: len(HASH_FIELDS)] == list(HASH_FIELDS)
    assert set(HASH_FIELDS) <= {*STATE_FIELDS, "tier"}
    assert set(HASH_FIELDS) <= set(PACKED_NUMBERS + PACKED_TEXTS)


def test_hold_lua_packs_and_unpacks_the_fields_python_reads() -> None:
    width = re.search(r"^local HOLD = '<((?:i8)+)i2'$", HOLD, re.MULTILINE)
    assert width is not None and len(width[1]) // 2 == len(HOLD_FIELDS)
    assert packed.HOLD.size == 8 * len(HOLD_FIELDS) + 2
    unpacked = lua_list(r"local (pp, .*?), klen, at = bunpack\(HOLD, s, 2\)", HOLD)
    assert unpacked == list(HOLD_FIELDS)
    packed_as = lua_list(r"bpack\(HOLD, (.*?), #r\.k\)", HOLD)
    assert [name.removesuffix(" or -1") for name in packed_as] == list(HOLD_FIELDS)
    assert {letter: word for letter, word in re.findall(r"(\w) = '(\w+)'", HOLD)} == HOLD_STATES


def test_the_packed_event_holds_as_many_numbers_and_texts_as_it_is_read_with() -> None:
    numbers = re.search(r"^local NUMBERS = '(.*)'$", COMMON, re.MULTILINE)
    emit = re.search(r"^local function emit\(.*?^end$", COMMON, re.MULTILINE | re.DOTALL)
    assert numbers is not None and emit is not None
    assert numbers.group(1).split(" ") == ["%d"] * (len(PACKED_NUMBERS) + len(PACKED_TEXTS)) + [""]
    assert emit.group(0).count(" .. ") == len(PACKED_TEXTS)


def test_describe_answers_the_fields_in_the_table_order() -> None:
    describe = re.search(r"return \{ status, (.*?), r\.credits", COMMON)
    assert describe is not None
    answered = [name.strip().removeprefix("a.") for name in describe.group(1).split(",")]
    assert answered == list(HASH_FIELDS)


def test_values_read_as_redis_gives_them_and_write_back() -> None:
    raw = ["7", "2", "pro", "1", "0", "1900", "400", "300", "41"]
    snapshot = Snapshot(*snapshot_values(raw))
    assert snapshot == Snapshot(7, 2, "pro", True, None, 1900, 400, 300, 41)
    assert snapshot_args(snapshot) == [7, 2, "pro", 1, 0, 1900, 400, 300, 41]
    assert Snapshot(**snapshot_fields(dict(zip(HASH_FIELDS, raw, strict=True)))) == snapshot
    assert Snapshot(*snapshot_values([b"1", 0, b"free", 0, 5, 6, 0, 0, 1])).tier == "free"
    assert snapshot_values(["1", "0", "free", "0", "5", "6", "0", "0", "1"])[4] == 5
