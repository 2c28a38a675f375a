"""What callers see of their account: the contract's usage object and ``creditInfo``.

Both are pure functions of an ``AccountState`` (read by the engine's scripts), so the proxy,
``GET /api/user/usage`` and the admin API answer the same numbers in the same shape.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.credits.results import AccountState


def iso_ms(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC (``...Z``), None stays None."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def usage_body(state: AccountState) -> dict[str, object]:
    """The contract's usage object (``GET /api/user/usage``); credits are integers."""
    return {
        "accountId": state.account,
        "credits": state.plan_credits,
        "bonusCredits": state.bonus_credits,
        "creditsRemaining": state.credits_remaining,
        "monthlyCredits": state.allowance,
        "totalTokensUsed": state.total_tokens,
        "monthlyTokensUsed": state.monthly_tokens,
        "monthlyResetDate": iso_ms(state.period_end_ms),
        "isSubscribed": state.subscribed,
        "subscriptionTier": state.tier,
        "subscriptionEndsAt": iso_ms(state.subscription_ends_ms),
        "requestsPerMinute": state.requests_per_minute,
    }


def credit_info(state: AccountState, tokens: int, *, unsettled: bool = False) -> dict[str, int]:
    """The contract's ``creditInfo``: tokens of this request, credits left, lifetime tokens.

    ``unsettled``: ``state`` is from before this request's settle (its credits were taken at
    reserve), so its tokens are added to the lifetime total here.
    """
    return {
        "tokensUsed": tokens,
        "creditsRemaining": state.credits_remaining,
        "totalTokensUsed": state.total_tokens + tokens if unsettled else state.total_tokens,
    }
