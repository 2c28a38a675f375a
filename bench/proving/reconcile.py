"""The proof's judgement: what the clients saw, what the backend served, and what the ledger
recorded, reconciled request id by request id and account by account. Pure: records in,
a ``Verdict`` out.

What a served request is (CONTRACT.md: "only a 2xx answer from the backend is charged; any
other status, a timeout or a connection error refunds the reservation in full"): a request is
charged when the gateway received a 2xx answer from the backend and relayed it. So:

- every hold is closed exactly once, by a charge or a refund (the reaper's included);
- a charge needs a 2xx the backend's own log shows it began to send for that request id;
- a client that received a whole 2xx answer with ``X-Credits-Charged`` > 0 was charged exactly
  once for it; a client that received anything else (non-2xx, ``X-Credits-Charged: 0``) was not;
- a request the backend saw had a hold first; a 429 never reached the backend.

Some attempts have no certain outcome from the client's side, and for them both closes are
allowed (but still exactly one, and a charge still needs the backend's 2xx): a call the client
abandoned (before the answer: refunded; during a 2xx stream: charged, the backend did the
work), a call whose connection failed or was cut, and a call on a replica SIGKILLed while it
ran or within ``KILL_WINDOW`` after it ended (the answer goes out before the settle, so a kill
in that gap leaves the hold to the reaper: a refund, the operator's loss, never the client's).

Metered routes (``METERED``; ``pricing = "tokens"``), on top of that, for each charge:

- it held at least the route's ``cost`` and at most its bound: ``max_credits``, or
  ``ceil(max_tokens / 2000)`` within ``cost``..``max_credits`` when the body named one;
- the account lost ``ceil(tokens / 2000)`` within ``cost``..held, where tokens are what the
  ledger's row says and the backend's log shows it reported for that request id; a charge
  the gateway saw no usage for (a broken stream, a client gone mid-answer; its row says a
  hold's worth of tokens, ``held x 2000``) costs the whole hold, and is allowed only when the
  client's outcome is uncertain or the backend reported none. The one exception: more, up to
  the hold, when a tier change or reset set the account's plan credits (``PLAN_SETS``) before
  the charge, as the plan takes unused credits back only up to its tier's allowance (the
  engine's rule for every settle and refund);
- per account, the tokens its charges paid for (at most 2000 per credit charged) never exceed
  2000 per credit it ever had.

Keys: every request's ledger rows name exactly one key and one route, the key and route the
client sent; per key with a ``creditLimit``, what its charges cost never exceeds it (the
run stays within one monthly period; a charge over due after a refill counts what was due, as
the key's own count does); a call refused for its key (``KEY_REFUSALS``) never
reached the backend and holds nothing; every answered call outside a key's ``routes`` is 403
``route_not_allowed`` (or 503: Redis down before anything was checked), and no call inside is;
no call started a second after its key's expiry was served.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.proving.backend import Served
from bench.proving.load import COST, METERED, TOKENS_PER_CREDIT, AdminOp, Call, Key

KILL_WINDOW = 0.5
"""Seconds before a replica's SIGKILL within which a finished call's settle may be lost."""

REQUEST_KINDS = ("hold", "charge", "refund")
KEY_REFUSALS = ("key_credit_limit", "key_rate_limited", "key_expired", "route_not_allowed")
PLAN_SETS = ("upgrade", "downgrade", "expire", "reset")
"""Movements that set an account's plan credits (to its tier's allowance, or below it): a
hold's unused plan credits then come back only up to the allowance (the engine's rule)."""


@dataclass
class Problem:
    what: str
    where: str
    credits: int = 0

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" + (f" ({self.credits} credits)" if self.credits else "")


@dataclass
class Verdict:
    figures: dict[str, Any] = field(default_factory=dict)
    overspend: list[Problem] = field(default_factory=list)
    unaccounted: list[Problem] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.overspend or self.unaccounted or self.differences)


@dataclass
class RequestTrail:
    holds: int = 0
    charges: int = 0
    refunds: int = 0
    reaped: int = 0
    held: int = 0
    """Credits one hold took (the route's cost)."""
    account: str = ""
    reasons: list[str] = field(default_factory=list)
    """The refunds' reasons, in the ledger's order."""
    paid: int = 0
    """Credits the account lost to its one-row charges (the hold less what came back)."""
    whole: int = 0
    """Charges of the older layout (a hold row, a charge of 0): each cost the hold."""
    tokens: int = 0
    """The tokens its charge says."""
    charged_at: Any = None
    """When the charge happened (the ledger's ``occurred_at``)."""
    key_ids: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)
    due: int | None = None
    """What a metered charge was due when the account lost more (a refilled plan could not
    take all of the rest back): what its key's spend counts."""

    @property
    def lost(self) -> int:
        """The credits its charges cost the account."""
        return self.paid + self.whole * self.held


