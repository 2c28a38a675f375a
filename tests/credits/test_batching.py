"""Automatic pipelining of script calls: the same answers as one by one, fewer round trips,
errors and lost scripts handled per call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError

from gateway.credits import batching, keys, scripts
from gateway.credits.batching import ScriptBatcher
from gateway.credits.engine import CreditEngine
from gateway.credits.wire import Wire
from gateway.errors import Unavailable
from gateway.settings import DEFAULT_TIERS, Tier

TIERS = DEFAULT_TIERS | {"bulk": Tier(credits=100, requests_per_minute=0)}


@pytest.fixture(params=["redis-py pipeline", "wire"])
async def make_engine(
    request: pytest.FixtureRequest, real_redis: aioredis.Redis, redis_url: str
) -> AsyncIterator[Callable[[], CreditEngine]]:
    """Batched engines on both transports: redis-py's pipeline and the engine's own Wire."""
    engines: list[CreditEngine] = []

    def make() -> CreditEngine:
        wire = Wire.for_url(redis_url) if request.param == "wire" else None
        engines.append(CreditEngine(real_redis, TIERS, batch=True, wire=wire))
        return engines[-1]

    yield make
    for engine in engines:
        await engine.aclose()


class CountingPipelines(ScriptBatcher):
    """Records the number of calls in each pipeline sent."""

    def __init__(self, batcher: ScriptBatcher) -> None:
        super().__init__(batcher.redis, batcher.wire)
        self.pipelines: list[int] = []

    def _send_pending(self) -> None:
        self.pipelines.append(len(self._pending))
        super()._send_pending()


def counting(engine: CreditEngine) -> CountingPipelines:
    assert engine._batcher is not None
    engine._batcher = CountingPipelines(engine._batcher)
    return engine._batcher


async def test_concurrent_reserves_share_round_trips_and_spend_exactly_the_credits(
    make_engine: Callable[[], CreditEngine],
) -> None:
    engine = make_engine()
    counted = counting(engine)
    await engine.open("bulk-account", tier="bulk")

    answers = await asyncio.gather(
        *(engine.reserve("bulk-account", f"r{i}", 1) for i in range(300))
    )

    assert sum(a.held for a in answers) == 100
    assert {a.status for a in answers} == {"ok", "insufficient"}
    assert sorted(a.account.credits_remaining for a in answers if a.held) == list(range(100))
    assert len(counted.pipelines) < 300 / 4 and sum(counted.pipelines) == 301
    settled = await asyncio.gather(
        *(engine.settle("bulk-account", f"r{i}", 10) for i in range(300))
    )
    assert sum(s.status == "charged" for s in settled) == 100
    state = await engine.status("bulk-account")
    assert state is not None and (state.credits_remaining, state.total_tokens) == (0, 1000)


async def test_a_library_redis_lost_is_loaded_again(
    make_engine: Callable[[], CreditEngine], real_redis: aioredis.Redis
) -> None:
    engine = make_engine()
    await engine.open("lost-scripts")
    await real_redis.function_delete(scripts.library().name)
    answers = await asyncio.gather(*(engine.reserve("lost-scripts", f"r{i}", 1) for i in range(7)))
    assert [a.status for a in answers].count("ok") == 5


async def test_a_failing_call_fails_alone(
    make_engine: Callable[[], CreditEngine], real_redis: aioredis.Redis
) -> None:
    engine = make_engine()
    await engine.open("fine")
    await real_redis.set(keys.account_keys("broken").state, "not a hash")
    fine, broken = await asyncio.gather(
        engine.reserve("fine", "r1", 1),
        engine.reserve("broken", "r1", 1),
        return_exceptions=True,
    )
    assert not isinstance(fine, BaseException) and fine.held
    assert isinstance(broken, Unavailable)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The function of each FCALL the batchers write, on either transport."""
    functions: list[str] = []
    pack, fcall = batching.pack_fcall, Pipeline.fcall

    def packing(function: str, *rest: object) -> bytes:
        functions.append(function)
        return pack(function, *rest)  # type: ignore[arg-type]

    def calling(pipe: Pipeline, function: str, *rest: object) -> object:
        functions.append(function)
        return fcall(pipe, function, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(batching, "pack_fcall", packing)
    monkeypatch.setattr(Pipeline, "fcall", calling)
    return functions


async def test_the_calls_of_a_pipeline_are_one_call_of_the_batch_function(
    make_engine: Callable[[], CreditEngine], sent: list[str]
) -> None:
    engine = make_engine()
    await engine.open("bulk-account", tier="bulk")
    sent.clear()
    answers = await asyncio.gather(*(engine.reserve("bulk-account", f"r{i}", 1) for i in range(30)))
    # The first goes at once, alone; the 29 made while it was in flight, as one FCALL that
    # runs them in their order, each answered as if alone.
    library = scripts.library()
    assert sent == [library.functions["reserve"], library.batch]
    assert [a.account.credits_remaining for a in answers if a.account] == list(range(99, 69, -1))


@pytest.mark.parametrize("broken", ["not a packed state", ["a", "list"]])
async def test_a_failing_call_in_a_batch_fails_alone(
    make_engine: Callable[[], CreditEngine],
    real_redis: aioredis.Redis,
    sent: list[str],
    broken: str | list[str],
) -> None:
    # The script's own error (a state it cannot unpack) and Redis's (WRONGTYPE) alike.
    engine = make_engine()
    await engine.open("fine")
    state = keys.account_keys("broken").state
    if isinstance(broken, str):
        await real_redis.set(state, broken)
    else:
        await real_redis.rpush(state, *broken)
    outcomes = await asyncio.gather(
        engine.reserve("fine", "r0", 1),
        engine.reserve("broken", "r1", 1),
        engine.reserve("fine", "r2", 1),
        return_exceptions=True,
    )
    assert sent[-1] == scripts.library().batch
    first, failed, after = outcomes
    assert isinstance(failed, Unavailable)
    assert not isinstance(first, BaseException) and first.held
    assert not isinstance(after, BaseException) and after.held
    assert after.account is not None and after.account.credits_remaining == 3


async def test_a_batch_reads_the_clock_once_and_the_next_call_again(
    make_engine: Callable[[], CreditEngine], sent: list[str]
) -> None:
    engine = make_engine()
    for account in ("t1", "t2", "t3"):
        await engine.open(account)
    _, second, third = await asyncio.gather(*(engine.status(a) for a in ("t1", "t2", "t3")))
    assert sent[-1] == scripts.library().batch
    assert second is not None and third is not None and second.now_ms == third.now_ms
    await asyncio.sleep(0.02)
    alone = await engine.status("t1")  # not in a batch: Redis's clock, not the batch's
    assert alone is not None and alone.now_ms >= third.now_ms + 20


def test_a_batch_reply_that_does_not_fit_fails_every_call() -> None:
    error = ResponseError("OOM command not allowed")
    assert batching._split(error, 3) == [error] * 3
    assert batching._split([1, 2], 2) == [1, 2]
    unexpected = batching._split([1], 2)
    assert len(unexpected) == 2 and all(isinstance(e, RedisConnectionError) for e in unexpected)


@pytest.mark.parametrize("wire", [None, Wire.for_url("redis://127.0.0.1:1/0")])
async def test_redis_down_is_storage_unavailable_for_every_call(wire: Wire | None) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    engine = CreditEngine(client, TIERS, batch=True, wire=wire)
    outcomes = await asyncio.gather(
        *(engine.reserve("a", f"r{i}", 1) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, Unavailable) for o in outcomes)
    await engine.aclose()
    await client.aclose()


async def test_a_cancelled_caller_does_not_break_the_batch(
    make_engine: Callable[[], CreditEngine],
) -> None:
    engine = make_engine()
    await engine.open("bulk-account", tier="bulk")
    doomed = asyncio.ensure_future(engine.reserve("bulk-account", "gone", 1))
    kept = asyncio.ensure_future(engine.reserve("bulk-account", "kept", 1))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await kept).held
    with pytest.raises(asyncio.CancelledError):
        await doomed
    # The cancelled caller's script ran all the same: its hold is there for the proxy's
    # refund or the reaper, like any call cut off after it reached Redis.
    state = await engine.status("bulk-account")
    assert state is not None and state.credits_remaining == 98


