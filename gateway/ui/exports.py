"""Usage history and ledger answers, JSON or CSV: the same for the account holder's
``/api/user/...`` and the operators' ``/admin/usage/...``, which differ only in whose rows."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.accounts import csvexport
from gateway.accounts import history as usage
from store.records import LedgerRecord

if TYPE_CHECKING:
    from store.history import UsageBucket

CSV_TYPE = "text/csv; charset=utf-8"


def _csv_headers(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}.csv"'}


def history_answer(
    wanted: usage.HistoryQuery, buckets: list[UsageBucket], *, name: str
) -> Response:
    """The buckets as JSON, or as a CSV file ``<name>.csv`` when ``?format=csv``."""
    if wanted.format == "csv":
        body = csvexport.document(usage.HISTORY_COLUMNS, map(usage.history_row, buckets))
        return Response(body, media_type=CSV_TYPE, headers=_csv_headers(name))
    return JSONResponse({"success": True, **usage.history_view(wanted, buckets)})


async def ledger_answer(
    wanted: usage.HistoryQuery, rows: AsyncGenerator[LedgerRecord, None]
) -> Response:
    """The range's movements, oldest first: CSV streams every row, JSON answers at most
    ``limit``."""
    if wanted.format == "csv":
        return StreamingResponse(
            csvexport.stream(usage.LEDGER_COLUMNS, (usage.ledger_row(r) async for r in rows)),
            media_type=CSV_TYPE,
            headers=_csv_headers("ledger"),
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
