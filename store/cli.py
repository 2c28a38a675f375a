"""``creditgate db upgrade``: migrate the store of record to the newest schema."""

from __future__ import annotations

import argparse
import sys
from typing import Protocol

from store.database import create_db_engine, current_revision, normalize_url, upgrade_engine
from store.errors import StoreError


class StoreSettings(Protocol):
    """What this command needs of the gateway's settings (the store imports nothing above it)."""

    @property
    def database_url(self) -> str: ...


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="the store of record")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = actions.add_parser("upgrade", help="apply the database migrations (idempotent)")
    up.set_defaults(run=run_upgrade)


def run_upgrade(args: argparse.Namespace, settings: StoreSettings) -> int:
    """Migrate ``settings.database_url`` to head and say what changed (password hidden)."""
    where = normalize_url(settings.database_url).render_as_string(hide_password=True)
    engine = create_db_engine(settings.database_url)
    try:
        before = current_revision(engine)
        upgrade_engine(engine)
        after = current_revision(engine)
    except StoreError as exc:
        print(f"creditgate db upgrade: {where}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if before == after:
        print(f"{where}: already at revision {after}, nothing to do")
    else:
        print(f"{where}: upgraded from {before or 'an empty database'} to revision {after}")
    return 0
