"""A reservation after the answer: refund, settle, keep alive, release; and shutdown's wait.

The request flow (``gateway.proxy.flow``) decides *what* becomes of a request's hold; this
module owns *how*, with Redis failing now and then. The policy:

- refund (the backend failed or answered other than 2xx, the client left before the answer,
  a gateway error): one attempt awaited by the request (a 502 / 504 or a non-2xx answer
  shows its figures), shielded so a cancelled request still refunds. If Redis fails, a task
  retries it (``_retry``), so the credits are back as soon as Redis answers again.
- settle (a 2xx answer, once it has gone out): not awaited. The engine's batcher sends it
  with the next reserve's round trip. A failed attempt, or a ``missing`` answer (Redis lost
  the account), is retried by a task, the account restored from the store before any attempt
  that follows a ``missing``.
- retries (``_retry``): with a growing pause (``RETRY_FIRST_S`` doubling up to
  ``RETRY_MAX_S``, jittered) until ``DEADLINE_MARGIN_S`` before the reservation's deadline:
  the reaper cannot refund the hold earlier, and settle and refund scripts are idempotent, so
  a retry of one that had landed changes nothing. A served request is charged, a failed one
  refunded, within ``RETRY_MAX_S`` of Redis answering again (a failover, a reshard, a
  restart). The deadline is followed here: the reserve's plus the hold, moved by every
  keep-alive that landed. Only past it, logged, is the hold left to the reaper.
- keep alive: a request alive longer than its hold pushes the deadline out every third of
  the hold (``engine.extend``), so the reaper refunds only the holds of replicas that are
  gone. A failed extend is logged and the beats go on; they stop once the hold is gone.
- release: a reserve interrupted (Redis failed or the request was cancelled) may or may not
  have held; it is refunded in the background, retried as a refund is.

``InFlight`` tracks every refund, release, settle and retry: they finish even if their
request is cancelled, and the app's shutdown waits for them (``drain``).

A reservation the flow reports ``opened`` counts in ``creditgate_open_reservations`` until its
refund or its settle has ended, landed or left to the reaper; a second refund of the same
hold does not count it twice. Credits and refunds are counted by what the scripts answered,
so a repeat that changed nothing adds nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.credits.engine import CreditEngine
from gateway.credits.results import AccountState, Settlement
from gateway.errors import Unavailable
from gateway.metrics import Metrics

if TYPE_CHECKING:
    from gateway.tracing import Tracing

log = logging.getLogger("creditgate.proxy")

DRAIN_TIMEOUT_S = 20.0
"""The longest shutdown waits for settles and refunds in flight (uvicorn allows 30 s)."""
RETRY_FIRST_S = 0.05
"""The pause before the first retry of a settle or refund whose Redis call failed."""
RETRY_MAX_S = 0.5
"""The longest pause between retries: how late a settle or refund may land after Redis
answers again."""
DEADLINE_MARGIN_S = 2.0
"""Retries stop this long before the reservation's deadline (as this process saw it: after
the reserve's answer), for the clocks of Redis and this host to differ a little; at most a
tenth of the hold, so a short hold (a short upstream timeout and grace) keeps most of its
time for retries."""

T = TypeVar("T")
Restore = Callable[[str], Awaitable[AccountState | None]]
"""Load an account Redis lost from the store; None when the store does not know it either."""


class InFlight:
    """Settles and refunds in flight: they finish even if the request is cancelled, and
    shutdown waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def track(self, outcome: asyncio.Future[T]) -> asyncio.Future[T]:
        """Keep ``outcome`` (a task or a future) until it is done."""
        self._tasks.add(outcome)
        outcome.add_done_callback(self._tasks.discard)
        return outcome

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        return self.track(asyncio.ensure_future(work))

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """``spawn``, then wait for the outcome; cancelling the waiter leaves the work be."""
        return await asyncio.shield(self.spawn(work))

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for every settle still running (lifespan shutdown), at most ``timeout``
        seconds: a Redis that never answers must not keep the process from exiting. What is
        left then is logged and cancelled; the reaper refunds those holds at their deadline."""
        loop = asyncio.get_running_loop()
        timeout = DRAIN_TIMEOUT_S if timeout is None else timeout
        deadline = loop.time() + timeout
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)  # wait() cancels nothing
        if not self._tasks:
            return
        stuck = list(self._tasks)
        log.warning(
            "shutdown: %d settle(s) or refund(s) still waiting on Redis after %g s; "
            "cancelled, the reaper will refund their holds",
            len(stuck),
            timeout,
        )
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)


class Holds:
    """What becomes of each request's reservation once its answer is decided (the policy is in
    the module docstring); built once per process by the app's lifespan, handed to the flow.
    With ``tracing``, a refund the request waits on is a span of the request's."""

    def __init__(
        self,
        *,
        engine: CreditEngine,
        metrics: Metrics,
        restore: Restore,
        inflight: InFlight,
        tracing: Tracing | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.restore = restore
        self.inflight = inflight
        self.tracing = tracing
        self._open: dict[str, float] = {}
        """The reservations ``opened`` whose settle or refund has not ended: request id to
        deadline (event loop time)."""
        self._beats = _Beats(engine, self._extended)

    def opened(self, request_id: str) -> None:
        """A request of this replica holds a reservation now: count it open."""
        self._open[request_id] = self._hold_end()
        self.metrics.open_reservations.inc()

    def _hold_end(self) -> float:
        return asyncio.get_running_loop().time() + self.engine.hold_ms / 1000

    def _extended(self, request_id: str) -> None:
        if request_id in self._open:
            self._open[request_id] = self._hold_end()

    def _closed(self, request_id: str) -> None:
        if self._open.pop(request_id, None) is not None:
            self.metrics.open_reservations.dec()

    async def _retry(
        self, what: str, request_id: str, attempt: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Call ``attempt`` after growing pauses until it answers True, or until shortly
        before the reservation's deadline (False, logged: the reaper takes the hold). An
        ``Unavailable`` is one more failed attempt."""
        loop = asyncio.get_running_loop()
        deadline = self._open.get(request_id) or self._hold_end()
        give_up = deadline - min(DEADLINE_MARGIN_S, self.engine.hold_ms / 10_000)
        pause = RETRY_FIRST_S
        tries = 0
        try:
            while loop.time() + pause < give_up:
                await asyncio.sleep(pause * random.uniform(0.8, 1.0))
                pause = min(pause * 2, RETRY_MAX_S)
                tries += 1
                try:
                    if await attempt():
                        if tries > 1:
                            log.info(
                                "%s landed after %d retries", what, tries, extra=_rid(request_id)
                            )
                        return True
                except Unavailable as exc:
                    if tries == 1:  # one line per retried call, not one per attempt
                        log.warning("%s failed, retrying: %s", what, exc, extra=_rid(request_id))
        except asyncio.CancelledError:
            log.error("%s abandoned at shutdown", what, extra=_rid(request_id))
            raise
        log.error(
            "%s failed %d times until its reservation's deadline; the reaper will refund it",
            what,
            tries + 1,
            extra=_rid(request_id),
        )
        return False

    async def refund(self, account: str, request_id: str, reason: str) -> AccountState | None:
        """Give the hold back; the account as the refund left it, None if Redis failed (the
        refund is retried in the background) or no longer knows it. The metric's reason is the
        first word of ``reason``."""
        return await self.inflight.run(self._refund(account, request_id, reason))

    async def _refund(self, account: str, request_id: str, reason: str) -> AccountState | None:
        work = self.engine.refund(account, request_id, reason=reason)
        if self.tracing is not None:
            work = self.tracing.run("redis refund", work, {"creditgate.reason": reason})
        try:
            settlement = await work
        except Unavailable as exc:
            log.warning("refund failed, retrying: %s", exc, extra=_rid(request_id))
            self.inflight.spawn(self._refund_later(account, request_id, reason))
            return None
        self._closed(request_id)
        self._count_refund(settlement, reason)
        return settlement.account

    async def _refund_later(self, account: str, request_id: str, reason: str) -> None:
        async def attempt() -> bool:
            settlement = await self.engine.refund(account, request_id, reason=reason)
            self._count_refund(settlement, reason)
            return True

        try:
            await self._retry("refund", request_id, attempt)
        finally:
            self._closed(request_id)

    def _count_refund(self, settlement: Settlement, reason: str) -> None:
        if settlement.status == "refunded":
            self.metrics.refunds(reason.split(" ")[0]).inc()
            self.metrics.credits_refunded.inc(settlement.credits)

    def keep_alive(self, account: str, request_id: str) -> Callable[[], None]:
        """While the request is alive, push its reservation's deadline out every third of the
        hold, so the reaper refunds only reservations whose replica is gone; returns the stop.

        One timer for all of the process's requests (``_Beats``): most requests end long
        before their first beat, and then an entry in a dict is all this costs them.
        """
        return self._beats.start(account, request_id)

    def release(self, account: str, request_id: str) -> None:
        """Refund a reservation that may or may not exist, in the background, retried while
        Redis fails (a reserve that failed may have held all the same)."""

        async def attempt() -> bool:
            await self.engine.refund(account, request_id, reason="reserve interrupted")
            return True

        async def release() -> None:
            try:
                await attempt()
            except Unavailable:
                await self._retry("release", request_id, attempt)

        self.inflight.spawn(release())

    def settle(self, account: str, request_id: str, tokens: int, charge: int | None = None) -> None:
        """Charge the reservation without waiting: the answer has gone out. The engine defers
        the call to share the next reserve's round trip; a failed or ``missing`` attempt is
        retried in a task of its own (``_charge``). Shutdown awaits both (``InFlight``).
        ``charge``: a metered request's credits, the rest of its hold given back."""
        settled = self.engine.settle_soon(account, request_id, tokens, charge)
        self.inflight.track(settled).add_done_callback(
            functools.partial(self._settled, account, request_id, tokens, charge)
        )

    def _settled(
        self,
        account: str,
        request_id: str,
        tokens: int,
        charge: int | None,
        settled: asyncio.Future[Settlement],
    ) -> None:
        if settled.cancelled():  # shutdown gave up waiting: the reaper refunds the hold
            log.error("settle abandoned at shutdown", extra={"request_id": request_id})
            self._closed(request_id)
            return
        error = settled.exception()
        if error is None and settled.result().status != "missing":
            self._count(request_id, settled.result())
            return
        if error is not None:
            if not isinstance(error, Unavailable):
                log.error("settle failed: %r", error, extra={"request_id": request_id})
        retry = self._charge(account, request_id, tokens, charge, restore_first=error is None)
        self.inflight.spawn(retry).add_done_callback(lambda _: self._closed(request_id))

    async def _charge(
        self,
        account: str,
        request_id: str,
        tokens: int,
        charge: int | None,
        *,
        restore_first: bool,
    ) -> None:
        """Settle again after a failed attempt (``_retry``): one lost round trip, or a Redis
        failing over, must not turn a success into the reaper's refund. An account Redis lost
        meanwhile is restored from the store first (``restore_first``: the last answer was
        ``missing``)."""
        must_restore = restore_first

        async def attempt() -> bool:
            nonlocal must_restore
            if must_restore:
                await self.restore(account)
            settled = await self.engine.settle(account, request_id, tokens, charge=charge)
            if settled.status == "missing":
                must_restore = True
                return False
            self._count(request_id, settled)
            return True

        await self._retry("settle", request_id, attempt)

    def _count(self, request_id: str, settled: Settlement) -> None:
        self._closed(request_id)
        if settled.status == "charged":  # not a repeat of a settle that had landed
            self.metrics.credits_charged.inc(settled.credits)
            if settled.returned:
                self.metrics.credits_refunded.inc(settled.returned)


def _rid(request_id: str) -> dict[str, str]:
    return {"request_id": request_id}


class _Beat:
    """One request's keep-alive: its account, when its next beat is due, its extend in flight."""

    __slots__ = ("account", "due", "extending")

    def __init__(self, account: str, due: float) -> None:
        self.account = account
        self.due = due
        self.extending: asyncio.Future[None] | None = None


class _Beats:
    """The keep-alive beats of every request of the process (``Holds.keep_alive``): one timer.

    A timer per request cost each request its making and its cancelling, though almost none
    lives to its first beat. Here a request is an entry in a dict while it is alive; one timer,
    armed while any request is, goes off every half beat and extends each hold whose beat is
    due (a third of the hold after the reserve or the last extend). So a beat comes at most
    half a beat late: long before the deadline, a whole hold after the last one. An extend
    that failed is logged and the beats go on; they stop once the hold is gone, and a request
    that ends stops its extend in flight.

    No reference cycle outlives a request: the dict's entry goes at its end, and an extend's
    task and its beat let go of each other when the extend ends.
    """

    __slots__ = ("_alive", "_engine", "_extended", "_timer")

    def __init__(self, engine: CreditEngine, extended: Callable[[str], None]) -> None:
        self._engine = engine
        self._extended = extended
        self._alive: dict[str, _Beat] = {}
        self._timer: asyncio.TimerHandle | None = None

    def _every(self) -> float:
        return self._engine.hold_ms / 3000

    def start(self, account: str, request_id: str) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        every = self._every()
        self._alive[request_id] = _Beat(account, loop.time() + every)
        if self._timer is None:
            self._timer = loop.call_later(every / 2, self._sweep)
        return functools.partial(self._stop, request_id)

    def _stop(self, request_id: str) -> None:
        beat = self._alive.pop(request_id, None)
        if beat is not None and beat.extending is not None:
            beat.extending.cancel()

    def _sweep(self) -> None:
        self._timer = None
        if not self._alive:
            return  # armed again by the next request
        loop = asyncio.get_running_loop()
        now = loop.time()
        for request_id, beat in self._alive.items():
            if beat.due <= now and beat.extending is None:
                beat.extending = asyncio.ensure_future(self._extend(request_id, beat))
        self._timer = loop.call_later(self._every() / 2, self._sweep)

    async def _extend(self, request_id: str, beat: _Beat) -> None:
        try:
            try:
                alive = await self._engine.extend(beat.account, request_id)
            except Unavailable as exc:
                # The answer goes on; at worst the reaper refunds it at the old deadline.
                log.warning("extending the reservation failed: %s", exc)
                alive = True
            else:
                self._extended(request_id)  # the deadline the retries stop short of moved
        finally:
            beat.extending = None
        if alive:
            beat.due = asyncio.get_running_loop().time() + self._every()
        elif self._alive.get(request_id) is beat:
            del self._alive[request_id]  # the hold is gone: no more beats
