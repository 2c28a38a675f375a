"""The packed strings Redis holds an account's state and a reservation in, read in Python.

The credit scripts write them (``common.lua`` and ``hold.lua`` say each byte); the audit and
the tests read them here. Each reader also takes the hash an older release kept the same
fields in (``HGETALL``'s mapping), which the scripts convert the next time they write it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from redis.client import NEVER_DECODE

from gateway.credits.results import reply_text

STATE = struct.Struct("<13q")
STATE_FIELDS = ("plan", "bonus", "sub", "se", "pe", "tt", "mt", "v", "hp", "hb", "rl", "rn", "rr")
"""The integers of an account's state, in their order (common.lua); the tier's name follows."""

HOLD = struct.Struct("<7qh")
HOLD_FIELDS = ("pp", "bp", "dl", "ret", "kc", "kp", "chg")
"""The integers of a reservation after its state's letter (hold.lua); then the key id's length,
the key id and the route prefix. ``ret``, ``kc`` and ``chg`` are -1 when not set."""
HOLD_STATES = {"h": "held", "c": "charged", "r": "refunded"}

Raw = bytes | str | Mapping[Any, Any] | None
"""A key's value as redis-py gives it back: a string, a hash's mapping, or None when absent."""


def _hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {reply_text(name): reply_text(value) for name, value in raw.items()}


def account_state(raw: Raw) -> dict[str, int | str] | None:
    """An account's fields by their names in common.lua (``tier`` among them), None when
    Redis does not have it."""
    if not raw:
        return None
    if isinstance(raw, Mapping):
        found = _hash(raw)
        state: dict[str, int | str] = {name: int(found.get(name, 0)) for name in STATE_FIELDS}
        state["tier"] = found["tier"]
        return state
    data = raw.encode() if isinstance(raw, str) else raw
    state = dict(zip(STATE_FIELDS, STATE.unpack_from(data), strict=True))
    state["tier"] = data[STATE.size :].decode()
    return state


def pack_state(state: Mapping[str, int | str]) -> bytes:
    """An account's state as the scripts keep it (a field left out is 0)."""
    numbers = (int(state.get(name, 0)) for name in STATE_FIELDS)
    return STATE.pack(*numbers) + str(state["tier"]).encode()


def hold(raw: Raw) -> dict[str, int | str | None] | None:
    """A reservation's fields (``st`` as a word, ``k`` and ``rt`` as texts, the numbers not
    set as None; ``cost`` only for a hash of layout 1's scripts), None when there is none."""
    if not raw:
        return None
    if isinstance(raw, Mapping):
        found = _hash(raw)
        fields: dict[str, int | str | None] = {
            name: int(found[name]) if name in found else None for name in (*HOLD_FIELDS, "cost")
        }
        fields.update(st=found.get("st"), k=found.get("k", ""), rt=found.get("rt", ""))
        return fields
    data = raw.encode() if isinstance(raw, str) else raw
    *numbers, key_length = HOLD.unpack_from(data, 1)
    fields = {
        name: None if number < 0 and name in ("ret", "kc", "chg") else number
        for name, number in zip(HOLD_FIELDS, numbers, strict=True)
    }
    texts = data[1 + HOLD.size :]
    fields.update(
        st=HOLD_STATES[chr(data[0])],
        k=texts[:key_length].decode(),
        rt=texts[key_length:].decode(),
        cost=None,
    )
    return fields


def pack_hold(fields: Mapping[str, int | str | None]) -> bytes:
    """A reservation as the scripts keep it, from ``hold``'s fields."""
    numbers = (_number(fields.get(name)) for name in HOLD_FIELDS)
    key, route = str(fields.get("k") or "").encode(), str(fields.get("rt") or "").encode()
    letter = {word: letter for letter, word in HOLD_STATES.items()}[str(fields["st"])]
    return letter.encode() + HOLD.pack(*numbers, len(key)) + key + route


def _number(value: int | str | None) -> int:
    return -1 if value is None else int(value)


async def read(redis: Any, names: Sequence[str]) -> list[Raw]:
    """The values of ``names`` in two pipelined round trips at most: a GET of each (as bytes,
    whatever the client decodes), then an HGETALL of those an older release left as hashes
    (their GET failed with WRONGTYPE)."""
    if not names:
        return []
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.execute_command("GET", name, **{NEVER_DECODE: []})
    values: list[Any] = list(await pipe.execute(raise_on_error=False))
    hashes = [i for i, value in enumerate(values) if isinstance(value, Exception)]
    if hashes:
        pipe = redis.pipeline(transaction=False)
        for i in hashes:
            if "WRONGTYPE" not in str(values[i]):
                raise values[i]
            pipe.hgetall(names[i])
        for i, value in zip(hashes, await pipe.execute(), strict=True):
            values[i] = value
    return values
