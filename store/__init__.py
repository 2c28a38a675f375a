"""The store of record: accounts, API key hashes and the ledger of every credit movement.

Redis is the live truth; the sync worker copies each movement here exactly once
(``repository.apply_movements``) and the gateway restores an account from here when Redis has
lost it. Synchronous SQLAlchemy (SQLModel tables, Alembic migrations) on SQLite or
PostgreSQL; it imports neither ``gateway`` nor ``sync``.

- ``database``: engines, the ``session`` transaction, ``upgrade`` (migrations to head)
- ``direct``: the serving path's statements (a key, ``last_used_at``, the schema's revision) on
  the DB-API driver, without SQLAlchemy; ``schema``: the revision this code needs
- ``models``: the tables; ``records``: the dataclasses the functions take and return
- ``repository``: every read and write, keyword-only; ``movements``: the sync's write path
- ``errors``: what it raises; ``timefmt``: milliseconds <-> aware UTC datetimes
"""
