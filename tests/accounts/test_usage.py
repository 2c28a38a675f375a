"""The usage object and creditInfo: the contract's names, integers, ISO 8601 dates."""

from __future__ import annotations

from gateway.accounts.usage import credit_info, iso_ms, usage_body
from gateway.credits.results import AccountState


def make_state(**changes: object) -> AccountState:
    values: dict[str, object] = {
        "account": "acct_1",
        "plan_credits": 90,
        "bonus_credits": 7,
        "tier": "pro",
        "subscribed": True,
        "subscription_ends_ms": 1_790_000_000_000,
        "period_end_ms": 1_790_000_000_123,
        "total_tokens": 5000,
        "monthly_tokens": 1200,
        "version": 9,
        "allowance": 100,
        "requests_per_minute": 120,
        "now_ms": 1_780_000_000_000,
    }
    values.update(changes)
    return AccountState(**values)  # type: ignore[arg-type]


def test_usage_body_has_the_contract_fields() -> None:
    body = usage_body(make_state())
    assert body["credits"] == 90
    assert body["bonusCredits"] == 7
    assert body["creditsRemaining"] == 97
    assert body["totalTokensUsed"] == 5000
    assert body["monthlyTokensUsed"] == 1200
    assert body["monthlyResetDate"] == "2026-09-21T14:13:20.123Z"
    assert body["isSubscribed"] is True
    assert body["subscriptionTier"] == "pro"
    assert body["subscriptionEndsAt"] == "2026-09-21T14:13:20.000Z"


def test_usage_body_keeps_its_keys_in_order() -> None:
    assert list(usage_body(make_state())) == [
        "accountId",
        "credits",
        "bonusCredits",
        "creditsRemaining",
        "monthlyCredits",
        "totalTokensUsed",
        "monthlyTokensUsed",
        "monthlyResetDate",
        "isSubscribed",
        "subscriptionTier",
        "subscriptionEndsAt",
        "requestsPerMinute",
    ]


def test_free_account_has_no_subscription_end() -> None:
    body = usage_body(make_state(tier="free", subscribed=False, subscription_ends_ms=None))
    assert body["subscriptionEndsAt"] is None
    assert body["isSubscribed"] is False


def test_credit_info() -> None:
    assert credit_info(make_state(), 321) == {
        "tokensUsed": 321,
        "creditsRemaining": 97,
        "totalTokensUsed": 5000,
    }


def test_iso_ms() -> None:
    assert iso_ms(None) is None
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