def ledger_trails(rows: Iterable[dict[str, Any]]) -> dict[str, RequestTrail]:
    trails: dict[str, RequestTrail] = defaultdict(RequestTrail)
    for row in rows:
        if row["kind"] not in REQUEST_KINDS or not row["request_id"]:
            continue
        trail = trails[row["request_id"]]
        trail.account = row["account_id"]
        trail.key_ids.add(row.get("key_id") or "")
        trail.routes.add((row.get("route") or "").rstrip("/"))
        held = row.get("held_plan", 0) + row.get("held_bonus", 0)
        if held:  # one row per request: its charge or refund says what it held
            trail.holds += 1
            trail.held = held
        if row["kind"] == "hold":  # the ledger's rows from before that
            trail.holds += 1
            trail.held = -(row["plan_delta"] + row["bonus_delta"])
        elif row["kind"] == "charge":
            trail.charges += 1
            trail.tokens += row.get("tokens") or 0
            trail.charged_at = row.get("occurred_at")
            if held:
                trail.paid -= row["plan_delta"] + row["bonus_delta"]
            else:
                trail.whole += 1
        else:
            trail.refunds += 1
            trail.reaped += row["reason"] == "expired"
            trail.reasons.append(str(row["reason"]))
    return trails


def describe(trail: RequestTrail, attempts: Sequence[Call], served: list[Served] | None) -> str:
    """What each source holds of one request id, for a report a person can follow."""
    tried = [
        f"{c.kind}@replica{c.replica} {c.status} charged={c.charged} complete={c.complete}"
        f"{' replayed' if c.replayed else ''}{' abandoned' if c.abandoned else ''}"
        f" {c.failure or ''} [{c.started:.2f}-{c.ended:.2f}]"
        for c in attempts
    ]
    backend = [f"{s.status} done={s.done} [{s.at:.2f}]" for s in served or []]
    return (
        f"ledger holds={trail.holds} charges={trail.charges} refunds={trail.refunds} "
        f"({', '.join(trail.reasons)}); clients: {tried}; backend: {backend}"
    )


def uncertain(call: Call, kills: Sequence[tuple[int, float]]) -> bool:
    if call.abandoned or call.status is None or not call.complete:
        return True
    return any(
        replica == call.replica and call.started <= at <= call.ended + KILL_WINDOW
        for replica, at in kills
    )


