"""The admin operations, written once: the table the /admin API and the CLI both serve.

Each ``Operation`` holds all one operator task needs: its route (method, path under /admin,
status), its command (``accounts grant``) and the flags that fill the API's request, and
``run``: check the request (gateway.accounts.validation), act (gateway.accounts.operations)
and answer (gateway.admin.views). The front ends only adapt: ``handlers`` turns an HTTP
request into a ``Call``, ``cli`` turns parsed flags into one, both call ``perform`` (a write
with an Idempotency-Key runs once: gateway.admin.idempotency) and render the ``Outcome``.

What differs between them is a ``FrontEnd``; both are defined here, side by side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.accounts import keyfields, validation
from gateway.accounts import operations as accounts
from gateway.accounts.history import ledger_entry_view
from gateway.accounts.keyviews import key_views, one_key_view
from gateway.admin import idempotency
from gateway.admin.idempotency import Answer, Outcome
from gateway.admin.views import account_view, record_view
from gateway.credits.engine import TierAction
from gateway.credits.results import AccountState
from gateway.errors import InvalidRequest
from gateway.services import Services

Part = Literal["path", "query", "body"]
"""Where in the API's request a value goes."""


@dataclass(frozen=True, slots=True)
class FrontEnd:
    """What differs between the front ends; all the rest is the table's."""

    actor: str
    """Who the ledger names for a change: ``"<actor>: <reason>"``."""
    key_id_field: str
    """A key id's name in errors: what the caller typed it as."""
    page_limit: int
    """The largest page a list may ask for."""
    page_error: str
    """What a page size out of bounds is told, in the front end's words."""
    idempotency_field: str
    """What the caller names an Idempotency-Key: a header, a flag."""


API_PAGE_LIMIT = 200
CLI_PAGE_LIMIT = 1000
"""The shell may page further: nothing there waits on one answer."""

API = FrontEnd(
    actor="admin",
    key_id_field="keyId",
    page_limit=API_PAGE_LIMIT,
    page_error=f"query 'limit' must be an integer between 1 and {API_PAGE_LIMIT}",
    idempotency_field="Idempotency-Key",
)
CLI = FrontEnd(
    actor="cli",
    key_id_field="KEY_ID",
    page_limit=CLI_PAGE_LIMIT,
    page_error=f"--limit must be between 1 and {CLI_PAGE_LIMIT}",
    idempotency_field="--idempotency-key",
)


@dataclass(frozen=True, slots=True)
class Call:
    """One request to an operation, as a front end received it.

    ``path`` and ``query`` hold what the API's URL does (for the CLI: its positionals and
    paging flags); ``body`` reads the JSON body (for the CLI: its other flags, named as the
    body's fields). An operation reads the body after checking the path, so a bad path is
    the error reported, and an operation without a body never reads one.
    ``idempotency_key``: the caller's, for a write (the CLI sends one per command); checked
    by ``Operation.perform``.
    """

    front: FrontEnd
    path: Mapping[str, object]
    query: Mapping[str, object]
    body: Callable[[], Awaitable[Mapping[str, Any]]]
    idempotency_key: str | None = None

    def account_id(self) -> str:
        return validation.account_id(self.path["account_id"], field="id")

    def key_id(self) -> str:
        return validation.key_id(self.path["key_id"], field=self.front.key_id_field)

    def reason(self, given: str) -> str:
        return accounts.attributed(self.front.actor, given)

    def request_id(self) -> str | None:
        """The request id the engine applies this call's change once under: derived from its
        Idempotency-Key, the same for every retry on any replica; None: a new one."""
        return self._derived("request", "op_", 24)

    def new_account_id(self) -> str | None:
        """The id of an account created without one: derived from the Idempotency-Key, so a
        retry that runs again is refused by the store instead of making a second account."""
        return self._derived("account", "acct_", 16)

    def _derived(self, kind: str, prefix: str, length: int) -> str | None:
        key = self.idempotency_key
        if key is None:
            return None
        return prefix + idempotency.derived_id(self.front.actor, key, kind, length)

    def page(
        self, cursor: str, check: Callable[[object], str], *, default: int
    ) -> tuple[int, str | None]:
        """The page asked for: its size within this front end's limit, and its cursor."""
        validation.only_fields(self.query, ("limit", cursor))
        raw = self.query.get("limit", default)
        # A URL's query is text; the CLI's flag is an int already.
        # (isdigit alone passes '³', which int() refuses: a 500 where a 400 belongs.)
        size = int(raw) if isinstance(raw, str) and raw.isascii() and raw.isdigit() else raw
        if not isinstance(size, int) or not 1 <= size <= self.front.page_limit:
            raise InvalidRequest(self.front.page_error)
        given = self.query.get(cursor)
        return size, None if given is None else check(given)


