"""What a serving process loads: not Alembic, which only migrates (``creditgate db upgrade``),
nor the other commands' code (the sync worker's HTTP client, httpx, and its console libraries),
nor Jinja2, which only the pages need (loaded at the first page shown, ``gateway.ui.pages``).

Checked in a fresh interpreter, as ``creditgate serve`` runs: the command line parsed, the
store's schema checked, the app built. (SQLAlchemy is still loaded: every worker looks API
keys up in the store.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from store.database import upgrade

STARTS = """
import sys
from gateway.cli import SERVE_MODULE, build_parser, serving
from gateway.app import create_app
from gateway.services import check_store
from gateway.settings import Settings

argv = ["--log-level", "WARNING", "serve", "--port", "8081"]
assert serving(argv)
build_parser(SERVE_MODULE).parse_args(argv)
settings = Settings.load(database_url=sys.argv[1])
check_store(settings, "creditgate serve")
create_app(settings, server=True)
watched = ("alembic", "httpx", "jinja2", "sqlalchemy", "sync")
print(",".join(sorted(m for m in watched if m in sys.modules)))
"""


def test_a_server_imports_no_alembic_no_jinja2_nor_other_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", STARTS, url],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == ["sqlalchemy"], done.stdout + done.stderr


def test_only_serve_narrows_the_parser() -> None:
    from gateway.cli import serving

    assert serving(["serve"]) and serving(["--log-level", "DEBUG", "serve", "--workers", "2"])
    assert not serving(["sync"]) and not serving(["db", "upgrade"]) and not serving([])
    assert not serving(["--help"]) and not serving(["demo", "--port", "8080"])