def reconcile(
    calls: Sequence[Call],
    served: dict[str, list[Served]],
    ledger: Sequence[dict[str, Any]],
    admin_ops: Sequence[AdminOp],
    kills: Sequence[tuple[int, float]],
    audit_differences: Sequence[str],
    balances: dict[str, tuple[int | None, int | None]],
    keys: Sequence[Key] = (),
) -> Verdict:
    """``balances``: account -> (Redis credits, store credits) after the run settled;
    ``keys``: the keys with limits of their own the load made."""
    verdict = Verdict(differences=list(audit_differences))
    trails = ledger_trails(ledger)
    by_rid: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        if call.request_id is not None:
            by_rid[call.request_id].append(call)

    for rid, trail in sorted(trails.items()):
        where = f"request {rid} ({trail.account})"
        if trail.holds != trail.charges + trail.refunds:
            verdict.unaccounted.append(
                Problem(
                    f"{trail.holds} holds closed by {trail.charges} charges and "
                    f"{trail.refunds} refunds",
                    where,
                    trail.held * abs(trail.holds - trail.charges - trail.refunds),
                )
            )
        backend_2xx = sum(200 <= s.status < 300 for s in served.get(rid, []))
        if trail.charges > backend_2xx:
            verdict.unaccounted.append(
                Problem(
                    f"charged {trail.charges}x, the backend began {backend_2xx} 2xx answers",
                    where,
                    trail.held * (trail.charges - backend_2xx),
                )
            )
        attempts = by_rid.get(rid, [])
        sure = [c for c in attempts if not uncertain(c, kills)]
        told_charged = sum(
            1
            for c in sure
            if c.status is not None and 200 <= c.status < 300 and c.charged and not c.replayed
        )
        # No client saw this id: its attempts are among those that got no answer (counted
        # against the ledger's unexplained ids below), each uncertain.
        loose = len(attempts) - len(sure) if attempts else trail.holds
        if not told_charged <= trail.charges <= told_charged + loose:
            verdict.unaccounted.append(
                Problem(
                    f"clients were told of {told_charged} charges ({loose} uncertain attempts), "
                    f"the ledger has {trail.charges}; {describe(trail, attempts, served.get(rid))}",
                    where,
                    trail.held * abs(trail.charges - told_charged),
                )
            )

    for rid, seen in served.items():
        if trails.get(rid, RequestTrail()).holds == 0:
            verdict.unaccounted.append(
                Problem(f"reached the backend {len(seen)}x without a hold", f"request {rid}")
            )
    for call in calls:
        # (An Idempotency-Key's attempts share one request id: an earlier attempt may have
        # been served and refunded before a retry met the 429.)
        if call.status == 429 and call.idem_key is None and call.request_id in served:
            verdict.unaccounted.append(
                Problem("a 429 reached the backend", f"request {call.request_id}")
            )

    unexplained = [rid for rid in trails if rid not in by_rid]
    without_rid = sum(1 for c in calls if c.request_id is None and c.kind != "usage")
    if len(unexplained) > without_rid:
        verdict.differences.append(
            f"{len(unexplained)} ledger request ids no client saw, only {without_rid} calls "
            f"without an answer could explain them: {unexplained[:10]}"
        )

    available = _accounts(verdict, trails, calls, ledger, admin_ops, kills, balances)
    _figures(verdict, trails, calls, served, ledger, kills)
    _metered(verdict, trails, by_rid, served, ledger, kills, available)
    _keys(verdict, trails, by_rid, calls, served, keys)
    return verdict


