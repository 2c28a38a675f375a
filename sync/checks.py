"""The audit's checks of one account beyond equal fields: pure, the facts in, findings out.

- the ledger's versions strictly increase in the order the events were appended (the outbox
  stream id in the event id), with no repeat, up to the snapshot's version. Versions come from
  Redis TIME (``max(v + 1, now in us)``), so a gap says nothing; a repeat or a step back says
  events were lost or replayed (a failover that lost writes, a clock gone back);
- the tokens of the ledger's rows add up to the snapshot's lifetime tokens;
- no balance is negative: not Redis's (available or held), not the store's, and not the
  ledger's running sums after any event;
- no reservation is open past its deadline (plus a grace for the reaper's next pass), and
  the credits an account's open reservations hold add up to what its hash says it holds;
- the daily usage roll-up's rows are the ledger's sums of their movements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from store.records import AccountRecord, LedgerFact
from store.usage_daily import RollupMismatch


@dataclass(frozen=True, slots=True)
class Finding:
    """Something about one account that must not be, in words."""

    account: str
    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.account}: {self.what}: {self.detail}"


@dataclass(frozen=True, slots=True)
class OpenHold:
    """A reservation in a bucket's deadline index, as Redis holds it."""

    account: str
    request_id: str
    deadline_ms: int
    state: str | None
    """``held`` while open; anything else (or None: gone) is an index entry left behind."""
    plan: int
    bonus: int
    counted: bool = True
    """False for a reservation of layout 1's scripts: its hold is not in the hash's held
    credits (the ledger counted it spent when it was made)."""


def stream_order(event_id: str) -> tuple[int, int]:
    """Where an event was appended (``<bucket>-<ms>-<seq>``): ms, then sequence."""
    _, ms, seq = event_id.split("-")
    return int(ms), int(seq)


def ledger_findings(
    account: str, facts: Iterable[LedgerFact], record: AccountRecord | None
) -> list[Finding]:
    """Versions, running balances and tokens of one account's ledger."""
    found: list[Finding] = []
    plan = bonus = tokens = 0
    previous: LedgerFact | None = None
    negative = False
    for fact in sorted(facts, key=lambda f: stream_order(f.event_id)):
        if previous is not None and fact.version <= previous.version:
            found.append(
                Finding(
                    account,
                    "versions",
                    f"{fact.event_id} has version {fact.version}, not above "
                    f"{previous.event_id}'s {previous.version}",
                )
            )
        plan, bonus = plan + fact.plan_delta, bonus + fact.bonus_delta
        tokens += fact.tokens
        if (plan < 0 or bonus < 0) and not negative:
            negative = True  # the first time only: one cause, many events after it
            found.append(
                Finding(
                    account,
                    "negative balance",
                    f"the ledger's sums after {fact.event_id}: plan {plan}, bonus {bonus}",
                )
            )
        previous = fact
    if record is None:
        return found
    if previous is not None and previous.version != record.version:
        found.append(
            Finding(
                account,
                "versions",
                f"the store's snapshot is at version {record.version}, its ledger's last "
                f"event ({previous.event_id}) at {previous.version}",
            )
        )
    if tokens != record.total_tokens:
        found.append(
            Finding(
                account,
                "tokens",
                f"the ledger's rows add up to {tokens} tokens, the store's total is "
                f"{record.total_tokens}",
            )
        )
    if record.plan_credits < 0 or record.bonus_credits < 0:
        found.append(
            Finding(
                account,
                "negative balance",
                f"the store: plan {record.plan_credits}, bonus {record.bonus_credits}",
            )
        )
    return found


def redis_findings(account: str, fields: Mapping[str, int]) -> list[Finding]:
    """Negative credits in an account's hash (``plan``, ``bonus``, ``hp``, ``hb``)."""
    negative = {name: value for name, value in fields.items() if value < 0}
    if not negative:
        return []
    shown = ", ".join(f"{name} {value}" for name, value in negative.items())
    return [Finding(account, "negative balance", f"Redis: {shown}")]


def hold_findings(
    account: str,
    holds: Iterable[OpenHold],
    held: tuple[int, int] | None,
    *,
    now_ms: int,
    grace_ms: int,
) -> list[Finding]:
    """Overdue reservations of one account, and its hash's held credits against them.

    ``held`` is the hash's (``hp``, ``hb``), None when Redis lacks the account (then its
    reservations wait for a restore and are only checked for their deadline)."""
    found: list[Finding] = []
    plan = bonus = 0
    for hold in holds:
        if hold.state != "held":
            found.append(
                Finding(
                    account,
                    "hold index",
                    f"request {hold.request_id} is indexed as open but is {hold.state or 'gone'}",
                )
            )
            continue
        if hold.counted:
            plan, bonus = plan + hold.plan, bonus + hold.bonus
        late = now_ms - hold.deadline_ms
        if late > grace_ms:
            found.append(
                Finding(
                    account,
                    "hold past its deadline",
                    f"request {hold.request_id} holds {hold.plan + hold.bonus} credit(s), "
                    f"{late} ms past its deadline",
                )
            )
    if held is not None and held != (plan, bonus):
        found.append(
            Finding(
                account,
                "held credits",
                f"the hash holds plan {held[0]}, bonus {held[1]}; its open reservations "
                f"plan {plan}, bonus {bonus}",
            )
        )
    return found


def rollup_findings(account: str, mismatches: Iterable[RollupMismatch]) -> list[Finding]:
    """One finding per roll-up row of the account that is not its ledger's sums."""
    return [
        Finding(
            account,
            "usage roll-up",
            f"{m.day.isoformat()} route {m.route} key {m.key_id}: the ledger sums (requests, "
            f"charged, refunded, tokens) {m.ledger}, the roll-up holds {m.rollup}",
        )
        for m in mismatches
    ]
