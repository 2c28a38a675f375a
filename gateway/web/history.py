"""The account holder's history and ledger: ``GET /api/user/usage/history`` and
``GET /api/user/ledger``, JSON or CSV (``?format=csv``), read from the store of record.

Authenticated by the caller's API key, like ``/api/user/usage``; they cost nothing and touch
no rate. The parameters are ``gateway.accounts.history``'s (ISO 8601 UTC range, at most a
year). The history counts what the sync has copied to the store: the last seconds of usage
may not be in it yet.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.accounts import history as usage
from gateway.services import Services
from gateway.ui.exports import history_answer, ledger_answer
from gateway.web.user import caller_of


async def user_history(request: Request) -> Response:
    """``GET /api/user/usage/history?from=&to=&group=day|route|key&format=json|csv``."""
    caller = await caller_of(request)
    wanted = usage.history_query(request.query_params)
    services: Services = request.app.state.services
    buckets = await usage.usage_history(services, wanted, account_id=caller.account_id)
    return history_answer(wanted, buckets, name=f"usage-{wanted.grouping}")


async def user_ledger(request: Request) -> Response:
    """``GET /api/user/ledger?from=&to=&format=json|csv``: the range's movements, oldest
    first; CSV streams every row, JSON answers at most ``limit`` (default 10, at most 100)."""
    caller = await caller_of(request)
    wanted = usage.history_query(request.query_params, groupings=("day",))
    services: Services = request.app.state.services
    rows = usage.ledger_rows(services, wanted, account_id=caller.account_id)
    return await ledger_answer(wanted, rows)


def history_routes() -> list[Route]:
    return [
        Route("/api/user/usage/history", user_history, methods=["GET"]),
        Route("/api/user/ledger", user_ledger, methods=["GET"]),
    ]