def _accounts(
    verdict: Verdict,
    trails: dict[str, RequestTrail],
    calls: Sequence[Call],
    ledger: Sequence[dict[str, Any]],
    admin_ops: Sequence[AdminOp],
    kills: Sequence[tuple[int, float]],
    balances: dict[str, tuple[int | None, int | None]],
) -> dict[str, int]:
    """Overspend, grants and balances, account by account; what each account ever had."""
    available: dict[str, int] = defaultdict(int)
    granted: dict[str, int] = defaultdict(int)
    for row in ledger:
        if row["kind"] in REQUEST_KINDS:
            continue
        delta = row["plan_delta"] + row["bonus_delta"]
        available[row["account_id"]] += max(0, delta)
        if row["kind"] == "grant":
            granted[row["account_id"]] += row["bonus_delta"]
    charged: dict[str, int] = defaultdict(int)
    for trail in trails.values():
        charged[trail.account] += trail.lost
    told: dict[str, int] = defaultdict(int)
    for call in calls:
        if (
            call.status
            and 200 <= call.status < 300
            and not call.replayed
            and not uncertain(call, kills)
            and not streamed_metered(call)
        ):
            told[call.account] += call.charged or 0
    for account in sorted(set(available) | set(charged) | set(told)):
        most = max(charged[account], told[account])
        if most > available[account]:
            verdict.overspend.append(
                Problem(
                    f"charged {most} credits, had {available[account]} (opening, grants, resets)",
                    f"account {account}",
                    most - available[account],
                )
            )
    asked: dict[str, int] = defaultdict(int)
    for op in admin_ops:
        if op.status is None:
            verdict.differences.append(f"admin {op.op} on {op.account}: no definite answer")
        elif op.op == "grant" and 200 <= op.status < 300:
            asked[op.account] += int(str(op.body["credits"]))
    for account in sorted(set(asked) | set(granted)):
        if asked[account] != granted[account]:
            verdict.differences.append(
                f"account {account}: grants answered 2xx {asked[account]}, "
                f"ledger grants {granted[account]}"
            )
    for account, (in_redis, in_store) in sorted(balances.items()):
        if in_redis is not None and in_redis < 0 or in_store is not None and in_store < 0:
            verdict.overspend.append(
                Problem(f"negative balance: Redis {in_redis}, store {in_store}", account)
            )
    return available


def streamed_metered(call: Call) -> bool:
    """A metered stream's ``X-Credits-Charged`` is its hold (sent before its tokens)."""
    return call.route in METERED and call.kind not in ("json", "slow", "idempotent")


def _due(tokens: int, cost: int, held: int) -> int:
    return min(held, max(cost, math.ceil(tokens / TOKENS_PER_CREDIT)))


def _bound(route: str, attempts: Sequence[Call]) -> int:
    """The most a metered request may hold: ``max_credits``, or less for its ``max_tokens``."""
    cost, most = COST[route], METERED[route]
    named = {c.max_tokens for c in attempts}
    if len(named) != 1 or (limit := named.pop()) is None:
        return most
    return max(cost, min(most, math.ceil(limit / TOKENS_PER_CREDIT)))


