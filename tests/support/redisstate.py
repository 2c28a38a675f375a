"""Reading and changing what Redis holds of an account or a reservation, for tests: the packed
forms of ``gateway.credits.packed``, as a dict of fields."""

from __future__ import annotations

from typing import Any

from gateway.credits import keys, packed


async def state_of(redis: Any, account: str) -> dict[str, int | str]:
    """The account's state fields (``plan``, ``hp``, ``tier`` ...); fails when Redis lacks it."""
    [raw] = await packed.read(redis, [keys.account_keys(account).state])
    state = packed.account_state(raw)
    assert state is not None, f"no state of {account!r} in Redis"
    return state


async def change_state(redis: Any, account: str, **fields: int | str) -> None:
    """Overwrite some fields of the account's state, behind the scripts' back."""
    state = await state_of(redis, account)
    await redis.set(keys.account_keys(account).state, packed.pack_state({**state, **fields}))


async def hold_of(redis: Any, account: str, request_id: str) -> dict[str, int | str | None]:
    """A reservation's fields; fails when there is none."""
    [raw] = await packed.read(redis, [keys.account_keys(account).reservation(request_id)])
    fields = packed.hold(raw)
    assert fields is not None, f"no reservation {request_id!r} of {account!r}"
    return fields


async def change_hold(redis: Any, account: str, request_id: str, **fields: int | str) -> None:
    """Overwrite some fields of a reservation (its time to live goes)."""
    old = await hold_of(redis, account, request_id)
    name = keys.account_keys(account).reservation(request_id)
    await redis.set(name, packed.pack_hold({**old, **fields}))
