"""Browser tests: Playwright driving Debian's Chromium at ``/usr/bin/chromium`` (its
``executable_path``: Playwright's own browser download is not used) against a running
``creditgate demo`` (gateway, backends, sync worker).

They use Playwright's async API in pytest-asyncio tests, not pytest-playwright's sync ``page``
fixture: that one keeps an event loop running in the main thread for the whole session, and
every async test collected after it would fail ("Runner.run() cannot be called from a running
event loop").

Screenshots go to ``artifacts/screenshots/`` (gitignored; CI keeps them as artifacts), at
desktop and phone width. ``.ci/services`` installs chromium when it is missing; without it
these tests are skipped, saying so.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from tests.support.processes import CREDITGATE, creditgate_env

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
ADMIN_TOKEN = "browser-admin-token-" + "z" * 16
START_TIMEOUT_S = 60

pytestmark = pytest.mark.slow


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A fresh page in a fresh Chromium, closed after the test."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run .ci/services (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            yield await context.new_page()
        finally:
            await browser.close()


@dataclass(frozen=True, slots=True)
class Demo:
    gateway: str
    account_id: str
    api_key: str
    signin_url: str


def _field(text: str, name: str) -> str:
    match = re.search(rf"^\s+{name}\s+(\S+)", text, re.MULTILINE)
    assert match is not None, f"no {name!r} line in:\n{text}"
    return match[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``creditgate demo`` on a SQLite store, with an admin token for the console."""
    where = tmp_path_factory.mktemp("demo")
    env = creditgate_env(
        {
            "CREDITGATE_DATABASE_URL": f"sqlite:///{where / 'demo.db'}",
            "CREDITGATE_SYNC_INTERVAL": "0.2",
            "CREDITGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        }
    )
    with (where / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [*CREDITGATE, "demo", "--port", "0", "--codegen-port", "0", "--review-port", "0"],
            cwd=where,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        while not lines or lines[-1].rstrip() != "EOF":
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("demo exited before its announcement:\n" + "".join(lines))
            lines.append(line.decode())
        text = "".join(lines)
        yield Demo(
            gateway=_field(text, "gateway"),
            account_id=_field(text, "account"),
            api_key=_field(text, "api key"),
            signin_url=_field(text, "one-click"),
        )
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