def _metered(
    verdict: Verdict,
    trails: dict[str, RequestTrail],
    by_rid: dict[str, list[Call]],
    served: dict[str, list[Served]],
    ledger: Sequence[dict[str, Any]],
    kills: Sequence[tuple[int, float]],
    available: dict[str, int],
) -> None:
    """Each metered charge against the tokens the backend reported, and the tokens each
    account paid for against the credits it had."""
    lowered: dict[str, list[Any]] = defaultdict(list)
    for row in ledger:
        if row["kind"] in PLAN_SETS:
            lowered[row["account_id"]].append(row.get("occurred_at"))
    prefixes = {route.rstrip("/"): route for route in METERED}
    paid: dict[str, int] = defaultdict(int)
    figures = {"metered charges": 0, "metered held": 0, "metered charged": 0, "capped": 0}
    for rid, trail in sorted(trails.items()):
        routes = [prefixes[r] for r in trail.routes if r in prefixes]
        if not routes or not trail.charges:
            continue
        route, attempts = routes[0], by_rid.get(rid, [])
        cost, bound, where = COST[route], _bound(route, by_rid.get(rid, [])), f"request {rid}"
        figures["metered charges"] += trail.charges
        figures["metered held"] += trail.held
        figures["metered charged"] += trail.lost
        if not cost <= trail.held <= bound:
            verdict.unaccounted.append(
                Problem(f"metered: held {trail.held}, outside {cost}..{bound}", where)
            )
        reported = {
            s.tokens for s in served.get(rid, []) if 200 <= s.status < 300 and s.tokens is not None
        }
        sure = [
            c
            for c in attempts
            if not uncertain(c, kills) and c.status and 200 <= c.status < 300 and not c.replayed
        ]
        # The gateway records a hold's worth of tokens when it saw none reported.
        unseen = trail.tokens == trail.held * TOKENS_PER_CREDIT and trail.tokens not in reported
        if not unseen:
            due = _due(trail.tokens, cost, trail.held)
            if trail.tokens not in reported:
                verdict.unaccounted.append(
                    Problem(
                        f"metered: charged for {trail.tokens} tokens, the backend reported "
                        f"{sorted(reported)}",
                        where,
                        trail.lost,
                    )
                )
        else:
            due = trail.held
            if reported and sure:
                verdict.unaccounted.append(
                    Problem(
                        f"metered: charged the whole hold ({trail.held}) without tokens, the "
                        f"backend reported {sorted(reported)} and the client got it all",
                        where,
                        trail.held - _due(min(reported), cost, trail.held),
                    )
                )
        capped = due < trail.lost <= trail.held * trail.charges and any(
            at is None or trail.charged_at is None or at <= trail.charged_at
            for at in lowered[trail.account]
        )
        figures["capped"] += capped
        if capped:
            trail.due = due * trail.charges
        if trail.lost != due * trail.charges and not capped:
            verdict.unaccounted.append(
                Problem(
                    f"metered: cost {trail.lost} for {trail.tokens} tokens held {trail.held}, "
                    f"due {due} (charged at {trail.charged_at}, the plan set at "
                    f"{lowered[trail.account]}); {describe(trail, attempts, served.get(rid))}",
                    where,
                    abs(trail.lost - due),
                )
            )
        for call in sure:
            if not streamed_metered(call) and call.charged is not None and call.charged != due:
                verdict.unaccounted.append(
                    Problem(f"metered: told of {call.charged} credits, due {due}", where)
                )
        paid[trail.account] += min(trail.tokens, trail.lost * TOKENS_PER_CREDIT)
    for account, tokens in sorted(paid.items()):
        if tokens > available[account] * TOKENS_PER_CREDIT:
            verdict.overspend.append(
                Problem(
                    f"paid for {tokens} tokens, had {available[account]} credits",
                    f"account {account}",
                    math.ceil(tokens / TOKENS_PER_CREDIT) - available[account],
                )
            )
    verdict.figures.update(figures)
    verdict.figures["tokens paid"] = sum(paid.values())
    verdict.figures["tokens reported"] = sum(
        s.tokens or 0
        for seen in served.values()
        for s in seen
        if s.path.startswith(tuple(METERED)) and 200 <= s.status < 300
    )


def _keys(
    verdict: Verdict,
    trails: dict[str, RequestTrail],
    by_rid: dict[str, list[Call]],
    calls: Sequence[Call],
    served: dict[str, list[Served]],
    keys: Sequence[Key],
) -> None:
    """Each request's key and route in the ledger, each limited key's spend, refusals and
    routes."""
    limited = {key.key_id: key for key in keys}
    spent: dict[str, int] = defaultdict(int)
    for rid, trail in sorted(trails.items()):
        where = f"request {rid}"
        if len(trail.key_ids) != 1 or len(trail.routes) != 1 or "" in trail.key_ids | trail.routes:
            verdict.unaccounted.append(
                Problem(
                    f"ledger rows name keys {sorted(trail.key_ids)}, routes {sorted(trail.routes)}",
                    where,
                )
            )
        for call in by_rid.get(rid, []):
            if call.key_id not in trail.key_ids or call.route.rstrip("/") not in trail.routes:
                verdict.unaccounted.append(
                    Problem(
                        f"sent with key {call.key_id} on {call.route}, the ledger names "
                        f"{sorted(trail.key_ids)} on {sorted(trail.routes)}",
                        where,
                    )
                )
        for key_id in trail.key_ids:
            spent[key_id] += trail.lost if trail.due is None else trail.due
    for key_id, made in sorted(limited.items()):
        if made.credit_limit is not None and spent[key_id] > made.credit_limit:
            verdict.overspend.append(
                Problem(
                    f"its charges cost {spent[key_id]}, its creditLimit is {made.credit_limit}",
                    f"key {key_id}",
                    spent[key_id] - made.credit_limit,
                )
            )
    refusals: dict[str, int] = dict.fromkeys(KEY_REFUSALS, 0)
    for call in calls:
        key = limited.get(call.key_id)
        where = f"request {call.request_id} (key {call.key_id}, {call.route})"
        if call.error in KEY_REFUSALS:
            refusals[call.error] += 1
            # (An Idempotency-Key's attempts share one request id, as for the 429s above.)
            alone = call.idem_key is None
            held = alone and call.request_id in trails
            reached = alone and call.request_id in served
            if key is None or reached or held:
                verdict.unaccounted.append(
                    Problem(
                        f"refused {call.status} {call.error}, yet reached the backend "
                        f"({reached}) or held ({held}), or the key has no "
                        f"limits ({key is None})",
                        where,
                    )
                )
        if key is None or call.status is None or call.kind == "usage":
            continue
        allowed = key.allows(call.route)
        refused = call.status == 403 and call.error == "route_not_allowed"
        if refused if allowed else not refused and call.status != 503:
            verdict.unaccounted.append(
                Problem(f"key routes {key.routes}: answered {call.status} {call.error}", where)
            )
        if (
            key.expires is not None
            and call.started > key.expires + 1.0
            and 200 <= call.status < 300
        ):
            verdict.unaccounted.append(Problem("served after its key expired", where))
    verdict.figures["key requests"] = sum(1 for c in calls if c.key_id in limited)
    verdict.figures["key credits"] = sum(spent[key_id] for key_id in limited)
    verdict.figures["key refusals"] = refusals


