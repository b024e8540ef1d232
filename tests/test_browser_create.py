"""A new user's first hour on the Create tab, in a browser (issue 13): the subject they chose stays chosen, the
photo report shows every upload and counts only usable photos, and a trained tune leads on to the Generate tab.

Drives Debian's chromium with Playwright against the launched app, like `tests/test_browser.py`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import astronaut_photos, served_app, settings_with_tiny
from tests.test_browser import CHROMIUM, browser_page, images_show

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")

HEADERS = ["photo", "size", "faces", "likeness", "sharpness", "used", "advice"]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_sd15_dir):
    settings = replace(settings_with_tiny(tmp_path_factory.mktemp("browser-create"), tiny_sd15_dir), local_user="ann")
    with served_app(settings) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    with browser_page(app_url) as page:
        yield page


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uploads")


def save(folder: Path, name: str, image: Image.Image, quality: int = 92) -> str:
    path = folder / name
    image.save(path, quality=quality)
    return str(path)


def upload(page, paths: list[str]) -> None:
    page.get_by_role("tab", name="Create tune").click()
    page.locator("#tune-photos input[type=file]").set_input_files(paths)


def report_headers(page) -> list[str]:
    return [cell.inner_text().strip() for cell in page.locator("#photo-report [role=columnheader]").all()]


def report_rows(page) -> list[list[str]]:
    cells = [cell.inner_text().strip() for cell in page.locator("#photo-report [role=gridcell]").all()]
    return [cells[i : i + len(HEADERS)] for i in range(0, len(cells), len(HEADERS))]


def clear_photos(page) -> None:
    page.locator("#tune-photos").get_by_role("button", name=re.compile("Clear", re.I)).first.click()
    page.locator("#photo-report [role=gridcell]").first.wait_for(state="detached")


def use_pack(page, title: str) -> None:
    page.get_by_role("tab", name="Pack gallery").click()
    page.locator("#pack-filter").get_by_label("all", exact=True).check()
    page.locator("#pack-cards img").first.wait_for()
    page.locator("#pack-cards button", has_text=title).first.click()
    page.locator("#use-pack").click()


def test_before_any_tune_there_is_nothing_to_delete_and_steps_are_empty(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Create tune").click()
    expect(page.locator("#tune-progress")).to_contain_text("No tune yet")
    expect(page.get_by_role("button", name="Delete this tune")).to_be_hidden()
    expect(page.get_by_role("button", name="Cancel this tune")).to_be_hidden()
    expect(page.locator("#tune-avatars")).to_be_hidden()
    assert report_headers(page) == HEADERS  # an empty report has the real headers, never "1 2 3"
    page.get_by_text("Advanced settings").click()
    expect(page.get_by_label("Training steps")).to_have_value("")


def test_use_this_pack_keeps_the_subject_the_user_chose(page):
    from playwright.sync_api import expect

    subject = page.locator("#tune-subject")
    page.get_by_role("tab", name="Create tune").click()
    subject.get_by_label("woman", exact=True).check()
    use_pack(page, "Corporate headshots")  # it supports man and woman; "man" comes first

    expect(page.get_by_label("Pack", exact=True)).to_have_value(re.compile("Corporate headshots"))
    expect(subject.get_by_label("woman", exact=True)).to_be_checked()
    expect(page.locator("#pack-note")).to_be_hidden()


def test_a_pack_without_the_chosen_subject_says_so_and_waits_for_a_pick(page):
    from playwright.sync_api import expect

    subject = page.locator("#tune-subject")
    page.get_by_role("tab", name="Create tune").click()
    subject.get_by_label("cat", exact=True).check()
    use_pack(page, "Corporate headshots")

    expect(page.locator("#pack-note")).to_contain_text("has no prompts for cat")
    expect(subject.get_by_label("cat", exact=True)).to_be_checked()  # not switched behind the user's back
    expect(page.get_by_label("Pack", exact=True)).to_have_value("(no pack)")
    subject.get_by_label("man", exact=True).check()  # the user picks one of the pack's subjects
    expect(page.get_by_label("Pack", exact=True)).to_have_value(re.compile("Corporate headshots"))
    expect(page.locator("#pack-note")).to_be_hidden()
    subject.get_by_label("woman", exact=True).check()
    page.get_by_label("Pack", exact=True).click()  # no pack for the tunes made below: 48 images take a while
    page.get_by_role("option", name="(no pack)").click()
    expect(page.get_by_label("Pack", exact=True)).to_have_value("(no pack)")


def test_one_bad_file_is_marked_in_place_and_the_others_are_reported(page, folder):
    good = [save(folder, f"good-{i}.jpg", photo) for i, photo in enumerate(astronaut_photos())]
    fifth = save(folder, "good-4.jpg", astronaut_photos()[0].resize((400, 400)))
    notes = folder / "notes.jpg"  # named like a photo (the upload box only takes image names)
    notes.write_text("not a photo\n")

    upload(page, [*good[:2], str(notes), *good[2:], fifth])
    page.locator("#photo-report").get_by_text("notes.jpg").wait_for()

    assert report_headers(page) == HEADERS
    rows = report_rows(page)
    assert [row[0] for row in rows] == [
        "good-0.jpg",
        "good-1.jpg",
        "notes.jpg",
        "good-2.jpg",
        "good-3.jpg",
        "good-4.jpg",
    ]
    assert rows[2][5] == "no" and rows[2][6].startswith("refused: is not an image")
    assert [row[5] for row in rows] == ["yes", "yes", "no", "yes", "yes", "no"]  # good-4 repeats good-0
    images_show(page, "#photo-previews img", 5)  # a thumbnail for each photo; none (not a blank one) for the file
    clear_photos(page)


def test_too_few_usable_photos_are_refused_naming_each_one_left_out(page, folder, tmp_path):
    from playwright.sync_api import expect

    first, second = astronaut_photos()[:2]
    paths = [
        save(folder, "1.jpg", first),
        save(folder, "2.jpg", second),
        save(folder, "3.jpg", first, quality=60),
        save(folder, "4.jpg", second, quality=70),
        save(folder, "5.jpg", first.resize((400, 400)), quality=80),
        save(folder, "6.jpg", second, quality=50),
    ]
    upload(page, paths)
    page.locator("#photo-report").get_by_text("6.jpg").wait_for()
    banner = page.locator("#create-banner")
    expect(banner).to_contain_text("at least 4 usable photos; 2 of 6 can be used")
    expect(banner).to_contain_text("photo 5 ('5.jpg') is nearly the same as photo 1 ('1.jpg')")
    _report_fits(page)
    page.screenshot(path=str(tmp_path / "too-few.png"), full_page=True)

    page.get_by_label("Title").fill("Too few")
    page.locator("#create-tune").click()
    expect(banner).to_contain_text("Could not do that")
    expect(banner).to_contain_text("2 of 6 can be used")
    expect(page.locator("#tune-progress")).to_contain_text("No tune yet")
    clear_photos(page)


def _report_fits(page) -> None:
    """Headers stay on one line and the advice is not cut off."""
    header_heights = page.locator("#photo-report [role=columnheader]").evaluate_all(
        "cells => cells.map(cell => cell.getBoundingClientRect().height)"
    )
    assert max(header_heights) < 60, header_heights  # "sharpness" written letter by letter is ~200 px tall
    advice = page.locator("#photo-report [role=gridcell]").nth(6)
    box, table = advice.bounding_box(), page.locator("#photo-report").bounding_box()
    assert box["x"] + box["width"] <= table["x"] + table["width"] + 1, (box, table)


def test_a_trained_tune_shows_its_images_and_leads_to_the_generate_tab(page, folder, tmp_path):
    from playwright.sync_api import expect

    paths = [save(folder, f"me-{i}.jpg", photo) for i, photo in enumerate(astronaut_photos())]
    upload(page, paths)
    page.locator("#photo-report").get_by_text("me-3.jpg").wait_for()
    page.get_by_label("Title").fill("First hour")
    page.get_by_label("Training steps").fill("3")
    page.locator("#create-tune").click()
    page.locator("#tune-progress [data-status=trained]").wait_for(timeout=180_000)

    expect(page.locator("#tune-avatars")).to_be_visible()
    images_show(page, "#tune-avatars img", 2)  # the two sample images made right after training
    expect(page.get_by_role("button", name="Delete this tune")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel this tune")).to_be_hidden()  # nothing left to cancel
    page.screenshot(path=str(tmp_path / "trained.png"), full_page=True)

    page.locator("#generate-with-tune").click()
    expect(page.get_by_role("tab", name="Generate")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#generate-tune input")).to_have_value(re.compile("First hour"))
