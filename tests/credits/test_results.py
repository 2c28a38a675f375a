"""The account's fields on the Redis side: one list (Snapshot), one table of hash names, and
the Lua scripts agree with both."""

from __future__ import annotations

import re
from dataclasses import fields
from importlib import resources

from gateway.credits.outboxes import PACKED_NUMBERS, PACKED_TEXTS
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


def test_common_lua_loads_saves_and_emits_the_fields_of_the_table() -> None:
    loaded = lua_names(r"'HMGET', key,(.*?)\)")
    saved = lua_names(r"'HSET', key,(.*?)\)\n")
    assert loaded[: len(HASH_FIELDS)] == list(HASH_FIELDS)
    assert set(HASH_FIELDS) <= set(saved)
    assert set(HASH_FIELDS) <= set(PACKED_NUMBERS + PACKED_TEXTS)


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