async def test_a_deferred_settle_rides_with_the_next_reserve_or_goes_alone(
    make_engine: Callable[[], CreditEngine],
) -> None:
    engine = make_engine()
    await engine.open("bulk-account", tier="bulk")
    await engine.reserve("bulk-account", "r1", 1)
    counted = counting(engine)

    settle = asyncio.ensure_future(engine.settle("bulk-account", "r1", 10, defer=True))
    await asyncio.sleep(0)  # a loop turn: an urgent call would have been sent by now
    assert counted.pipelines == []
    reserve = await engine.reserve("bulk-account", "r2", 1)
    assert (await settle).status == "charged" and reserve.held
    assert counted.pipelines == [2]

    alone = await engine.settle("bulk-account", "r2", 10, defer=True)
    assert alone.status == "charged" and counted.pipelines == [2, 1]


async def test_a_call_on_an_idle_wire_goes_at_once_and_the_next_ones_share_a_pipeline(
    make_engine: Callable[[], CreditEngine],
) -> None:
    """With nothing in flight there is no batch to join: the call is written in its caller's
    own step, not a loop turn later. The calls made while it is in flight wait for the end of
    their turn and go together, as under load."""
    engine = make_engine()
    await engine.open("idle")
    assert await engine.status("idle") is not None  # connected
    counted = counting(engine)

    first = asyncio.ensure_future(engine.status("idle"))
    await asyncio.sleep(0)  # the caller's first step has run; the end of its turn has not
    assert counted.pipelines == [1]
    rest = [asyncio.ensure_future(engine.status("idle")) for _ in range(3)]
    answers = await asyncio.gather(first, *rest)
    assert all(a is not None and a.account == "idle" for a in answers)
    assert counted.pipelines == [1, 3]


