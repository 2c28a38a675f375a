"""The Redis key layout: one slot per account, stable buckets, ids that cannot collide."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from gateway.credits import keys


def test_every_key_of_an_account_shares_one_slot() -> None:
    for account in ("acme", "acct_0123456789abcdef", "a", "x" * 64):
        k = keys.account_keys(account)
        slots = {
            key_slot(name.encode())
            for name in (k.state, k.deadlines, k.outbox, k.reservation("r1"), k.replay("idem-1"))
        }
        assert len(slots) == 1
        bucket = keys.bucket_of(account)
        assert k.outbox == keys.outbox(bucket) and k.deadlines == keys.deadlines(bucket)


def test_buckets_are_stable_and_spread() -> None:
    assert keys.bucket_of("acme") == keys.bucket_of("acme")
    used = {keys.bucket_of(f"acct_{i}") for i in range(2000)}
    assert used == set(range(keys.BUCKETS))
    assert len({key_slot(name.encode()) for name in keys.all_outboxes()}) == keys.BUCKETS


@pytest.mark.parametrize("account", ["", "a|b", "a:r:b", "{b00}", "x}"])
def test_ids_that_could_collide_or_move_the_tag_are_refused(account: str) -> None:
    with pytest.raises(ValueError, match="account id"):
        keys.account_keys(account)


def test_state_keys_name_their_account_and_nothing_else_does() -> None:
    k = keys.account_keys("acme")
    assert keys.account_of(k.state) == "acme"
    assert keys.account_of(k.reservation("r1")) is None
    assert keys.account_of(k.replay("idem-1")) is None
    assert keys.account_of(k.outbox) is None and keys.account_of(k.deadlines) is None
    assert keys.account_of(k.state.replace("{b", "{c")) is None
