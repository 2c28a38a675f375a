"""Which schema this version of the code reads and writes: the head of its migrations.

Read from the migration files' headers, without Alembic or SQLAlchemy, so that a serving
process can check a store (``store.direct``) without loading either.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

MIGRATIONS = Path(__file__).with_name("migrations")


@functools.cache
def head_revision() -> str:
    """The newest migration: the schema this version of the code reads and writes.

    Read from the ``revision`` / ``down_revision`` assignments of the migration files (the
    one no other file revises), so that checking the schema does not load Alembic;
    ``tests/store`` proves it is Alembic's own head.
    """
    revised: dict[str, str | None] = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
        names: dict[str, Any] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                    names[target.id] = ast.literal_eval(value)
        revised[names["revision"]] = names.get("down_revision")
    heads = set(revised) - set(revised.values())
    assert len(heads) == 1, f"the store ships one line of migrations, found heads {heads}"
    return heads.pop()
