"""What callers see of their account: the contract's usage object and ``creditInfo``.

Pure functions of an ``AccountState`` (read by the engine's scripts) or of its ``Snapshot``, so
the proxy, ``GET /api/user/usage``, the admin API and the webhooks answer the same numbers in
the same shape.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.credits.results import AccountState, Snapshot


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
        **_credits(state),
        "monthlyCredits": state.allowance,
        **_tokens_and_subscription(state),
        "requestsPerMinute": state.requests_per_minute,
    }


def snapshot_usage(account: str, snapshot: Snapshot) -> dict[str, object]:
    """The usage object's fields that an account's snapshot alone decides (not its tier's
    rules): what a webhook tells of the account after a movement."""
    return {"accountId": account, **_credits(snapshot), **_tokens_and_subscription(snapshot)}


# Two parts, so that the usage object keeps its keys in the order clients have seen.
def _credits(snapshot: Snapshot) -> dict[str, object]:
    return {
        "credits": snapshot.plan_credits,
        "bonusCredits": snapshot.bonus_credits,
        "creditsRemaining": snapshot.credits_remaining,
    }


def _tokens_and_subscription(snapshot: Snapshot) -> dict[str, object]:
    return {
        "totalTokensUsed": snapshot.total_tokens,
        "monthlyTokensUsed": snapshot.monthly_tokens,
        "monthlyResetDate": iso_ms(snapshot.period_end_ms),
        "isSubscribed": snapshot.subscribed,
        "subscriptionTier": snapshot.tier,
        "subscriptionEndsAt": iso_ms(snapshot.subscription_ends_ms),
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