async def test_settle_soon_is_a_future_of_the_settlement(
    make_engine: Callable[[], CreditEngine],
) -> None:
    engine = make_engine()
    await engine.open("bulk-account", tier="bulk")
    await engine.reserve("bulk-account", "r1", 3)
    settled = await engine.settle_soon("bulk-account", "r1", 42)
    assert (settled.status, settled.credits, settled.account) == ("charged", 3, None)
    state = await engine.status("bulk-account")
    assert state is not None and state.total_tokens == 42
    again = await engine.settle_soon("bulk-account", "r1", 42)
    assert again.status == "charged_before"


async def test_settle_soon_fails_as_storage_unavailable() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    engine = CreditEngine(client, TIERS, wire=Wire.for_url("redis://127.0.0.1:1/0"))
    with pytest.raises(Unavailable):
        await engine.settle_soon("a", "r1", 1)
    await engine.aclose()
    await client.aclose()


async def test_a_call_redis_cannot_take_fails_alone(
    make_engine: Callable[[], CreditEngine],
) -> None:
    """An argument that is not str, bytes or int fails its own call with redis-py's DataError;
    the other calls of the batch go on, on either transport."""
    engine = make_engine()
    await engine.open("fine")
    assert engine._batcher is not None
    bad = engine._batcher.call(engine._scripts.status, ("k",), (None,))
    good = engine.status("fine")
    outcomes = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(outcomes[0], DataError)
    assert not isinstance(outcomes[1], BaseException) and outcomes[1] is not None


@pytest.mark.parametrize("bad", ["x\ud800", "\udfff", "ok\ud83d"], ids=["high", "low", "half"])
async def test_a_string_that_is_not_utf8_fails_its_call_alone(
    make_engine: Callable[[], CreditEngine], bad: str
) -> None:
    """A lone surrogate (an admin reason, an email) used to raise UnicodeEncodeError inside the
    batch's send and drop every call queued with it; now it fails its own call only."""
    engine = make_engine()
    for i in range(5):
        await engine.open(f"peer{i}")
    await engine.open("victim")
    grants = [engine.grant(f"peer{i}", 1, reason="fine") for i in range(5)]
    outcomes = await asyncio.wait_for(
        asyncio.gather(engine.grant("victim", 1, reason=bad), *grants, return_exceptions=True),
        timeout=5,
    )
    assert isinstance(outcomes[0], Unavailable)
    assert isinstance(outcomes[0].__cause__, DataError)
    assert all(not isinstance(o, BaseException) for o in outcomes[1:]), outcomes
    state = await engine.status("victim")
    assert state is not None and state.bonus_credits == 0  # nothing applied


class BrokenPipeline:
    """A client whose pipelines fail with an error that is not a RedisError (as redis-py's
    cluster client did on MOVED: AttributeError, RuntimeError)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    def pipeline(self, transaction: bool = False) -> BrokenPipeline:
        return self

    def fcall(self, *args: object) -> None:
        return None

    async def execute(self, raise_on_error: bool = True) -> list[object]:
        raise AttributeError("'NoneType' object has no attribute 'writelines'")


async def test_a_client_failing_oddly_resolves_every_call_as_unavailable(
    real_redis: aioredis.Redis,
) -> None:
    engine = CreditEngine(real_redis, TIERS, batch=True)
    await engine.open("a1")
    assert engine._batcher is not None
    engine._batcher.redis = BrokenPipeline(real_redis)  # type: ignore[assignment]
    calls = [engine.status("a1") for _ in range(10)]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=5)
    assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
    await engine.aclose()
