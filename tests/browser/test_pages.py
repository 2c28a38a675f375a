"""The dashboard and the console in a real browser (Chromium), against ``creditgate demo``:
what a holder and an operator do, with screenshots at desktop and phone width."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Dialog, Page, expect

from tests.browser.conftest import ADMIN_TOKEN, Demo

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SYNC_TIMEOUT_S = 15.0


async def shoot(page: Page, folder: Path, name: str) -> None:
    """``<name>-desktop.png`` and ``<name>-phone.png``, the whole page."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)  # type: ignore[arg-type]
        await page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)  # type: ignore[arg-type]


async def accept(dialog: Dialog) -> None:
    await dialog.accept()


async def api(demo: Demo, path: str, **params: str) -> Any:
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            demo.gateway + path,
            params=params,
            headers={"Authorization": f"Bearer {demo.api_key}"},
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def call(demo: Demo, key: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            demo.gateway + "/api/projects/start-workflow",
            headers={"Authorization": f"Bearer {key}"},
            json={"prompt": "a todo app"},
        )


def chart_range() -> dict[str, str]:
    """The dashboard's chart range: the last 30 UTC days, today included."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end += timedelta(days=1)
    return {"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}


async def chart_values(page: Page) -> list[int]:
    bars = page.locator("figure").first.locator("rect")
    values = await bars.evaluate_all("rs => rs.map(r => r.dataset.value)")
    return [int(v) for v in values]


async def charged_today(demo: Demo) -> int:
    history = await api(demo, "/api/user/usage/history", **chart_range())
    return int(history["buckets"][-1]["creditsCharged"])


async def test_a_holder_signs_in_sees_usage_makes_a_call_manages_keys_and_signs_out(
    page: Page, demo: Demo, screenshots: Path
) -> None:
    await page.goto(demo.signin_url)
    await expect(page.locator("h1")).to_have_text(f"Account {demo.account_id}")
    usage = (await api(demo, "/api/user/usage"))["usage"]
    await expect(page.locator("#credits-left")).to_have_text(str(usage["creditsRemaining"]))
    await expect(page.locator("#tier")).to_have_text(usage["subscriptionTier"])
    history = await api(demo, "/api/user/usage/history", **chart_range())
    assert await chart_values(page) == [b["creditsCharged"] for b in history["buckets"]]

    before = await charged_today(demo)
    paid = await call(demo, demo.api_key)
    assert paid.status_code == 200, paid.text
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while await charged_today(demo) == before:
        assert time.monotonic() < deadline, "the sync worker did not record the call"
        await asyncio.sleep(0.2)
    await page.reload()
    await expect(page.locator("#credits-left")).to_have_text(str(usage["creditsRemaining"] - 1))
    assert (await chart_values(page))[-1] == before + 1 == await charged_today(demo)
    assert await page.locator("#ledger tbody tr").count() >= 1
    await shoot(page, screenshots, "dashboard")

    await page.get_by_label("Name of a new key").fill("browser-ci")
    await page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#new-key")
    await expect(new_key).to_be_visible()
    secret = await new_key.input_value()
    assert secret.startswith("cg_")
    await shoot(page, screenshots, "dashboard-new-key")
    await page.reload()  # posts the form again: refused, the secret is not shown again
    await expect(page.get_by_role("alert")).to_contain_text("sent already")
    assert secret not in await page.content()
    page.once("dialog", accept)
    await page.get_by_role("button", name="Revoke browser-ci").click()
    await expect(page.locator("#keys")).to_contain_text("revoked")
    assert (await call(demo, secret)).status_code == 401

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    await shoot(page, screenshots, "dashboard-signin")


async def test_an_operator_finds_an_account_and_grants_credits_the_holder_sees(
    page: Page, demo: Demo, screenshots: Path
) -> None:
    await page.goto(f"{demo.gateway}/admin/ui/accounts/{demo.account_id}")
    await expect(page.get_by_label("Admin token")).to_be_visible()  # refused without it
    assert await page.locator("#credits-left").count() == 0
    await page.get_by_label("Admin token").fill("not-the-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not the admin token")

    await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#overview")).to_be_visible()
    await page.get_by_label("Find an account").fill(demo.account_id[:6])
    await page.get_by_role("button", name="Search").click()
    await shoot(page, screenshots, "console")
    assert ADMIN_TOKEN not in await page.content()
    await page.locator("#accounts").get_by_role("link", name=demo.account_id).click()
    before = int(await page.locator("#credits-left").inner_text())
    await page.get_by_label("Credits to grant").fill("25")
    await page.locator("#grant-reason").fill("browser test goodwill")
    page.once("dialog", accept)
    await page.get_by_role("button", name="Grant credits").click()
    await expect(page.get_by_role("status")).to_contain_text("grant: done")
    await expect(page.locator("#credits-left")).to_have_text(str(before + 25))
    await shoot(page, screenshots, "console-account")

    holder = await page.context.new_page()
    await holder.goto(f"{demo.gateway}/dashboard")
    await holder.get_by_label("API key").fill(demo.api_key)
    await holder.get_by_role("button", name="Sign in").click()
    await expect(holder.locator("#credits-left")).to_have_text(str(before + 25))
    await expect(holder.locator("#bonus-credits")).not_to_have_text("0")


async def spent_of(page: Page, name: str) -> str:
    return await page.locator("#keys tr", has_text=name).locator("[data-spent]").inner_text()


async def test_a_holder_makes_a_key_with_a_credit_limit_uses_it_and_changes_the_limit(
    page: Page, demo: Demo, screenshots: Path
) -> None:
    await page.goto(f"{demo.gateway}/dashboard")
    await page.get_by_label("API key").fill(demo.api_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Name of a new key").fill("browser-limited")
    await page.locator("#key-credit-limit").fill("3")
    await page.locator("#key-rpm").fill("30")
    await page.locator("#create-key").get_by_label("/api/projects/").check()
    await page.get_by_role("button", name="Create key").click()
    secret = await page.locator("#new-key").input_value()
    assert secret.startswith("cg_")
    row = page.locator("#keys tr", has_text="browser-limited")
    await expect(row.locator("[data-limits]")).to_contain_text("30 requests/min")
    await expect(row.locator("[data-limits]")).to_contain_text("routes /api/projects")
    assert (await spent_of(page, "browser-limited")).strip() == "0 / 3 credits"

    paid = await call(demo, secret)
    assert paid.status_code == 200, paid.text
    await page.goto(f"{demo.gateway}/dashboard")  # the spend is read live: no sync to wait for
    await expect(row.locator("[data-spent]")).to_have_text("1 / 3 credits")
    key_id = await row.get_attribute("data-key-id")
    await page.get_by_text("Change limits of browser-limited").click()
    # A past expiry passes the browser's own checks (a negative limit would not): the server's
    # refusal is shown next to the form.
    await page.locator(f"#edit-{key_id}-expires").fill("2001-01-01T00:00")
    await page.get_by_role("button", name="Save limits of browser-limited").click()
    await expect(page.locator(f"#edit-{key_id}-error")).to_contain_text("in the future")
    await page.locator(f"#edit-{key_id}-expires").fill("")
    await page.locator(f"#edit-{key_id}-credit-limit").fill("10")
    await page.get_by_role("button", name="Save limits of browser-limited").click()
    await expect(page.get_by_role("status")).to_contain_text("Limits of key browser-limited saved")
    await expect(row.locator("[data-spent]")).to_have_text("1 / 10 credits")
    await shoot(page, screenshots, "dashboard-keys")

    browser = page.context.browser
    assert browser is not None
    limited = await (await browser.new_context()).new_page()  # the limited key's own session
    await limited.goto(f"{demo.gateway}/dashboard")
    await limited.get_by_label("API key").fill(secret)
    await limited.get_by_role("button", name="Sign in").click()
    await expect(limited.locator("#keys-limited")).to_contain_text("limits of its own")
    assert await limited.get_by_role("button", name="Create key").count() == 0


async def test_an_operator_creates_a_limited_key_on_the_console(
    page: Page, demo: Demo, screenshots: Path
) -> None:
    await page.goto(f"{demo.gateway}/admin/ui")
    await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.goto(f"{demo.gateway}/admin/ui/accounts/{demo.account_id}")
    await page.get_by_label("Name of a new key").fill("partner")
    await page.locator("#key-credit-limit").fill("7")
    await page.locator("#key-expires").fill("2099-06-30T12:00")
    await page.locator("#key-reason").fill("partner trial")
    page.once("dialog", accept)
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_role("status").first).to_contain_text("created")
    secret = await page.locator("#new-key").input_value()
    assert secret.startswith("cg_")
    row = page.locator("#keys tr", has_text="partner")
    await expect(row.locator("[data-spent]")).to_have_text("0 / 7 credits")
    await expect(row.locator("[data-limits]")).to_contain_text("expires 2099-06-30 12:00 UTC")
    assert (await call(demo, secret)).status_code == 200
    await page.goto(f"{demo.gateway}/admin/ui/accounts/{demo.account_id}")
    await expect(row.locator("[data-spent]")).to_have_text("1 / 7 credits")
    await shoot(page, screenshots, "console-keys")
