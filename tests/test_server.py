"""``creditgate serve``'s options as uvicorn gets them (uvicorn itself is not started)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.server import serve
from gateway.settings import Settings
from store.database import upgrade


@pytest.mark.parametrize("flag", [True, False])
def test_access_log_turns_on_the_gateways_line_never_uvicorns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    ran: dict[str, Any] = {}

    def run(app: Any, **options: Any) -> None:
        ran.update(options, app=app)

    monkeypatch.setattr(uvicorn, "run", run)
    args = argparse.Namespace(
        host="127.0.0.1", port=0, workers=1, access_log=flag, log_level="WARNING"
    )
    assert serve(args, Settings.load(redis_url="embedded", database_url=url)) == 0
    assert ran["access_log"] is False
    assert ran["app"].state.settings.access_log is flag
