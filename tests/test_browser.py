"""A person in a browser: upload photos, watch a tune train on the tiny branch, generate, open the pack gallery.

Drives Debian's chromium (`/usr/bin/chromium`, installed by `.ci/run`) with Playwright against the launched
app. Each tab is screenshotted; with `TUNES_UPDATE_SCREENSHOTS=1` the pictures replace those in `docs/`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import astronaut_photos, served_app, settings_with_tiny

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parent.parent / "docs"
# the machine's network is closed: no background requests, no sandbox (root in CI), software rendering
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# every browser test module imports this one: under the whole suite a 2-core machine answers slower than
# Playwright's 5 s default, so `expect` waits up to 20 s (a passing check still returns as soon as it holds)
EXPECT_TIMEOUT_MS = 20_000
if CHROMIUM.exists():
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_sd15_dir):
    settings = replace(settings_with_tiny(tmp_path_factory.mktemp("browser"), tiny_sd15_dir), local_user="ann")
    with served_app(settings) as url:
        yield url


@contextmanager
def browser_page(url: str) -> Iterator[Any]:
    """A Playwright page in Debian's chromium, opened at `url` (one per test module: the browser tests share it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(url)
        try:
            yield page
        finally:
            browser.close()


@contextmanager
def person(chromium: Any, url: str, user: str | None = None, password: str | None = None) -> Iterator[Any]:
    """A page of `user`, signed in with `password` (Gradio's login), or with no user a signed-out visitor; each
    in a browser context of its own (its own cookies). The page is not opened at any address yet."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    if user:
        assert page.request.post(f"{url}login", form={"username": user, "password": password}).ok
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def page(app_url):
    with browser_page(app_url) as page:
        yield page


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for index, photo in enumerate(astronaut_photos()):
        path = folder / f"me-{index}.jpg"
        photo.save(path, quality=92)
        paths.append(str(path))
    return paths


def screenshot(page, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TUNES_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(path, DOCS / f"{name}.png")


def images_show(page, selector: str, count: int) -> None:
    """Wait until `count` images under `selector` have loaded (Gradio's file route served each to this user)."""
    page.wait_for_function(
        """([selector, count]) => {
            const images = [...document.querySelectorAll(selector)];
            return images.length === count && images.every((image) => image.complete && image.naturalWidth > 0);
        }""",
        arg=[selector, count],
    )


def test_upload_photos_and_watch_the_tune_train(page, photo_files, tmp_path):
    page.get_by_role("tab", name="Create tune").click()
    page.locator("#tune-photos input[type=file]").set_input_files(photo_files)
    report = page.locator("#photo-report")
    report.get_by_text("me-3.jpg").wait_for()
    cells = [cell.inner_text().strip() for cell in report.locator("[role=gridcell]").all()]
    rows = [cells[i : i + 7] for i in range(0, len(cells), 7)]  # photo, size, faces, likeness, sharpness, used, advice
    assert [(row[0], row[5], row[6]) for row in rows] == [(f"me-{i}.jpg", "yes", "looks good") for i in range(4)]
    page.get_by_label("Title").fill("Browser tune")
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Training steps").fill("3")
    page.locator("#create-tune").click()
    page.locator("#tune-progress [data-status=trained]").wait_for(timeout=120_000)
    assert "Browser tune" in page.locator("#tune-progress").inner_text()
    screenshot(page, "create-tune", tmp_path)


def test_generate_with_the_trained_tune(page, tmp_path):
    page.get_by_role("tab", name="Generate").click()
    page.locator("#generate-tune input").click()  # focusing the picker refreshes the list of tunes
    page.get_by_role("option", name="Browser tune").first.click()
    page.get_by_text("Advanced options").click()
    page.get_by_label("number input for Steps").fill("4")
    page.locator("#generate-run").click()
    page.locator("#generate-status").get_by_text("Done").wait_for(timeout=120_000)
    images_show(page, "#generate-gallery img", 4)
    assert "sks woman" in page.locator("#generate-status").inner_text()
    screenshot(page, "generate", tmp_path)


def test_open_the_pack_gallery_and_use_a_pack(page, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Pack gallery").click()
    page.locator("#pack-filter").get_by_label("cat", exact=True).check()  # the class filter: only packs for cats remain
    expect(page.locator("#pack-cards img")).to_have_count(1)
    expect(page.locator("#pack-cards")).to_contain_text("Pets in costumes")
    page.locator("#pack-filter").get_by_label("all", exact=True).check()
    expect(page.locator("#pack-cards img")).to_have_count(8)
    images_show(page, "#pack-cards img", 8)
    page.locator("#pack-cards img").first.click()
    page.locator("#use-pack").wait_for()
    screenshot(page, "pack-gallery", tmp_path)
    page.locator("#use-pack").click()  # back to the create-tune form, with the pack chosen
    expect(page.get_by_label("Pack", exact=True)).to_have_value(re.compile("Corporate headshots"))
    expect(page.locator("#create-tune")).to_be_visible()


def test_account_and_admin_tabs(page, tmp_path):
    page.get_by_role("tab", name="Account").click()
    page.get_by_text("Signed in as").wait_for()
    assert "ann" in page.locator("#account-who").inner_text()
    page.get_by_role("button", name="Create a new API key").click()
    key = page.locator("#new-api-key textarea, #new-api-key input").first
    key.wait_for()
    assert key.input_value().startswith("tsk_")
    screenshot(page, "account", tmp_path)
    page.get_by_role("tab", name="Admin").click()  # the single local user runs the place
    page.get_by_role("button", name="Refresh").click()
    page.locator("#admin-tunes [role=gridcell]", has_text="Browser tune").first.wait_for()
    screenshot(page, "admin", tmp_path)