def _figures(
    verdict: Verdict,
    trails: dict[str, RequestTrail],
    calls: Sequence[Call],
    served: dict[str, list[Served]],
    ledger: Sequence[dict[str, Any]],
    kills: Sequence[tuple[int, float]],
) -> None:
    proxied = [c for c in calls if c.kind != "usage"]
    statuses: dict[str, int] = defaultdict(int)
    for call in proxied:
        if call.status is None:
            statuses["abandoned" if call.abandoned else "no answer"] += 1
        elif call.status == 429:
            statuses[f"429 {call.error}"] += 1
        elif call.status >= 500:  # the backend's own (asked for by the load) or the gateway's
            code = "backend's" if call.error in (None, "as asked") else call.error
            statuses[f"{call.status} {code}"] += 1
        elif call.error in KEY_REFUSALS:
            statuses[f"{call.status} {call.error}"] += 1
        elif call.status >= 400:
            statuses["4xx"] += 1
        elif call.status >= 300:
            statuses["3xx"] += 1
    answered = sorted(c.ended - c.started for c in proxied if c.status is not None)
    fast = sorted(c.ended - c.started for c in proxied if c.kind == "json" and c.status is not None)
    verdict.figures = {
        "requests": len(proxied),
        "2xx": sum(1 for c in proxied if c.status is not None and 200 <= c.status < 300),
        "statuses": dict(sorted(statuses.items())),
        "uncertain": sum(1 for c in proxied if uncertain(c, kills)),
        "backend requests": sum(len(v) for v in served.values()),
        "backend 2xx": sum(1 for v in served.values() for s in v if 200 <= s.status < 300),
        "holds": sum(t.holds for t in trails.values()),
        "charges": sum(t.charges for t in trails.values()),
        "refunds": sum(t.refunds for t in trails.values()),
        "reaped": sum(t.reaped for t in trails.values()),
        "credits charged": sum(t.lost for t in trails.values()),
        "metered requests": sum(1 for c in proxied if c.route in METERED),
        "grants": sum(1 for r in ledger if r["kind"] == "grant"),
        "tier changes": sum(
            1 for r in ledger if r["kind"] in ("upgrade", "renew", "downgrade", "expire")
        ),
        "latency": (_quantile(answered, 0.5), _quantile(answered, 0.99)),
        "latency json": (_quantile(fast, 0.5), _quantile(fast, 0.99)),
    }


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]
