"""extend, retention and request ids: what keeps a reservation alive and a movement traceable."""

from __future__ import annotations

from collections.abc import Callable

from gateway.credits import keys
from gateway.credits.engine import CreditEngine
from gateway.credits.outboxes import event_fields
from tests.support.clocks import ManualClock


async def test_extend_moves_a_held_deadline_and_nothing_else(
    make_engine: Callable[..., CreditEngine], clock: ManualClock
) -> None:
    engine = make_engine(hold_ms=10_000)
    await engine.open("streamer", tier="pro", months=1)
    bucket = keys.bucket_of("streamer")
    assert (await engine.reserve("streamer", "long", 1)).held
    assert (await engine.reserve("streamer", "short", 1)).held

    clock.advance(8_000)
    assert await engine.extend("streamer", "long")
    clock.advance(8_000)  # 16 s after both reserves: only "short" is overdue
    assert await engine.overdue(bucket) == [("streamer", "short")]

    assert (await engine.settle("streamer", "long", 5)).status == "charged"
    assert not await engine.extend("streamer", "long")
    assert not await engine.extend("streamer", "never-reserved")
    clock.advance(60_000)
    assert await engine.overdue(bucket) == [("streamer", "short")]
    state = await engine.status("streamer")
    assert state is not None and state.credits_remaining == 98


async def test_a_retention_fixed_at_reserve_binds_the_reapers_refund(
    make_engine: Callable[..., CreditEngine], clock: ManualClock
) -> None:
    """An Idempotency-Key's reservation refunded by the reaper stays known for 24 h, not 60 s."""
    engine = make_engine(hold_ms=1_000, retain_ms=60_000)
    await engine.open("idem", tier="pro", months=1)
    assert (await engine.reserve("idem", "idem-k", 1, retain_ms=86_400_000)).held
    assert (await engine.reserve("idem", "plain", 1)).held
    clock.advance(2_000)
    for account, request_id in await engine.overdue(keys.bucket_of("idem")):
        assert (await engine.refund(account, request_id, reason="expired")).status == "refunded"
    ttl_idem = await engine.redis.pttl(keys.account_keys("idem").reservation("idem-k"))
    ttl_plain = await engine.redis.pttl(keys.account_keys("idem").reservation("plain"))
    assert 86_000_000 < ttl_idem <= 86_400_000
    assert 0 < ttl_plain <= 60_000


async def test_operator_changes_carry_their_request_id_into_the_outbox(
    make_engine: Callable[..., CreditEngine],
) -> None:
    engine = make_engine()
    await engine.open("ops", request_id="op_open")
    await engine.grant("ops", 3, reason="gift", request_id="op_grant")
    await engine.set_tier("ops", "upgrade", tier="pro", months=1, request_id="op_up")
    entries = await engine.redis.xrange(keys.account_keys("ops").outbox)
    events = [event_fields(f) for _, f in entries]
    assert [(f["kind"], f["rid"]) for f in events if f["acct"] == "ops"] == [
        ("open", "op_open"),
        ("grant", "op_grant"),
        ("upgrade", "op_up"),
    ]
