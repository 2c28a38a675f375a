"""The account holder's history and ledger: ``GET /api/user/usage/history`` and
``GET /api/user/ledger``, JSON or CSV (``?format=csv``), read from the store of record.

Authenticated by the caller's API key, like ``/api/user/usage``; they cost nothing and touch
no rate. The parameters are ``gateway.accounts.history``'s (ISO 8601 UTC range, at most a
year). The history counts what the sync has copied to the store: the last seconds of usage
may not be in it yet.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.accounts import csvexport
from gateway.accounts import history as usage
from gateway.accounts.keycache import KeyCache
from gateway.services import Services

CSV_TYPE = "text/csv; charset=utf-8"


def csv_headers(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}.csv"'}


async def _caller(request: Request) -> str:
    keys: KeyCache = request.app.state.keys
    caller = await keys.authenticate(request.headers.get("authorization"))
    return caller.account_id


async def user_history(request: Request) -> Response:
    """``GET /api/user/usage/history?from=&to=&group=day|route|key&format=json|csv``."""
    account_id = await _caller(request)
    wanted = usage.history_query(request.query_params)
    services: Services = request.app.state.services
    buckets = await usage.usage_history(services, wanted, account_id=account_id)
    if wanted.format == "csv":
        return Response(
            csvexport.document(usage.HISTORY_COLUMNS, map(usage.history_row, buckets)),
            media_type=CSV_TYPE,
            headers=csv_headers(f"usage-{wanted.grouping}"),
        )
    return JSONResponse({"success": True, **usage.history_view(wanted, buckets)})


async def user_ledger(request: Request) -> Response:
    """``GET /api/user/ledger?from=&to=&format=json|csv``: the range's movements, oldest
    first; CSV streams every row, JSON answers at most ``limit`` (default 10, at most 100)."""
    account_id = await _caller(request)
    wanted = usage.history_query(request.query_params, groupings=("day",))
    services: Services = request.app.state.services
    rows = usage.ledger_rows(services, wanted, account_id=account_id)
    if wanted.format == "csv":
        return StreamingResponse(
            csvexport.stream(usage.LEDGER_COLUMNS, (usage.ledger_row(r) async for r in rows)),
            media_type=CSV_TYPE,
            headers=csv_headers("ledger"),
        )
    entries = []
    async for record in rows:
        entries.append(usage.ledger_entry_view(record))
        if len(entries) == wanted.limit:
            break
    await rows.aclose()
    return JSONResponse(
        {
            "success": True,
            "from": usage.iso(wanted.start),
            "to": usage.iso(wanted.end),
            "entries": entries,
        }
    )


def history_routes() -> list[Route]:
    return [
        Route("/api/user/usage/history", user_history, methods=["GET"]),
        Route("/api/user/ledger", user_ledger, methods=["GET"]),
    ]
