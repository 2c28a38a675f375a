"""The proof's rules (bench/proving/reconcile.py) on hand-made records: each kind of
disagreement is caught, and what the promise allows is not reported."""

from __future__ import annotations

from typing import Any

from bench.proving.backend import Served
from bench.proving.load import AdminOp, Call
from bench.proving.reconcile import Verdict, reconcile

ACCOUNT = "acct-1"
KEY = "key_plain"


def row(kind: str, rid: str | None, delta: int = 0, reason: str | None = None) -> dict[str, Any]:
    return {
        "account_id": ACCOUNT,
        "kind": kind,
        "plan_delta": delta,
        "bonus_delta": 0,
        "request_id": rid,
        "reason": reason,
        "key_id": KEY if rid else None,
        "route": "/api/projects/" if rid else None,
    }


def call(rid: str | None, status: int | None, charged: int | None, **extra: Any) -> Call:
    made = Call("json", ACCOUNT, 0, "/api/projects/", 10.0, 10.1, status, rid, charged)
    made.complete = status is not None
    made.key_id = KEY
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def judge(
    calls: list[Call],
    served: dict[str, list[Served]],
    ledger: list[dict[str, Any]],
    *,
    admin: list[AdminOp] | None = None,
    kills: list[tuple[int, float]] | None = None,
) -> Verdict:
    opening = [row("open", None, 5)]
    return reconcile(calls, served, opening + ledger, admin or [], kills or [], [], {})


def ok(rid: str) -> dict[str, list[Served]]:
    return {rid: [Served(rid, ACCOUNT, "/api/projects/json", 200, True)]}


def test_a_charged_answer_and_a_refunded_failure_are_clean() -> None:
    served = ok("a") | {"b": [Served("b", ACCOUNT, "/api/projects/fail", 500, True)]}
    ledger = [row("hold", "a", -1), row("charge", "a"), row("hold", "b", -1)]
    ledger.append(row("refund", "b", 1, "upstream 500"))
    verdict = judge([call("a", 200, 1), call("b", 500, 0)], served, ledger)
    assert verdict.clean, verdict
    assert verdict.figures["charges"] == 1 and verdict.figures["refunds"] == 1


def one_row(kind: str, rid: str, delta: int, reason: str | None = None) -> dict[str, Any]:
    """A request's one ledger row (its charge or refund), saying what it held."""
    return row(kind, rid, delta, reason) | {"held_plan": 1, "held_bonus": 0}


def test_one_row_per_request_reconciles_as_a_hold_and_its_close() -> None:
    served = ok("a") | {"b": [Served("b", ACCOUNT, "/api/projects/fail", 500, True)]}
    ledger = [one_row("charge", "a", -1), one_row("refund", "b", 0, "upstream 500")]
    verdict = judge([call("a", 200, 1), call("b", 500, 0)], served, ledger)
    assert verdict.clean, verdict
    assert (verdict.figures["holds"], verdict.figures["credits charged"]) == (2, 1)
    reaped = judge([call("a", 200, 1)], ok("a"), [one_row("refund", "a", 0, "expired")])
    assert [p.credits for p in reaped.unaccounted] == [1]


def test_a_served_answer_the_reaper_refunded_is_unaccounted() -> None:
    """The client was told of a charge; the settle was lost and the hold reaped."""
    ledger = [row("hold", "a", -1), row("refund", "a", 1, "expired")]
    verdict = judge([call("a", 200, 1)], ok("a"), ledger)
    assert [p.credits for p in verdict.unaccounted] == [1]
    assert "(expired)" in verdict.unaccounted[0].what


def test_the_same_on_a_replica_killed_right_after_is_allowed() -> None:
    ledger = [row("hold", "a", -1), row("refund", "a", 1, "expired")]
    verdict = judge([call("a", 200, 1)], ok("a"), ledger, kills=[(0, 10.3)])
    assert verdict.clean, verdict


def test_an_abandoned_call_may_be_charged_only_for_a_2xx_the_backend_began() -> None:
    ledger = [row("hold", "a", -1), row("charge", "a")]
    abandoned = call("a", None, None, abandoned=True)
    assert judge([abandoned], ok("a"), ledger).clean
    failed = {"a": [Served("a", ACCOUNT, "/api/projects/fail", 503, True)]}
    verdict = judge([abandoned], failed, ledger)
    assert any("backend began 0" in p.what for p in verdict.unaccounted)


def test_a_hold_left_open_or_closed_twice_is_unaccounted() -> None:
    open_hold = judge([call("a", None, None)], ok("a"), [row("hold", "a", -1)])
    assert any("closed by 0" in p.what for p in open_hold.unaccounted)
    twice = [row("hold", "a", -1), row("charge", "a"), row("refund", "a", 1, "x")]
    assert not judge([call("a", None, None)], ok("a"), twice).clean


def test_a_request_the_backend_saw_without_a_hold_is_unaccounted() -> None:
    verdict = judge([], ok("ghost"), [])
    assert any("without a hold" in p.what for p in verdict.unaccounted)


def test_charges_beyond_what_the_account_had_are_overspend() -> None:
    ledger = []
    for rid in "abcdef":
        ledger += [row("hold", rid, -1), row("charge", rid)]
    served = {rid: ok(rid)[rid] for rid in "abcdef"}
    verdict = judge([call(rid, 200, 1) for rid in "abcdef"], served, ledger)
    assert [p.credits for p in verdict.overspend] == [1]


def test_a_grant_answered_2xx_must_be_in_the_ledger() -> None:
    grant = AdminOp(ACCOUNT, "grant", {"credits": 7, "reason": "x"}, "k", status=200)
    verdict = judge([], {}, [], admin=[grant])
    assert any("grants answered 2xx 7, ledger grants 0" in d for d in verdict.differences)
    assert judge([], {}, [row("grant", "op_k")], admin=[grant]).differences
    granted = [dict(row("grant", "op_k"), bonus_delta=7)]
    assert judge([], {}, granted, admin=[grant]).clean


def test_a_charge_no_client_saw_is_explained_by_a_call_without_an_answer() -> None:
    """A client that left before the status line never learnt the request id."""
    ledger = [row("hold", "a", -1), row("charge", "a")]
    assert judge([call(None, None, None, abandoned=True)], ok("a"), ledger).clean
    verdict = judge([], ok("a"), ledger)
    assert any("no client saw" in d for d in verdict.differences)
