"""The operators' usage history across accounts, under /admin (behind the admin token).

- ``GET /admin/usage/history?from=&to=&group=day|route|key|account&account=ID&format=``:
  every account's usage (or one account's with ``account``), bucketed;
- ``GET /admin/usage/top?from=&to=&limit=&format=``: the accounts that spent the most;
- ``GET /admin/usage/ledger?from=&to=&account=ID&format=``: the movements of the range.

Reads only: no Idempotency-Key, nothing changes. Parameters as ``gateway.accounts.history``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.accounts import history as usage
from gateway.accounts import validation
from gateway.admin.handlers import admin_endpoint, services_of
from gateway.ui.exports import history_answer, ledger_answer


def _account(request: Request) -> str | None:
    given = request.query_params.get("account")
    return None if given is None else validation.account_id(given, field="account")


async def usage_history(request: Request) -> Response:
    wanted = usage.history_query(
        request.query_params, groupings=("day", "route", "key", "account"), extra=("account",)
    )
    buckets = await usage.usage_history(services_of(request), wanted, account_id=_account(request))
    return history_answer(wanted, buckets, name=f"usage-{wanted.grouping}")


async def top_accounts(request: Request) -> Response:
    wanted = usage.history_query(request.query_params, groupings=("account",))
    top = await usage.top_accounts(services_of(request), wanted)
    return history_answer(wanted, top, name="top")


async def ledger_export(request: Request) -> Response:
    wanted = usage.history_query(request.query_params, groupings=("day",), extra=("account",))
    rows = usage.ledger_rows(services_of(request), wanted, account_id=_account(request))
    return await ledger_answer(wanted, rows)


def usage_routes() -> list[Route]:
    return [
        Route("/usage/history", admin_endpoint(usage_history), methods=["GET"]),
        Route("/usage/top", admin_endpoint(top_accounts), methods=["GET"]),
        Route("/usage/ledger", admin_endpoint(ledger_export), methods=["GET"]),
    ]
