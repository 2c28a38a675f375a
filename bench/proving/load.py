"""The proof's clients: mixed proxied calls from many tasks, and an operator changing accounts
during the load. Every attempt is recorded as the client saw it (``Call``); nothing here
judges what it saw (``reconcile`` does).

Kinds of call (weights in ``MIX``): fast JSON, SSE streams, backend failures (4xx and 5xx),
slow answers, calls the client abandons (it closes the connection after a random wait, before
or during the answer), streams the backend breaks, calls the backend never answers (the
gateway's timeout), ``Idempotency-Key`` retries (the same key sent two or three times, some
at once), and usage reads. Each goes to a random replica.

``/api/llm/`` is metered (``pricing = "tokens"``): its calls ask the backend to report a random
number of tokens (``?tokens=``, some beyond what ``METERED`` credits pay for) and some name
``max_tokens`` in their body. An account may have a second key with limits of its own
(``Key``): a client uses it for about half of that account's calls, on any route, so the
key's refusals (and 403s outside its ``routes``) come with the load.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field

import aiohttp

ROUTES = ("/api/projects/", "/api/review/", "/api/costly/", "/api/llm/")
COST = {"/api/projects/": 1, "/api/review/": 1, "/api/costly/": 3, "/api/llm/": 1}
METERED = {"/api/llm/": 8}
"""The metered routes and their ``max_credits``."""
TOKENS_PER_CREDIT = 2000

Sent = tuple[str, str, str, str, bytes, int | None]
"""What a call sends: method, path and query, key id, key secret, body, its ``max_tokens``."""

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
class Key:
    """An API key as the load made it, with the limits it was given (None: no limit)."""

    key_id: str
    api_key: str
    credit_limit: int | None = None
    requests_per_minute: int | None = None
    routes: tuple[str, ...] | None = None
    expires: float | None = None
    """When it expires, on the monotonic clock of ``Call.started``."""

    def allows(self, route: str) -> bool:
        allowed = self.routes
        return allowed is None or any(route.startswith(r.rstrip("/") + "/") for r in allowed)


@dataclass
class Account:
    account_id: str
    api_key: str
    tier: str
    key_id: str = ""
    limited: list[Key] = field(default_factory=list)
    """Its keys with limits of their own, beside ``api_key`` (which has none)."""


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
    key_id: str = ""
    """The API key the call was sent with."""
    max_tokens: int | None = None
    """The ``max_tokens`` its body named."""


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

    def _key(self, account: Account) -> tuple[str, str]:
        """(key id, secret) to send: a limited key for about half the calls of its account."""
        if account.limited and self.rng.random() < 0.5:
            key = self.rng.choice(account.limited)
            return key.key_id, key.api_key
        return account.key_id, account.api_key

    def _sent(self, kind: str, account: Account, route: str) -> Sent:
        return (*self._target(kind, route), *self._key(account), *self._body(route))

    def _body(self, route: str) -> tuple[bytes, int | None]:
        """The request body, and the ``max_tokens`` it names (some metered calls)."""
        if route in METERED and self.rng.random() < 0.4:
            limit = self.rng.randint(1, 20_000)
            return f'{{"prompt": "x", "max_tokens": {limit}}}'.encode(), limit
        return b'{"prompt": "x"}', None

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
        """(method, path and query) of a call of ``kind``; a metered one also asks for the
        tokens the backend reports."""
        method, target = self._path(kind, route)
        if route in METERED:
            tokens = self.rng.randint(1, 20_000)
            target += f"{'&' if '?' in target else '?'}tokens={tokens}"
        return method, target

    def _path(self, kind: str, route: str) -> tuple[str, str]:
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
        sent: Sent | None = None,
    ) -> Call:
        """``sent``: what an Idempotency-Key's attempts all send (else made here)."""
        method, target, key_id, secret, body, limit = sent or self._sent(kind, account, route)
        call = Call(kind, account.account_id, replica, route, time.monotonic(), idem_key=idem_key)
        call.key_id, call.max_tokens = key_id, limit
        self.calls.append(call)
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        if idem_key is not None:
            headers["Idempotency-Key"] = idem_key
        url = self.replicas[replica] + target
        attempt = self._send(session, method, url, headers, body, call)
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
        body: bytes,
        call: Call,
    ) -> None:
        async with session.request(method, url, headers=headers, data=body) as r:
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
        sent = self._sent(kind, account, route)
        if self.rng.random() < 0.4:
            await asyncio.gather(
                *(
                    self._proxied(
                        session,
                        kind,
                        self.rng.randrange(len(self.replicas)),
                        account,
                        route,
                        key,
                        sent,
                    )
                    for _ in range(attempts)
                )
            )
            return
        for _ in range(attempts):
            await self._proxied(session, kind, replica, account, route, key, sent)
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
