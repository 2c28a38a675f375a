"""The Redis key layout: one slot per account, stable buckets, ids that cannot collide."""

from __future__ import annotations

import math

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


def create_split(masters: int) -> list[tuple[int, int]]:
    """The slot ranges ``redis-cli --cluster create`` gives ``masters`` masters (its
    ``clusterManagerNodeArray`` split: ``last = lround(cursor + per - 1)``)."""
    per = keys.SLOTS / masters
    first, cursor, ranges = 0, 0.0, []
    for i in range(masters):
        last = math.floor(cursor + per - 1 + 0.5)
        if last > keys.SLOTS or i == masters - 1:
            last = keys.SLOTS - 1
        last = max(last, first)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per
    return ranges


def test_the_tags_are_the_rules_and_sit_evenly_spaced() -> None:
    assert keys.TAGS == keys.spaced_tags(keys.BUCKETS)
    stride = keys.SLOTS // keys.BUCKETS
    slots = [key_slot(keys.outbox(b).encode()) for b in range(keys.BUCKETS)]
    assert slots == [b * stride + stride // 2 for b in range(keys.BUCKETS)]


@pytest.mark.parametrize("masters", range(2, 65))
def test_any_even_split_gives_every_master_nearly_as_many_buckets(masters: int) -> None:
    slots = [key_slot(keys.outbox(b).encode()) for b in range(keys.BUCKETS)]
    counts = [sum(first <= s <= last for s in slots) for first, last in create_split(masters)]
    assert sum(counts) == keys.BUCKETS
    assert max(counts) - min(counts) <= 1, counts


def test_layout_1_keys_map_to_their_new_names() -> None:
    new = keys.account_keys("acme")
    assert keys.relayout("cg:1:{b07}:a:acme") == new.state
    assert keys.relayout("cg:1:{b07}:a:acme:r:req-1") == new.reservation("req-1")
    assert keys.relayout("cg:1:{b07}:a:acme:o:op-1") == new.operation("op-1")
    for other in ("cg:1:{b07}:outbox", "cg:1:{b07}:a:", "cg:1:{b07}:a:acme:x:1", new.state):
        assert keys.relayout(other) is None
