"""The proof's rules (bench/proving/reconcile.py) on hand-made records: each kind of
disagreement is caught, and what the promise allows is not reported."""

from __future__ import annotations

from typing import Any

from bench.proving.backend import Served
from bench.proving.load import AdminOp, Call, Key
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


# -- metered routes and keys with limits ------------------------------------------------------

LLM = "/api/llm/"


def metered_row(rid: str, held: int, lost: int, tokens: int, **extra: Any) -> dict[str, Any]:
    """A metered request's one row: its charge, what it held, what it cost, its tokens."""
    made = row("charge", rid, -lost) | {"held_plan": held, "held_bonus": 0, "tokens": tokens}
    return made | {"route": LLM} | extra


def metered_call(rid: str, charged: int | None, kind: str = "json", **extra: Any) -> Call:
    return call(rid, 200, charged, route=LLM, kind=kind, **extra)


def reported(rid: str, tokens: int | None) -> dict[str, list[Served]]:
    return {rid: [Served(rid, ACCOUNT, f"{LLM}json", 200, True, tokens=tokens)]}


def test_a_metered_charge_is_the_tokens_reported_within_cost_and_held() -> None:
    # 4001 tokens: 3 credits of the 8 held, as the header said.
    verdict = judge([metered_call("a", 3)], reported("a", 4001), [metered_row("a", 8, 3, 4001)])
    assert verdict.clean, verdict
    assert (verdict.figures["tokens paid"], verdict.figures["metered charged"]) == (4001, 3)
    over = judge([metered_call("a", 4)], reported("a", 4001), [metered_row("a", 8, 4, 4001)])
    assert any("due 3" in p.what for p in over.unaccounted)
    # More tokens than the hold pays for: the hold, never more.
    capped = [metered_row("a", 2, 2, 19_000)]
    assert judge([metered_call("a", 2)], reported("a", 19_000), capped).clean


def test_a_metered_charge_for_tokens_the_backend_never_reported_is_unaccounted() -> None:
    verdict = judge([metered_call("a", 2)], reported("a", 1000), [metered_row("a", 8, 2, 3000)])
    assert any("backend reported [1000]" in p.what for p in verdict.unaccounted)


def test_the_whole_hold_without_usage_only_when_the_outcome_is_uncertain() -> None:
    """The gateway saw no usage: it records a hold's worth of tokens and charges it all."""
    ledger = [metered_row("a", 4, 4, 8000)]
    broken = metered_call("a", 4, kind="sse", complete=False)
    assert judge([broken], reported("a", None), ledger).clean
    whole = metered_call("a", 4, kind="sse")
    verdict = judge([whole], reported("a", 500), ledger)
    assert any("without tokens" in p.what for p in verdict.unaccounted)


def test_a_metered_hold_beyond_the_bound_of_max_tokens_is_unaccounted() -> None:
    ledger = [metered_row("a", 3, 1, 100)]
    assert judge([metered_call("a", 1, max_tokens=6000)], reported("a", 100), ledger).clean
    verdict = judge([metered_call("a", 1, max_tokens=2000)], reported("a", 100), ledger)
    assert any("outside 1..1" in p.what for p in verdict.unaccounted)


def test_more_than_due_only_after_a_tier_change_set_the_plan() -> None:
    """The settle gives plan credits back only up to the allowance an upgrade (or a downgrade,
    an expiry, a reset) set while the call was out."""
    ledger = [metered_row("a", 4, 3, 100, occurred_at=2)]
    assert not judge([metered_call("a", 1)], reported("a", 100), ledger).clean
    for kind, delta in (("upgrade", 100), ("downgrade", -2)):
        refilled = [dict(row(kind, None, delta), occurred_at=1)]
        verdict = judge([metered_call("a", 1)], reported("a", 100), refilled + ledger)
        assert not verdict.unaccounted, verdict
        assert verdict.figures["capped"] == 1
    later = [dict(row("upgrade", None, 100), occurred_at=3)]
    assert judge([metered_call("a", 1)], reported("a", 100), later + ledger).unaccounted


def test_tokens_paid_beyond_the_credits_an_account_had_are_overspend() -> None:
    ledger = [metered_row(rid, 2, 2, 4000) for rid in "abc"]
    served = {rid: reported(rid, 4000)[rid] for rid in "abc"}
    verdict = judge([metered_call(rid, 2) for rid in "abc"], served, ledger)
    assert any("paid for 12000 tokens, had 5 credits" in p.what for p in verdict.overspend)


LIMITED = Key("key_limited", "secret", credit_limit=2, routes=("/api/projects",))


