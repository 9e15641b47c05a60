"""The web catalog in a real browser: Debian's headless Chromium driven by Playwright, on
the served catalog and on its static build opened from files. A user types a query with a
typo, opens the first hit and finds its owner, its lineage graph and a model reading it,
then explains one entity's score; a script in a description never runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.web_support import HOSTILE, METRIC, OWNER, SCORE, Served

CHROMIUM = "/usr/bin/chromium"
expect.set_options(timeout=30_000)  # a waiting bound on a busy machine, not a timing check
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, errors


def _hit(page: Page, name: str) -> Locator:
    return page.locator("#hits .hit").filter(has=page.get_by_role("link", name=name, exact=True))


def _search_open_and_check(page: Page, start: str) -> None:
    page.goto(start)
    # typos: montly, activ; typed at once, so no later keystroke re-renders the hits
    # between the check below and the click (a click on a replaced link goes nowhere)
    page.locator("#q").fill("montly activ")
    first = page.locator("#hits .hit-name").first
    expect(first).to_have_text(METRIC)
    first.click()
    expect(page.locator("#entry-name")).to_contain_text(METRIC)
    expect(page.locator("#owner")).to_have_text(OWNER)
    graph = page.locator("svg.lineage")
    expect(graph).to_be_visible()
    expect(graph.locator('[data-id="source:crm_logins"]')).to_have_count(1)
    expect(graph.locator('[data-id="model:churn_risk"]')).to_have_count(1)
    model = page.locator("#models a", has_text="churn_risk")
    expect(model).to_be_visible()
    # the description's <script> and onerror handler are shown as text, never run
    expect(page.locator("#description")).to_contain_text(HOSTILE)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    model.click()
    expect(page.locator("#entry-name")).to_contain_text("churn_risk")


def _explain_one(page: Page, score_page: str) -> None:
    page.goto(score_page)
    expect(page.locator("#segments")).to_be_visible()
    key = page.locator("#segments a.example").first.inner_text()
    page.locator("#entity-key").fill(key)
    page.locator("#explain-form button").click()
    expect(page.locator("#explain-title")).to_contain_text(f"account {key}")
    expect(page.locator("svg.waterfall")).to_be_visible()
    rows = page.locator("#components tbody tr")
    expect(rows).to_have_count(6)  # five components (the fifth a funnel) and the total
    expect(rows.first.locator("a")).to_have_text("crm_active_user_ratio")


def test_served_catalog_in_a_browser(page: Page, web_server: Served) -> None:
    _search_open_and_check(page, web_server.base + "/")
    _explain_one(page, f"{web_server.base}/score/{SCORE}.html")


def test_served_search_hits_hold_no_markup(page: Page, web_server: Served) -> None:
    page.goto(web_server.base + "/")
    page.locator("#q").press_sequentially("distinct users")
    hit = _hit(page, METRIC)
    expect(hit.locator(".description")).to_contain_text("<script>window.__pwned = 1</script>")
    expect(page.locator("#hits script, #hits img")).to_have_count(0)
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_static_build_in_a_browser(page: Page, static_site: Path) -> None:
    _search_open_and_check(page, (static_site / "index.html").as_uri())
    _explain_one(page, (static_site / "score" / f"{SCORE}.html").as_uri())
    page.goto((static_site / "index.html").as_uri())
    page.locator("#q").press_sequentially("distinct users")
    expect(_hit(page, METRIC).locator(".description")).to_contain_text(HOSTILE)
    expect(page.locator("#hits script, #hits img")).to_have_count(0)
    assert page.evaluate("typeof window.__pwned") == "undefined"
