"""Reconciliation: Redis, the store's snapshots and the sum of the ledger, account by account.

After a sync pass the three agree: the store's snapshot equals the account's state in Redis
field by field (version included), and the ledger's plan and bonus deltas add up to the
snapshot's plan and bonus credits. Credits held by open reservations are still the account's
for the store and the ledger (a reserve emits nothing; its settle or refund does), so Redis's
side is its available credits plus its held ones (``hp``, ``hb``). Every disagreement is
reported.

Redis is read from the account's state directly (``gateway.credits.packed``), not through the
``status`` script: the audit must not change what it audits (``status`` would apply a due
rollover and emit events the store has not seen yet). An account the store has and Redis lacks
is not a disagreement (Redis lost it; it is restored on next touch) and is listed apart. Events
still in the outbox make Redis legitimately ahead of the store, so the report says how many
there are: audit after a sync pass, with the gateway quiet, for a clean answer.

Beyond equal fields, each account is checked (``sync.checks``): its ledger's versions strictly
increase in stream order up to the snapshot's, its rows' tokens add up to its lifetime tokens,
no balance is negative (Redis, the store, the ledger's running sums), no reservation is open
past its deadline, its open reservations hold what its state says it holds, and the daily
usage roll-up's rows are its ledger's sums (one grouped pass over the ledger, as cheap as the
totals above).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.exceptions import RedisError
from sqlmodel import Session

from gateway.accounts.stored import in_store
from gateway.credits import keys, packed
from gateway.credits.client import RedisClient
from gateway.credits.results import HASH_FIELDS, SNAPSHOT_FIELDS, snapshot_values
from gateway.errors import Unavailable
from gateway.services import Services
from store import repository, usage_daily
from store.database import one_snapshot
from store.records import AccountRecord
from store.usage_daily import RollupMismatch
from sync.checks import (
    Finding,
    OpenHold,
    hold_findings,
    ledger_findings,
    redis_findings,
    rollup_findings,
)

PAGE = 1000
FACTS_PAGE = 500
"""Accounts whose ledger rows are read at once (and bound parameters of one query: SQLite
allows 999 in older builds)."""
HOLDS_PER_BUCKET = 1_000_000
DEFAULT_GRACE_MS = 10_000
"""How long past its deadline an open reservation may wait for the reaper (which runs every
sync pass) before the audit reports it."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One field of one account on which two sources disagree (None: the source lacks it)."""

    account: str
    what: str
    left: str
    left_value: object
    right: str
    right_value: object

    def __str__(self) -> str:
        return (
            f"{self.account}: {self.what}: {self.left}={self.left_value!r} "
            f"{self.right}={self.right_value!r}"
        )


@dataclass(slots=True)
class AuditReport:
    accounts: int = 0
    differences: list[Difference] = field(default_factory=list)
    absent_in_redis: list[str] = field(default_factory=list)
    """In the store, not in Redis: restored from the store on next touch."""
    unsynced_events: int = 0
    findings: list[Finding] = field(default_factory=list)
    """What the per-account checks found (``sync.checks``)."""

    @property
    def clean(self) -> bool:
        return not self.differences and not self.findings


def redis_view(state: dict[str, int | str] | None) -> dict[str, object] | None:
    """An account's state in Redis (``packed.account_state``) by snapshot field name, None when
    Redis lacks it; plan and bonus credits as the store counts them (held ones included)."""
    if state is None:
        return None
    view = dict(zip(SNAPSHOT_FIELDS, snapshot_values([state[k] for k in HASH_FIELDS]), strict=True))
    view["plan_credits"] = int(state["plan"]) + int(state["hp"])
    view["bonus_credits"] = int(state["bonus"]) + int(state["hb"])
    return view


async def redis_states(
    redis: RedisClient, accounts: list[str]
) -> list[dict[str, int | str] | None]:
    """The state in Redis of each account, None where Redis lacks it."""
    raw = await packed.read(redis, [keys.account_keys(account).state for account in accounts])
    return [packed.account_state(value) for value in raw]


def store_view(record: AccountRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in SNAPSHOT_FIELDS}


