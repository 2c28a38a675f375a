"""Load through gateway processes while something fails, and the books checked afterwards.

``Load`` runs many concurrent HTTP clients over several gateway replicas, each request a
cost-1 call whose backend answers ``tokens`` tokens, and keeps every answer with its time.
``balanced`` then holds only when the promise held: every 2xx charged exactly once (credits
and tokens), every other answer left nothing held, no account served past its credits, no
reservation still open. ``outage`` reads the 503s as a window in seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import create_engine, text

from gateway.credits import keys
from gateway.errors import Unavailable
from gateway.services import Services
from store.database import normalize_url, upgrade
from tests.support.gateways import NewAccount

TOKENS = 250
SERVED = frozenset({200})
REFUSED = frozenset({429, 503})
"""What a request may be answered through a fault: nothing else (no 500, no 502)."""


@dataclass(frozen=True, slots=True)
class Answer:
    account: str
    status: int
    """0: no HTTP answer at all (the gateway itself failed)."""
    at: float


@dataclass
class Load:
    urls: list[str]
    accounts: list[NewAccount]
    clients: int = 30
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, index: int) -> None:
        url = self.urls[index % len(self.urls)]
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            turn = index
            while not self._stop.is_set():
                acct = self.accounts[turn % len(self.accounts)]
                turn += 1
                try:
                    response = await http.post(
                        f"/api/projects/json?tokens={TOKENS}", headers=acct.auth, content=b"{}"
                    )
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append(Answer(acct.account_id, status, time.monotonic()))
                if status != 200:
                    await asyncio.sleep(0.01)  # a refused client backs off a little

    async def warm(self, served: int = 100, *, within: float = 30.0) -> None:
        """Wait until ``served`` requests were answered 2xx: the replicas' first requests
        (connections, key lookups) are slow, and a fault must hit a load in full swing."""
        deadline = time.monotonic() + within
        while sum(1 for a in self.answers if a.status in SERVED) < served:
            assert time.monotonic() < deadline, f"no load within {within} s: {self.statuses()}"
            await asyncio.sleep(0.05)

    def statuses(self) -> Counter[int]:
        return Counter(answer.status for answer in self.answers)

    def served(self, account: str) -> int:
        return sum(1 for a in self.answers if a.account == account and a.status in SERVED)

    def outage(self, after: float) -> tuple[int, float]:
        """The 503s answered after ``after``, and the seconds from the first to the last."""
        times = [a.at for a in self.answers if a.status == 503 and a.at >= after]
        return len(times), (max(times) - min(times)) if times else 0.0


async def open_holds(services: Services) -> int:
    """Reservations still held in Redis, whichever bucket."""
    held = 0
    for bucket in range(keys.BUCKETS):
        found = await services.redis.zrangebyscore(
            keys.deadlines(bucket), "-inf", "+inf", start=0, num=1000
        )
        held += len(found)
    return held


async def balanced(
    services: Services, load: Load, credits: dict[str, int], *, within: float = 30.0
) -> float:
    """Wait until every account's books match the answers its requests got (settles and
    refunds retried by the gateways land after the fault); the seconds it took. Fails
    saying which account is off when they do not within ``within`` seconds."""
    started = time.monotonic()
    wrong: list[str] = []
    while True:
        try:
            wrong = await _unbalanced(services, load, credits)
            if not wrong and await open_holds(services) == 0:
                return time.monotonic() - started
        except (Unavailable, RedisConnectionError):  # the test's own connection, closed by a
            pass  # restart (through the engine, or read directly): once more
        if time.monotonic() - started > within:
            raise AssertionError(f"books not balanced after {within} s: {wrong[:5]}")
        await asyncio.sleep(0.1)


async def _unbalanced(services: Services, load: Load, credits: dict[str, int]) -> list[str]:
    wrong = []
    for account, initial in credits.items():
        state = await services.credits.status(account)
        served = load.served(account)
        assert state is not None
        got = (initial - state.credits_remaining, state.total_tokens)
        if got != (served, served * TOKENS):
            wrong.append(f"{account}: charged {got}, served {served}")
        assert served <= initial, f"{account} served {served} on {initial} credits"
    return wrong


def spare_pg_database(url: str, suffix: str) -> str:
    """A migrated, empty PostgreSQL database beside the test one (its name + ``suffix``):
    a store of its own for a test whose processes audit the whole store."""
    test_db = normalize_url(url)
    spare = f"{test_db.database}_{suffix}"
    admin = create_engine(test_db.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{spare}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{spare}"'))
    finally:
        admin.dispose()
    spare_url = test_db.set(database=spare).render_as_string(hide_password=False)
    upgrade(spare_url)
    return spare_url
