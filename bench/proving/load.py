"""The proof's clients: mixed proxied calls from many tasks, and an operator changing accounts
during the load. Every attempt is recorded as the client saw it (``Call``); nothing here
judges what it saw (``reconcile`` does).

Kinds of call (weights in ``MIX``): fast JSON, SSE streams, backend failures (4xx and 5xx),
slow answers, calls the client abandons (it closes the connection after a random wait, before
or during the answer), streams the backend breaks, calls the backend never answers (the
gateway's timeout), ``Idempotency-Key`` retries (the same key sent two or three times, some
at once), and usage reads. Each goes to a random replica.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field

import aiohttp

ROUTES = ("/api/projects/", "/api/review/", "/api/costly/")
COST = {"/api/projects/": 1, "/api/review/": 1, "/api/costly/": 3}

MIX = {
    "json": 36,
    "sse": 14,
    "fail": 8,
    "slow": 5,
    "abandon": 9,
    "break": 4,
    "hang": 2,
    "idempotent": 10,
    "usage": 4,
}


@dataclass
class Account:
    account_id: str
    api_key: str
    tier: str


@dataclass
class Call:
    """One attempt, as the client saw it."""

    kind: str
    account: str
    replica: int
    route: str
    started: float
    ended: float = 0.0
    status: int | None = None
    """None: no answer (the connection failed or was cut before the status line)."""
    request_id: str | None = None
    charged: int | None = None
    """``X-Credits-Charged``, None when absent."""
    error: str | None = None
    """The JSON ``error`` code of a 4xx / 5xx from the gateway."""
    complete: bool = False
    """The whole answer arrived (an SSE stream through ``[DONE]``)."""
    abandoned: bool = False
    replayed: bool = False
    idem_key: str | None = None
    failure: str | None = None


@dataclass
class AdminOp:
    account: str
    op: str
    body: dict[str, object]
    key: str
    status: int | None = None
    attempts: int = 0


@dataclass
class Load:
    """Drives the calls; ``replicas`` is read on every call (a killed one is refused)."""

    replicas: list[str]
    accounts: list[Account]
    admin_token: str
    rng: random.Random
    calls: list[Call] = field(default_factory=list)
    admin_ops: list[AdminOp] = field(default_factory=list)
    stopping: bool = False

    def _pick(self, route: str | None = None) -> tuple[int, Account, str]:
        replica = self.rng.randrange(len(self.replicas))
        account = self.rng.choice(self.accounts)
        return replica, account, route or self.rng.choice(ROUTES)

    async def client(self, session: aiohttp.ClientSession) -> None:
        kinds, weights = zip(*MIX.items(), strict=True)
        while not self.stopping:
            kind = self.rng.choices(kinds, weights)[0]
            replica, account, route = self._pick()
            if kind == "idempotent":
                await self._idempotent(session, replica, account, route)
            elif kind == "usage":
                await self._usage(session, replica, account)
            else:
                await self._proxied(session, kind, replica, account, route)

    def _target(self, kind: str, route: str) -> tuple[str, str]:
        """(method, path and query) of a call of ``kind``."""
        if kind == "json":
            return "POST", f"{route}json"
        if kind == "sse":
            return "POST", f"{route}sse?events={self.rng.randint(1, 6)}&gap=0.05"
        if kind == "fail":
            return "POST", f"{route}fail?code={self.rng.choice([400, 404, 500, 502, 503])}"
        if kind == "slow":
            return "POST", f"{route}json?delay={self.rng.uniform(0.5, 2.0):.2f}"
        if kind == "abandon":
            if self.rng.random() < 0.5:
                return "POST", f"{route}sse?events=20&gap=0.1"
            return "POST", f"{route}json?delay=1.5"
        return "POST", f"{route}{kind}"

    async def _proxied(
        self,
        session: aiohttp.ClientSession,
        kind: str,
        replica: int,
        account: Account,
        route: str,
        idem_key: str | None = None,
    ) -> Call:
        method, target = self._target(kind, route)
        call = Call(kind, account.account_id, replica, route, time.monotonic(), idem_key=idem_key)
        self.calls.append(call)
        headers = {"Authorization": f"Bearer {account.api_key}", "Content-Type": "application/json"}
        if idem_key is not None:
            headers["Idempotency-Key"] = idem_key
        url = self.replicas[replica] + target
        attempt = self._send(session, method, url, headers, call)
        try:
            if kind == "abandon":
                await asyncio.wait_for(attempt, self.rng.uniform(0.05, 1.2))
            else:
                await asyncio.wait_for(attempt, 30)
        except TimeoutError:
            call.abandoned = kind == "abandon"
            call.failure = call.failure or "client timeout"
        except (aiohttp.ClientError, OSError) as exc:
            call.failure = type(exc).__name__
        call.ended = time.monotonic()
        return call

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        headers: dict[str, str],
        call: Call,
    ) -> None:
        async with session.request(method, url, headers=headers, data=b'{"prompt": "x"}') as r:
            call.status = r.status
            call.request_id = r.headers.get("X-Request-Id")
            charged = r.headers.get("X-Credits-Charged")
            call.charged = int(charged) if charged is not None else None
            call.replayed = r.headers.get("Idempotent-Replayed") == "true"
            body = await r.read()
            if r.status >= 400 and body.startswith(b"{"):
                try:
                    error = (await r.json(content_type=None)).get("error")
                    call.error = error if isinstance(error, str) else None
                except ValueError:
                    pass
            stream = r.headers.get("Content-Type", "").startswith("text/event-stream")
            call.complete = not stream or body.endswith(b"data: [DONE]\n\n")

    async def _idempotent(
        self, session: aiohttp.ClientSession, replica: int, account: Account, route: str
    ) -> None:
        """Two or three attempts with one key, on any replicas: sequential or at once."""
        key = f"proof-{uuid.uuid4().hex}"
        kind = self.rng.choice(["json", "json", "fail", "slow"])
        attempts = self.rng.randint(2, 3)
        if self.rng.random() < 0.4:
            await asyncio.gather(
                *(
                    self._proxied(
                        session, kind, self.rng.randrange(len(self.replicas)), account, route, key
                    )
                    for _ in range(attempts)
                )
            )
            return
        for _ in range(attempts):
            await self._proxied(session, kind, replica, account, route, key)
            replica = self.rng.randrange(len(self.replicas))

    async def _usage(self, session: aiohttp.ClientSession, replica: int, account: Account) -> None:
        headers = {"Authorization": f"Bearer {account.api_key}"}
        try:
            async with session.get(
                f"{self.replicas[replica]}/api/user/usage", headers=headers
            ) as r:
                await r.read()
        except (aiohttp.ClientError, OSError):
            pass

    # -- the operator -----------------------------------------------------------------------

    async def operator(self, session: aiohttp.ClientSession, every: float) -> None:
        """Grants and tier changes on random accounts while the clients run."""
        while not self.stopping:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * every)
            account = self.rng.choice(self.accounts)
            choices: list[tuple[str, dict[str, object]]] = [
                ("grant", {"credits": self.rng.randint(1, 20), "reason": "proof"}),
                ("grant", {"credits": self.rng.randint(1, 5), "reason": "proof"}),
                ("upgrade", {"tier": self.rng.choice(["pro", "enterprise"]), "months": 1}),
                ("downgrade", {"reason": "proof"}),
                ("renew", {"months": 1}),
            ]
            op, body = self.rng.choice(choices)
            admin = AdminOp(account.account_id, op, dict(body), f"proof-op-{uuid.uuid4().hex}")
            self.admin_ops.append(admin)
            asyncio.get_running_loop().create_task(self.settle_admin(session, admin))

    async def settle_admin(
        self, session: aiohttp.ClientSession, admin: AdminOp, *, until: float = 0.0
    ) -> None:
        """Send ``admin`` with its Idempotency-Key until a definite answer (not 5xx, not a
        failed connection, not 409 in flight), as an operator's script would."""
        headers = {"Authorization": f"Bearer {self.admin_token}", "Idempotency-Key": admin.key}
        deadline = until or time.monotonic() + 120
        while time.monotonic() < deadline:
            admin.attempts += 1
            url = f"{self.rng.choice(self.replicas)}/admin/accounts/{admin.account}/{admin.op}"
            try:
                async with session.post(url, json=admin.body, headers=headers) as r:
                    body = await r.read()
                    if r.status < 500 and not (r.status == 409 and b"in flight" in body):
                        admin.status = r.status
                        return
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.5)
