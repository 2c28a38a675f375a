"""Versions across a failover that lost writes: the store keeps following Redis."""

from __future__ import annotations

from gateway.credits import keys
from gateway.services import Services
from sync.worker import SyncWorker
from tests.support.storeview import StoreView, assert_in_sync


async def test_the_store_follows_after_a_failover_set_versions_back(
    services: Services, store_view: StoreView
) -> None:
    """Replication is asynchronous: a promoted replica may miss the master's last writes, and
    the account's version goes back. The next events must still be newer than what the store
    has, or its snapshot stops following Redis."""
    engine = services.credits
    state = keys.account_keys("acct-f").state
    await engine.open("acct-f", tier="pro", months=1)
    await SyncWorker(services).run_once()
    lost_to = await services.redis.dump(state)  # what the replica had
    for i in range(3):
        assert (await engine.reserve("acct-f", f"r{i}", 1)).held
        await engine.settle("acct-f", f"r{i}", 100)
    await SyncWorker(services).run_once()  # the store saw them: plan 97, 300 tokens

    await services.redis.restore(state, 0, lost_to, replace=True)  # the failover: writes lost
    assert (await engine.reserve("acct-f", "after", 1)).held
    await engine.settle("acct-f", "after", 7)
    await SyncWorker(services).run_once()

    record = (await store_view.accounts())["acct-f"]
    assert (record.plan_credits, record.total_tokens) == (99, 7)  # Redis's truth, followed
    current = await engine.status("acct-f")
    assert current is not None and record.version == current.version


async def test_versions_never_repeat_in_the_ledger(
    services: Services, store_view: StoreView
) -> None:
    engine = services.credits
    await engine.open("acct-g", tier="free")
    for i in range(4):
        assert (await engine.reserve("acct-g", f"r{i}", 1)).held
        await engine.settle("acct-g", f"r{i}", 10)
    await SyncWorker(services).run_once()
    await assert_in_sync(services, store_view)
