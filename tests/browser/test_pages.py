"""The dashboard and the console in a real browser (Chromium), against ``creditgate demo``:
what a holder and an operator do, with screenshots at desktop and phone width."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import ADMIN_TOKEN, Demo

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SYNC_TIMEOUT_S = 15.0


def shoot(page: Page, folder: Path, name: str) -> None:
    """``<name>-desktop.png`` and ``<name>-phone.png``, the whole page."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def accept(dialog: Dialog) -> None:
    dialog.accept()


def api(demo: Demo, path: str, **params: str) -> Any:
    answer = httpx.get(
        demo.gateway + path, params=params, headers={"Authorization": f"Bearer {demo.api_key}"}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def chart_range() -> dict[str, str]:
    """The dashboard's chart range: the last 30 UTC days, today included."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end += timedelta(days=1)
    return {"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}


def chart_values(page: Page) -> list[int]:
    bars = page.locator("figure").first.locator("rect")
    return [int(v) for v in bars.evaluate_all("rs => rs.map(r => r.dataset.value)")]


def charged_today(demo: Demo) -> int:
    history = api(demo, "/api/user/usage/history", **chart_range())
    return int(history["buckets"][-1]["creditsCharged"])


def test_a_holder_signs_in_sees_usage_makes_a_call_manages_keys_and_signs_out(
    page: Page, demo: Demo, screenshots: Path
) -> None:
    page.goto(demo.signin_url)
    expect(page.locator("h1")).to_have_text(f"Account {demo.account_id}")
    usage = api(demo, "/api/user/usage")["usage"]
    expect(page.locator("#credits-left")).to_have_text(str(usage["creditsRemaining"]))
    expect(page.locator("#tier")).to_have_text(usage["subscriptionTier"])
    history = api(demo, "/api/user/usage/history", **chart_range())
    assert chart_values(page) == [b["creditsCharged"] for b in history["buckets"]]

    before = charged_today(demo)
    paid = httpx.post(
        demo.gateway + "/api/projects/start-workflow",
        headers={"Authorization": f"Bearer {demo.api_key}"},
        json={"prompt": "a todo app"},
    )
    assert paid.status_code == 200, paid.text
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while charged_today(demo) == before:
        assert time.monotonic() < deadline, "the sync worker did not record the call"
        time.sleep(0.2)
    page.reload()
    expect(page.locator("#credits-left")).to_have_text(str(usage["creditsRemaining"] - 1))
    assert chart_values(page)[-1] == before + 1 == charged_today(demo)
    assert page.locator("#ledger tbody tr").count() >= 1
    shoot(page, screenshots, "dashboard")

    page.get_by_label("Name of a new key").fill("browser-ci")
    page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#new-key")
    expect(new_key).to_be_visible()
    assert new_key.input_value().startswith("cg_")
    secret = new_key.input_value()
    shoot(page, screenshots, "dashboard-new-key")
    page.goto(f"{demo.gateway}/dashboard")  # (a reload would post the form again)
    assert secret not in page.content()
    page.once("dialog", accept)
    page.get_by_role("button", name="Revoke browser-ci").click()
    expect(page.locator("#keys")).to_contain_text("revoked")
    refused = httpx.post(
        demo.gateway + "/api/projects/start-workflow",
        headers={"Authorization": f"Bearer {secret}"},
        json={},
    )
    assert refused.status_code == 401

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    shoot(page, screenshots, "dashboard-signin")


def test_an_operator_finds_an_account_and_grants_credits_the_holder_sees(
    page: Page, demo: Demo, screenshots: Path
) -> None:
    page.goto(f"{demo.gateway}/admin/ui/accounts/{demo.account_id}")
    expect(page.get_by_label("Admin token")).to_be_visible()  # refused without the token
    assert page.locator("#credits-left").count() == 0
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the admin token")

    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#overview")).to_be_visible()
    page.get_by_label("Find an account").fill(demo.account_id[:6])
    page.get_by_role("button", name="Search").click()
    shoot(page, screenshots, "console")
    assert ADMIN_TOKEN not in page.content()
    page.locator("#accounts").get_by_role("link", name=demo.account_id).click()
    before = int(page.locator("#credits-left").inner_text())
    page.get_by_label("Credits to grant").fill("25")
    page.locator("#grant-reason").fill("browser test goodwill")
    page.once("dialog", accept)
    page.get_by_role("button", name="Grant credits").click()
    expect(page.get_by_role("status")).to_contain_text("grant: done")
    expect(page.locator("#credits-left")).to_have_text(str(before + 25))
    shoot(page, screenshots, "console-account")

    holder = page.context.browser.new_page() if page.context.browser else page
    holder.goto(f"{demo.gateway}/dashboard")
    holder.get_by_label("API key").fill(demo.api_key)
    holder.get_by_role("button", name="Sign in").click()
    expect(holder.locator("#credits-left")).to_have_text(str(before + 25))
    expect(holder.locator("#bonus-credits")).not_to_have_text("0")
