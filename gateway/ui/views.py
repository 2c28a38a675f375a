"""What a page shows of one account: its usage object, charts, recent ledger, keys (with their
spend this period) and the key forms.

Built from the same functions the APIs answer with (``usage_body``, the history of
``gateway.accounts.history``), so a chart's figures are the API's figures.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gateway.accounts import history as usage
from gateway.accounts import operations as accounts
from gateway.accounts.keyfields import configured_routes
from gateway.accounts.keyviews import key_spends
from gateway.accounts.restore import restore_from_store
from gateway.accounts.usage import usage_body
from gateway.errors import NotFound
from gateway.services import Services
from gateway.ui.charts import bar_chart
from gateway.ui.keyforms import KeyForm, key_form, route_box
from store.records import ApiKeyRecord
from store.timefmt import utc_now

CHART_DAYS = 30
LEDGER_ROWS = 20


def chart_query(days: int = CHART_DAYS) -> usage.HistoryQuery:
    """The charts' range: the last ``days`` whole UTC days, today included."""
    end = utc_now().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return usage.HistoryQuery(end - timedelta(days=days), end, "day", "json")


async def account_page(services: Services, account_id: str) -> dict[str, Any]:
    """The context of an account's page (the dashboard, the console's account page)."""
    state = await services.credits.status(account_id)
    if state is None:
        state = await restore_from_store(services, account_id)
    if state is None:
        raise NotFound(f"no account {account_id!r}")
    wanted = chart_query()
    per_day = await usage.usage_history(services, wanted, account_id=account_id)
    by_route = await usage.usage_history(
        services,
        usage.HistoryQuery(wanted.start, wanted.end, "route", "json"),
        account_id=account_id,
    )
    page = await accounts.ledger_page(services, account_id, limit=LEDGER_ROWS)
    keys = await accounts.list_keys(services, account_id)
    return {
        "usage": usage_body(state),
        "days": CHART_DAYS,
        "per_day": per_day,
        "credits_chart": bar_chart(
            "Credits charged per day",
            [(b.bucket or "", b.credits_charged) for b in per_day],
            unit="credits",
        ),
        "tokens_chart": bar_chart(
            "Tokens per day", [(b.bucket or "", b.tokens) for b in per_day], unit="tokens"
        ),
        "route_chart": bar_chart(
            "Credits charged by route",
            [(b.bucket or "(no route recorded)", b.credits_charged) for b in by_route],
            unit="credits",
        ),
        "ledger": [usage.ledger_entry_view(e) for e in page.entries],
        "keys": keys,
        "spent": await key_spends(services, account_id, keys),
        **key_forms(services, keys),
    }


def key_forms(services: Services, keys: list[ApiKeyRecord]) -> dict[str, Any]:
    """The key forms' context: the configured routes as checkboxes, an empty new key's form,
    and each live key's edit form with its current name and limits."""
    routes = configured_routes(services.settings)
    return {
        "route_boxes": [(r, route_box(r)) for r in routes],
        "create_form": KeyForm(),
        "edit_forms": {k.key_id: key_form(k, routes) for k in keys if not k.revoked},
    }


def open_edit(context: dict[str, Any], edit: tuple[str, KeyForm] | None) -> str | None:
    """Show a key's edit form open with the values sent (``edit``: the key and its form, next
    to the context's ``edit_error``); when the key has no form (unknown, revoked), the
    ``edit_error`` is the page's error instead: returned, taken out of the context."""
    if edit is None:
        return None
    key_id, sent = edit
    if key_id not in context["edit_forms"]:
        error: str | None = context.pop("edit_error", None)
        return error
    context["edit_forms"][key_id] = sent
    context["edit_key_id"] = key_id
    return None
