"""Where the tests find the real Redis and PostgreSQL.

Where a session shares the machine's servers with another run, point the tests elsewhere with
CREDITGATE_TEST_REDIS_URL (a spare db number) and CREDITGATE_TEST_PG_URL.
"""

from __future__ import annotations

import os

REDIS_URL = os.environ.get("CREDITGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
PG_URL = os.environ.get(
    "CREDITGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
