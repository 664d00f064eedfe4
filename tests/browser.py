"""Headless Chromium for tests: the system package (`/usr/bin/chromium`, which `make test` installs),
driven by playwright. Playwright never downloads a browser here.

    from browser import open_page, save_screenshot

    with open_page("http://127.0.0.1:5000/#/experiments/1") as (page, console_errors):
        page.get_by_text("trial-").first.wait_for()   # any playwright Page call
        print(save_screenshot(page, tmp_path / "ui.png"))
    assert not console_errors

`open_page` takes a URL or a local file (an HTML report: a `Path`, or a string without a scheme).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

CHROMIUM = Path("/usr/bin/chromium")


class OpenPage(NamedTuple):
    page: object  # playwright.sync_api.Page
    console_errors: list[str]  # console.error messages and uncaught exceptions, as they happen


@contextmanager
def open_page(target: str | Path, timeout_s: float = 30, width: int = 1400, height: int = 900) -> Iterator[OpenPage]:
    """The page loaded (its `load` event fired) in a fresh headless Chromium, closed on exit.

    `console_errors` keeps filling while the block runs: check it after waiting for what you need.
    `timeout_s` is playwright's default for every wait on the page."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"no {CHROMIUM}: `make test` installs it (Debian package `chromium`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_s * 1000)
            console_errors: list[str] = []
            page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
            page.on("pageerror", lambda error: console_errors.append(f"uncaught: {error}"))
            page.goto(as_url(target), wait_until="load")
            yield OpenPage(page, console_errors)
        finally:
            browser.close()


def as_url(target: str | Path) -> str:
    if isinstance(target, Path) or "://" not in target:
        return Path(target).resolve().as_uri()
    return target


def save_screenshot(page, path: Path, full_page: bool = True) -> Path:
    """A PNG of the page as it is now (the whole scrollable page by default); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path
