"""The one way async code calls the synchronous store of record.

``in_store(db, work)`` runs ``work(session)`` in a worker thread inside one transaction
(``store.database.session``: committed when it returns, rolled back if it raises) and converts
the store's errors once: a ``StoreError`` becomes ``Unavailable``, except the kinds the caller
names in ``passing``, which it handles itself (a duplicate id, a bad cursor).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from gateway.errors import Unavailable
from store.database import session
from store.errors import StoreError

T = TypeVar("T")


async def in_store(
    db: Engine,
    work: Callable[[Session], T],
    *,
    passing: tuple[type[StoreError], ...] = (),
) -> T:
    """``work(session)`` in a thread and one transaction; ``Unavailable`` when the store fails."""

    def call() -> T:
        with session(db) as s:
            return work(s)

    try:
        return await asyncio.to_thread(call)
    except passing:
        raise
    except StoreError as exc:
        raise Unavailable(f"store: {exc}") from exc
