"""The one way async code calls the synchronous store of record.

``in_store(db, work)`` runs ``work(session)`` in a worker thread inside one transaction
(``store.database.session``: committed when it returns, rolled back if it raises) and converts
the store's errors once: a ``StoreError`` becomes ``Unavailable``, except the kinds the caller
names in ``passing``, which it handles itself (a duplicate id, a bad cursor). ``in_thread(work)``
does the same for a ``store.direct`` call, which brings its own connection.

SQLAlchemy is imported at the first ``in_store``, not with this module: a serving process that
only proxies never loads it (issue 16, ``tests/test_imports.py``). ``orm_loaded`` imports it in
a thread: every coroutine that imports the store's ORM modules awaits it first, since 0.2 to
0.4 s of imports in the event loop's thread would hold every request the worker serves.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from gateway.errors import Unavailable
from store.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session

T = TypeVar("T")

ORM_MODULES = ("store.database", "store.repository", "store.history")
"""What the store's ORM side is: SQLAlchemy, SQLModel and the statements on them."""
_orm_imported = False


async def orm_loaded() -> None:
    """Import ``ORM_MODULES`` in a thread, once per process (later calls return at once)."""
    global _orm_imported
    if not _orm_imported:
        await asyncio.to_thread(lambda: [importlib.import_module(m) for m in ORM_MODULES])
        _orm_imported = True


async def in_store(
    db: Engine,
    work: Callable[[Session], T],
    *,
    passing: tuple[type[StoreError], ...] = (),
) -> T:
    """``work(session)`` in a thread and one transaction; ``Unavailable`` when the store fails."""
    await orm_loaded()
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
