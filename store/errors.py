"""What the store of record raises. Driver errors are converted once, at the repository boundary.

::

    StoreError
    ├── StoreUnavailable   the database cannot be reached or refused to work (retry later)
    ├── SchemaOutdated     the database is not at this version's schema (run `db upgrade`)
    ├── DuplicateAccount   create_account with an id that exists
    ├── DuplicateApiKey    create_api_key with a key id or key hash that exists
    ├── RevokedApiKey      update_api_key on a revoked key (a revocation is final)
    ├── UnknownAccount     an API key for an account the store does not have
    └── InvalidCursor      ledger_page with a cursor that is not an event of that account
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database is unreachable, or the operation failed for a reason worth retrying."""


class SchemaOutdated(StoreError):
    """The database's schema is not the one this version needs: nothing may use it until it is
    migrated (``creditgate db upgrade``), or it would fail on every call instead of at start."""

    def __init__(self, found: str | None, wanted: str) -> None:
        at = f"at revision {found}" if found else "empty (never migrated)"
        super().__init__(
            f"the store's schema is {at}; this version needs revision {wanted}: "
            "run `creditgate db upgrade`"
        )
        self.found = found
        self.wanted = wanted


class DuplicateAccount(StoreError):
    """An account with that id exists already."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id!r} exists already")
        self.account_id = account_id


class DuplicateApiKey(StoreError):
    """An API key with that id or hash exists already."""


class RevokedApiKey(StoreError):
    """A revoked key cannot be changed: its revocation is final."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} is revoked and cannot be changed")
        self.key_id = key_id


class UnknownAccount(StoreError):
    """The account the operation names is not in the store."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"no account {account_id!r}")
        self.account_id = account_id


class InvalidCursor(StoreError, ValueError):
    """A ledger cursor that does not name an event of the account."""