Run = Callable[[Services, Call], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Flag:
    """A command-line argument, and the field of the API's request its value fills.

    The argument is ``--<spelling>`` (default: the name), or ``<name>`` when positional;
    argparse keeps its value under the field's name. ``options`` are argparse's keywords
    (help, type, ...). ``pages``: it takes a list's ``next``, to ask for the following page.
    ``clears``: a second flag, ``--<clears>``, that sends the field as null (a PATCH's
    "no limit").
    """

    part: Part
    name: str
    positional: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    pages: bool = False
    spelling: str | None = None
    clears: str | None = None

    @property
    def flag(self) -> str:
        """How the command line writes it."""
        return self.name if self.positional else f"--{self.spelling or self.name}"


def argument(part: Part, name: str, **options: Any) -> Flag:
    return Flag(part, name, positional=True, options=options)


def option(
    part: Part, name: str, *, spelling: str | None = None, clears: str | None = None, **options: Any
) -> Flag:
    return Flag(part, name, options=options, spelling=spelling, clears=clears)


def cursor(name: str, **options: Any) -> Flag:
    return Flag("query", name, options=options, pages=True)


@dataclass(frozen=True, slots=True)
class Command:
    """How the CLI offers an operation: ``creditgate <group> <action>``, its help, its flags."""

    group: str
    action: str
    help: str
    flags: tuple[Flag, ...]


@dataclass(frozen=True, slots=True)
class Operation:
    """One operator task: how the API routes it, what it does, and how the CLI names it."""

    method: str
    path: str
    """Under /admin, with Starlette's ``{account_id}`` and ``{key_id}``."""
    run: Run
    status: int = 200
    command: Command | None = None
    """None: API only."""

    @property
    def name(self) -> str:
        return self.run.__name__

    @property
    def writes(self) -> bool:
        """A change: it takes an Idempotency-Key (reads are safe to repeat as they are)."""
        return self.method != "GET"

    async def perform(self, services: Services, call: Call) -> Outcome:
        """Run this operation for ``call``: once per Idempotency-Key for a write given one."""
        key = call.idempotency_key
        if not self.writes or key is None:
            return Outcome(await self.run(services, call))
        validation.idempotency_key(key, field=call.front.idempotency_field)
        try:
            body: Mapping[str, Any] | None = await call.body()
        except InvalidRequest:
            body = None
        asked = idempotency.fingerprint(self.method, self.path, call.path, body)
        return await idempotency.run_once(
            services.redis, call.front.actor, key, asked, lambda: self.run(services, call)
        )

    def cli(self, words: str, help: str, *flags: Flag) -> Operation:
        """This operation, offered by the CLI too as ``creditgate <words>``."""
        group, action = words.split()
        return replace(self, command=Command(group, action, help, flags))


# -- the operations ----------------------------------------------------------------------------


async def create_account(services: Services, call: Call) -> Answer:
    wanted = validation.create_account(await call.body(), services.settings.tiers)
    created = await accounts.create_account(
        services,
        account_id=wanted.account_id or call.new_account_id(),
        email=wanted.email,
        tier=wanted.tier,
        months=wanted.months,
        reason=call.reason(wanted.reason or "account created"),
        request_id=call.request_id(),
    )
    report = await accounts.account_report(services, created.account_id)
    views = await key_views(services, created.account_id, report.keys)
    account = account_view(created.state, report.record, views)
    return {"account": account, "apiKey": created.api_key, "keyId": created.key_id}


async def show_account(services: Services, call: Call) -> Answer:
    report = await accounts.account_report(services, call.account_id())
    views = await key_views(services, report.state.account, report.keys)
    return {"account": account_view(report.state, report.record, views)}


def _after(value: object) -> str:
    return validation.account_id(value, field="after")


async def list_accounts(services: Services, call: Call) -> Answer:
    limit, after = call.page("after", _after, default=100)
    records = await accounts.list_accounts(services, limit=limit, after=after)
    following = records[-1].account_id if len(records) == limit else None
    return {"accounts": [record_view(r) for r in records], "next": following}


async def grant(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    wanted = validation.grant(await call.body())
    reason = call.reason(wanted.reason)
    granted = await accounts.grant(
        services, account_id, wanted.credits, reason=reason, request_id=call.request_id()
    )
    return _changed(granted)


async def upgrade(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    wanted = validation.upgrade(await call.body(), services.settings.tiers)
    return await _change_tier(
        services, call, account_id, "upgrade", wanted.reason, tier=wanted.tier, months=wanted.months
    )


async def downgrade(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    wanted = validation.downgrade(await call.body())
    return await _change_tier(services, call, account_id, "downgrade", wanted.reason)


async def renew(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    wanted = validation.renew(await call.body())
    return await _change_tier(
        services, call, account_id, "renew", wanted.reason, months=wanted.months
    )


async def _change_tier(
    services: Services,
    call: Call,
    account_id: str,
    action: TierAction,
    reason: str,
    *,
    tier: str = "",
    months: int = 0,
) -> Answer:
    state = await accounts.change_tier(
        services,
        account_id,
        action,
        tier=tier,
        months=months,
        reason=call.reason(reason),
        request_id=call.request_id(),
    )
    return _changed(state)


def _changed(state: AccountState) -> Answer:
    return {"account": account_view(state)}


async def create_key(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    wanted = keyfields.create_key(
        await call.body(), keyfields.configured_routes(services.settings), now=datetime.now(UTC)
    )
    key = await accounts.create_key(services, account_id, name=wanted.name, limits=wanted.limits)
    answer: Answer = {"apiKey": key.api_key, "keyId": key.key_id, "prefix": key.display_prefix}
    if key.record is not None:
        answer["key"] = await one_key_view(services, account_id, key.record)
    return answer


async def update_key(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    key_id = call.key_id()
    changes = keyfields.key_changes(
        await call.body(), keyfields.configured_routes(services.settings), now=datetime.now(UTC)
    )
    changed = await accounts.update_key(services, account_id, key_id, changes=changes)
    return {"key": await one_key_view(services, account_id, changed)}


async def list_keys(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    keys = await accounts.list_keys(services, account_id)
    return {"keys": await key_views(services, account_id, keys)}


async def revoke_key(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    key_id = call.key_id()
    revoked = await accounts.revoke_key(services, account_id, key_id)
    return {"key": await one_key_view(services, account_id, revoked)}


async def ledger(services: Services, call: Call) -> Answer:
    account_id = call.account_id()
    limit, before = call.page("before", validation.ledger_cursor, default=50)
    page = await accounts.ledger_page(services, account_id, limit=limit, before=before)
    return {"entries": [ledger_entry_view(e) for e in page.entries], "next": page.next}


# -- the table ---------------------------------------------------------------------------------

ID = argument("path", "account_id", metavar="ID")
KEY_ID = argument("path", "key_id", metavar="KEY_ID")
NEW_ID = option("body", "id", metavar="ACCOUNT_ID", help="default: acct_<random>")
EMAIL = option("body", "email")
ANY_TIER = option("body", "tier", default="free")
PAID_TIER = option("body", "tier", required=True)
SPAN = option("body", "months", type=int, help="subscription length (paid tiers)")
MONTHS = option("body", "months", type=int, required=True)
CREDITS = argument("body", "credits", type=int)
REASON = option("body", "reason")
STATED_REASON = option("body", "reason", required=True)
KEY_NAME = option("body", "name")
EXPIRES = option(
    "body", "expiresAt", spelling="expires-at", metavar="ISO", help="e.g. 2027-01-31T00:00:00Z"
)
CREDIT_LIMIT = option(
    "body",
    "creditLimit",
    spelling="credit-limit",
    type=int,
    metavar="N",
    help="credits the key may spend per monthly period",
)
RPM = option(
    "body", "requestsPerMinute", spelling="rpm", type=int, metavar="N", help="requests per minute"
)
ROUTE = option(
    "body",
    "routes",
    spelling="route",
    action="append",
    metavar="PREFIX",
    help="a path prefix the key may call (repeatable; default: every route)",
)
KEY_LIMITS = (EXPIRES, CREDIT_LIMIT, RPM, ROUTE)
KEY_CHANGES = (
    KEY_NAME,
    replace(EXPIRES, clears="no-expiry"),
    replace(CREDIT_LIMIT, clears="no-credit-limit"),
    replace(RPM, clears="no-rpm"),
    replace(ROUTE, clears="all-routes"),
)
LIMIT = option("query", "limit", type=int, default=100)
AFTER = cursor("after", help="list ids after this one")

ACCOUNT = "/accounts/{account_id}"

OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/accounts", create_account, 201).cli(
        "accounts create", "a new account and its first key", NEW_ID, EMAIL, ANY_TIER, SPAN, REASON
    ),
    Operation("GET", ACCOUNT, show_account).cli(
        "accounts show", "an account's status and keys", ID
    ),
    Operation("GET", "/accounts", list_accounts).cli(
        "accounts list", "accounts in the store, by id", LIMIT, AFTER
    ),
    Operation("POST", f"{ACCOUNT}/grant", grant).cli(
        "accounts grant", "add bonus credits", ID, CREDITS, STATED_REASON
    ),
    Operation("POST", f"{ACCOUNT}/upgrade", upgrade).cli(
        "accounts upgrade", "subscribe to a paid tier", ID, PAID_TIER, MONTHS, REASON
    ),
    Operation("POST", f"{ACCOUNT}/downgrade", downgrade).cli(
        "accounts downgrade", "back to free", ID, REASON
    ),
    Operation("POST", f"{ACCOUNT}/renew", renew).cli(
        "accounts renew", "extend the subscription", ID, MONTHS, REASON
    ),
    Operation("POST", f"{ACCOUNT}/keys", create_key, 201).cli(
        "keys create", "a new API key (shown once), with its own limits", ID, KEY_NAME, *KEY_LIMITS
    ),
    Operation("GET", f"{ACCOUNT}/keys", list_keys).cli("keys list", "an account's keys", ID),
    Operation("PATCH", f"{ACCOUNT}/keys/{{key_id}}", update_key).cli(
        "keys update", "change a key's name or limits", ID, KEY_ID, *KEY_CHANGES
    ),
    Operation("DELETE", f"{ACCOUNT}/keys/{{key_id}}", revoke_key).cli(
        "keys revoke", "stop a key on every replica", ID, KEY_ID
    ),
    Operation("GET", f"{ACCOUNT}/ledger", ledger),
)
"""In the CLI's order, which its help follows."""