def keyed(rid: str | None, status: int | None, error: str | None = None, **extra: Any) -> Call:
    made = call(rid, status, 1 if status == 200 else 0, key_id=LIMITED.key_id, **extra)
    made.error = error
    return made


def test_a_key_never_spends_beyond_its_credit_limit() -> None:
    ledger = [row("charge", rid, -1) | {"held_plan": 1, "key_id": LIMITED.key_id} for rid in "ab"]
    calls = [keyed(rid, 200) for rid in "ab"]
    served = ok("a") | {"b": ok("b")["b"]}
    verdict = reconcile(calls, served, [row("open", None, 5), *ledger], [], [], [], {}, [LIMITED])
    assert verdict.clean, verdict
    third = [*ledger, row("charge", "c", -1) | {"held_plan": 1, "key_id": LIMITED.key_id}]
    calls.append(keyed("c", 200))
    served |= {"c": ok("c")["c"]}
    verdict = reconcile(calls, served, [row("open", None, 5), *third], [], [], [], {}, [LIMITED])
    assert [p.where for p in verdict.overspend] == ["key key_limited"]


def test_a_key_refusal_reaches_nothing_and_holds_nothing() -> None:
    refused = keyed("a", 429, "key_credit_limit")
    verdict = reconcile([refused], {}, [], [], [], [], {}, [LIMITED])
    assert verdict.clean and verdict.figures["key refusals"]["key_credit_limit"] == 1
    verdict = reconcile([refused], ok("a"), [], [], [], [], {}, [LIMITED])
    assert any("reached the backend (True)" in p.what for p in verdict.unaccounted)
    plain = call("b", 429, 0, error="key_rate_limited")
    assert not reconcile([plain], {}, [], [], [], [], {}, [LIMITED]).clean


def test_calls_outside_a_keys_routes_are_all_403() -> None:
    outside = keyed("a", 403, "route_not_allowed", route="/api/review/")
    assert reconcile([outside], {}, [], [], [], [], {}, [LIMITED]).clean
    served = keyed("a", 500, route="/api/review/")
    assert not reconcile([served], {}, [], [], [], [], {}, [LIMITED]).clean
    inside = keyed("a", 403, "route_not_allowed")
    assert not reconcile([inside], {}, [], [], [], [], {}, [LIMITED]).clean


def test_every_ledger_row_names_the_key_and_route_the_client_sent() -> None:
    ledger = [row("hold", "a", -1), row("charge", "a")]
    other = call("a", 200, 1, key_id="key_other")
    assert any(
        "sent with key key_other" in p.what for p in judge([other], ok("a"), ledger).unaccounted
    )
    nameless = [dict(r, key_id=None) for r in ledger]
    verdict = judge([call("a", 200, 1)], ok("a"), nameless)
    assert any("name keys ['']" in p.what for p in verdict.unaccounted)


def test_a_key_past_its_expiry_serves_nothing() -> None:
    expiring = Key("key_limited", "secret", expires=5.0)
    late = keyed("a", 200)
    ledger = [
        row("open", None, 5),
        row("charge", "a", -1) | {"held_plan": 1, "key_id": expiring.key_id},
    ]
    verdict = reconcile([late], ok("a"), ledger, [], [], [], {}, [expiring])
    assert any("expired" in p.what for p in verdict.unaccounted)


def test_a_key_refusal_of_a_retry_may_share_its_id_with_a_served_attempt() -> None:
    retry = keyed("idem-a", 429, "key_rate_limited", idem_key="k")
    first = keyed("idem-a", 200, idem_key="k")
    ledger = [row("open", None, 5), row("charge", "idem-a", -1) | {"held_plan": 1}]
    ledger[1]["key_id"] = LIMITED.key_id
    verdict = reconcile([first, retry], ok("idem-a"), ledger, [], [], [], {}, [LIMITED])
    assert verdict.clean, verdict


def test_a_keys_spend_counts_what_a_charge_over_due_after_a_refill_was_due() -> None:
    """Its own count gives back what was not charged, whatever the plan could take back."""
    refill = dict(row("upgrade", None, 100), occurred_at=1)
    capped = metered_row("a", 4, 4, 100, occurred_at=2, key_id=LIMITED.key_id)
    flat = row("charge", "b", -1) | {"held_plan": 1, "key_id": LIMITED.key_id}
    calls = [keyed("a", 200, route=LLM), keyed("b", 200)]
    served = reported("a", 100) | ok("b")
    ledger = [row("open", None, 5), refill, capped, flat]
    anywhere = Key(LIMITED.key_id, "secret", credit_limit=2)
    verdict = reconcile(calls, served, ledger, [], [], [], {}, [anywhere])
    assert verdict.clean, verdict
    assert verdict.figures["key credits"] == 2
