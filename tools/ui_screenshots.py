"""Refresh docs/img/ui-{search,entry,explain}.png, the screenshots of docs/ui.md.

`.venv/bin/python tools/ui_screenshots.py [--account 9]` builds the demo project in a
temporary folder, serves it with `tally ui` on a free port, and photographs three pages in
Debian's headless Chromium (as tests/test_ui_browser.py drives it): the search for a query
with typos, crm_monthly_active_users' entry page and one account's score explanation.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "img"
TALLY = Path(sys.executable).with_name("tally")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# the size of the images before them
SHORT = ViewportSize(width=1000, height=560)
TALL = ViewportSize(width=1000, height=900)


def shoot(page: Page, base: str, account: str) -> None:
    page.set_viewport_size(SHORT)
    page.goto(base + "/")
    page.locator("#q").fill("montly activ")
    expect(page.locator("#hits .hit-name").first).to_have_text("crm_monthly_active_users")
    page.screenshot(path=IMAGES / "ui-search.png")
    page.set_viewport_size(TALL)
    page.goto(base + "/metric/crm_monthly_active_users.html")
    expect(page.locator("svg.lineage")).to_be_visible()
    page.screenshot(path=IMAGES / "ui-entry.png")
    page.set_viewport_size(SHORT)
    page.goto(f"{base}/score/net_adoption_score/explain/{account}.html")
    expect(page.locator("svg.waterfall")).to_be_visible()
    page.screenshot(path=IMAGES / "ui-explain.png")


def wait_listening(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--account", default="9", help="the account whose score is explained")
    account = parser.parse_args().account
    expect.set_options(timeout=60_000)  # a waiting bound on a busy machine
    with tempfile.TemporaryDirectory(prefix="tally-shots-") as tmp:
        project = Path(tmp) / "tally-demo"  # the header reads "catalog of tally-demo"
        subprocess.run([str(TALLY), "demo", str(project)], check=True, capture_output=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([str(TALLY), "ui", "--port", str(port)], cwd=project,
                                  stdout=subprocess.DEVNULL)
        try:
            wait_listening(port)
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=ARGS)
                shoot(browser.new_page(), f"http://127.0.0.1:{port}", account)
                browser.close()
        finally:
            server.terminate()
            server.wait()
    for name in ("ui-search.png", "ui-entry.png", "ui-explain.png"):
        print(f"{IMAGES / name}: {(IMAGES / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
