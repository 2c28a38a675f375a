"""The one way async code calls the synchronous store of record.

``in_store(db, work)`` runs ``work(session)`` in a worker thread inside one transaction
(``store.database.session``: committed when it returns, rolled back if it raises) and converts
the store's errors once: a ``StoreError`` becomes ``Unavailable``, except the kinds the caller
names in ``passing``, which it handles itself (a duplicate id, a bad cursor). ``in_thread(work)``
does the same for a ``store.direct`` call, which brings its own connection.

SQLAlchemy is imported at the first ``in_store``, not with this module: a serving process that
only proxies never loads it (issue 16, ``tests/test_imports.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from gateway.errors import Unavailable
from store.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session

T = TypeVar("T")


async def in_store(
    db: Engine,
    work: Callable[[Session], T],
    *,
    passing: tuple[type[StoreError], ...] = (),
) -> T:
    """``work(session)`` in a thread and one transaction; ``Unavailable`` when the store fails."""
    from store.database import session

    def call() -> T:
        with session(db) as s:
            return work(s)

    return await in_thread(call, passing=passing)


async def in_thread(work: Callable[[], T], *, passing: tuple[type[StoreError], ...] = ()) -> T:
    """``work()`` in a thread; ``Unavailable`` when the store fails."""
    try:
        return await asyncio.to_thread(work)
    except passing:
        raise
    except StoreError as exc:
        raise Unavailable(f"store: {exc}") from exc
