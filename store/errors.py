"""What the store of record raises. Driver errors are converted once, at the repository boundary.

::

    StoreError
    ├── StoreUnavailable   the database cannot be reached or refused to work (retry later)
    ├── DuplicateAccount   create_account with an id that exists
    ├── DuplicateApiKey    create_api_key with a key id or key hash that exists
    ├── UnknownAccount     an API key for an account the store does not have
    └── InvalidCursor      ledger_page with a cursor that is not an event of that account
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database is unreachable, or the operation failed for a reason worth retrying."""


class DuplicateAccount(StoreError):
    """An account with that id exists already."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id!r} exists already")
        self.account_id = account_id


class DuplicateApiKey(StoreError):
    """An API key with that id or hash exists already."""


class UnknownAccount(StoreError):
    """The account the operation names is not in the store."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"no account {account_id!r}")
        self.account_id = account_id


class InvalidCursor(StoreError, ValueError):
    """A ledger cursor that does not name an event of the account."""