def compare(
    account: str,
    redis: dict[str, object] | None,
    record: AccountRecord | None,
    ledger: tuple[int, int] | None,
) -> list[Difference]:
    """The disagreements of one account's three views."""
    found: list[Difference] = []
    if record is None:
        if redis is not None:
            found.append(Difference(account, "account", "redis", "present", "store", None))
        if ledger is not None:
            found.append(Difference(account, "account", "ledger", "present", "store", None))
        return found
    stored = store_view(record)
    if redis is not None:
        for name, value in stored.items():
            if redis[name] != value:
                found.append(Difference(account, name, "redis", redis[name], "store", value))
    plan, bonus = ledger or (0, 0)
    if plan != record.plan_credits:
        found.append(
            Difference(account, "plan_credits", "ledger", plan, "store", record.plan_credits)
        )
    if bonus != record.bonus_credits:
        found.append(
            Difference(account, "bonus_credits", "ledger", bonus, "store", record.bonus_credits)
        )
    return found


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What the audit reads of the store, in one transaction: a few figures per account, and
    what the checks of each account's ledger rows found (the rows themselves, as many as
    the ledger has, are read a page of accounts at a time and let go)."""

    records: dict[str, AccountRecord]
    totals: dict[str, tuple[int, int]]
    ledger: dict[str, list[Finding]]
    rollup: dict[str, list[RollupMismatch]]


def _read_store(db: Session) -> StoreFacts:
    one_snapshot(db)  # its many reads agree with each other while the sync worker writes
    records: dict[str, AccountRecord] = {}
    after: str | None = None
    while True:
        page = repository.list_accounts(db, limit=PAGE, after=after)
        records.update((r.account_id, r) for r in page)
        if len(page) < PAGE:
            break
        after = page[-1].account_id
    rollup: dict[str, list[RollupMismatch]] = {}
    for mismatch in usage_daily.rollup_mismatches(db):
        rollup.setdefault(mismatch.account_id, []).append(mismatch)
    totals = repository.ledger_totals(db)
    return StoreFacts(records, totals, _ledger_findings(db, records, sorted(totals)), rollup)


def _ledger_findings(
    db: Session, records: dict[str, AccountRecord], ledgered: list[str]
) -> dict[str, list[Finding]]:
    """``ledger_findings`` of every account the store or its ledger has (one with neither
    has nothing to check), reading the ledger's rows ``FACTS_PAGE`` accounts at a time."""
    accounts = sorted(set(records).union(ledgered))
    found: dict[str, list[Finding]] = {}
    for start in range(0, len(accounts), FACTS_PAGE):
        page = accounts[start : start + FACTS_PAGE]
        facts = repository.ledger_facts(db, page)
        for account in page:
            if findings := ledger_findings(account, facts.get(account, ()), records.get(account)):
                found[account] = findings
    return found


async def redis_accounts(redis: RedisClient) -> set[str]:
    """Every account id with a state in Redis."""
    found: set[str] = set()
    async for key in redis.scan_iter(match=keys.STATE_PATTERN, count=1000):
        account = keys.account_of(str(key))
        if account is not None:
            found.add(account)
    return found


async def open_holds(redis: RedisClient) -> dict[str, list[OpenHold]]:
    """Every reservation in the buckets' deadline indexes, by account, with its state and its
    deadline (the reservation's own ``dl``, which the index mirrors)."""
    indexed: list[str] = []
    for bucket in range(keys.BUCKETS):
        members = await redis.zrangebyscore(
            keys.deadlines(bucket), "-inf", "+inf", start=0, num=HOLDS_PER_BUCKET
        )
        indexed.extend(str(member) for member in members)
    names = []
    for member in indexed:
        account, _, request_id = member.partition("|")
        names.append(keys.account_keys(account).reservation(request_id))
    holds: dict[str, list[OpenHold]] = {}
    for member, raw in zip(indexed, await packed.read(redis, names), strict=True):
        account, _, request_id = member.partition("|")
        fields = packed.hold(raw) or {}
        state = fields.get("st")
        hold = OpenHold(
            account,
            request_id,
            int(fields.get("dl") or 0),
            None if state is None else str(state),
            int(fields.get("pp") or 0),
            int(fields.get("bp") or 0),
            counted=fields.get("cost") is None,
        )
        holds.setdefault(account, []).append(hold)
    return holds


async def audit(services: Services, *, grace_ms: int = DEFAULT_GRACE_MS) -> AuditReport:
    """Compare every account Redis or the store knows, and check each one; see the module
    docstring and ``sync.checks``. ``grace_ms``: how long past its deadline an open
    reservation may wait for the reaper before it is a finding."""
    read = await in_store(services.db, _read_store)
    records, totals = read.records, read.totals
    try:
        in_redis = await redis_accounts(services.redis)
        holds = await open_holds(services.redis)
        accounts = sorted(set(records) | in_redis | set(totals) | set(holds) | set(read.rollup))
        states = await redis_states(services.redis, accounts)
        pipe = services.redis.pipeline(transaction=False)
        for bucket in range(keys.BUCKETS):
            pipe.xlen(keys.outbox(bucket))
        unsynced = sum(await pipe.execute())
        seconds, micros = await services.redis.time()
    except RedisError as exc:
        raise Unavailable(f"redis: {exc}") from exc
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    report = AuditReport(accounts=len(accounts), unsynced_events=unsynced)
    for account, state in zip(accounts, states, strict=True):
        view = redis_view(state)
        record = records.get(account)
        if state is None and record is not None:
            report.absent_in_redis.append(account)
        report.differences.extend(compare(account, view, record, totals.get(account)))
        report.findings.extend(read.ledger.get(account, ()))
        report.findings.extend(rollup_findings(account, read.rollup.get(account, ())))
        held: tuple[int, int] | None = None
        if state is not None:
            own = {name: int(state[name]) for name in ("plan", "bonus", "hp", "hb")}
            report.findings.extend(redis_findings(account, own))
            held = (own["hp"], own["hb"])
        report.findings.extend(
            hold_findings(account, holds.get(account, ()), held, now_ms=now_ms, grace_ms=grace_ms)
        )
    return report


def render(report: AuditReport) -> list[str]:
    """The report as lines for a terminal."""
    lines = [str(d) for d in report.differences] + [str(f) for f in report.findings]
    if report.absent_in_redis:
        lines.append(
            f"{len(report.absent_in_redis)} account(s) not in Redis (restored on next touch): "
            + ", ".join(report.absent_in_redis[:20])
        )
    if report.unsynced_events:
        lines.append(f"{report.unsynced_events} event(s) not yet synced: run a sync pass first")
    verdict = "clean"
    if not report.clean:
        verdict = f"{len(report.differences)} difference(s), {len(report.findings)} finding(s)"
    lines.append(f"audited {report.accounts} account(s): {verdict}")
    return lines
