"""The showcase in a browser (issue 20): a signed-out visitor sees alice's public avatars and none of bob's private
ones, the app's Showcase tab shows the same, then alice makes her tune private in the Generate tab and the
showcase and its image links stop showing it at once. The avatars are stored as a worker leaves them.

With `TUNES_UPDATE_SCREENSHOTS=1` the public page replaces `docs/showcase.png`."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from PIL import Image, ImageDraw

from app import serving
from pipelines.settings import Settings
from storage.records import TuneStatus
from studio.runtime import open_runtime
from tests.studio.test_showcase import avatars
from tests.test_browser import CHROMIUM, DOCS, person

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
SECRET = "Bob's surprise party"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("showcase-browser") / "data",
        device="cpu",
        default_branch="fast",
        accounts=tuple(f"{user}:{password}" for user, password in PASSWORDS.items()),
    )
    runtime = open_runtime(settings, start_worker=False)
    studio = runtime.studio
    alice, hers = avatars(studio, "alice", "Alice in the alps", visibility="public", later=3)
    bob, his = avatars(studio, "bob", SECRET)
    for owner, tune in (("alice", alice), ("bob", bob)):
        runtime.db.update_tune(owner, tune.id, status=TuneStatus.TRAINED)
    paint(studio, [*hers["sample"], *hers["prompt"]])
    try:
        with serving(runtime) as url:
            yield studio, url, alice, hers, his
    finally:
        runtime.close()


def paint(studio, image_ids: list[int]) -> None:
    """Give each avatar a picture worth looking at (a sky, a ridge, a sun) instead of a flat colour."""
    for number, image_id in enumerate(image_ids):
        image = studio.db.get_image("alice", image_id)
        picture = Image.new("RGB", (256, 256), (90 + 20 * number, 150, 230))
        draw = ImageDraw.Draw(picture)
        draw.polygon([(0, 256), (90 + 10 * number, 110), (170, 180), (256, 90), (256, 256)], fill=(60, 90, 70))
        draw.ellipse((170, 30, 220, 80), fill=(250, 220, 120))
        picture.save(image.path)


@contextmanager
def visitor_or(chromium, url: str, user: str | None) -> Iterator[Any]:
    """A page of `user`, signed in with their password, or with None of a signed-out visitor."""
    with person(chromium, url, user, PASSWORDS.get(user or "")) as page:
        yield page


def test_visitors_see_public_avatars_and_they_leave_the_moment_the_tune_is_private(served, chromium, tmp_path):
    from playwright.sync_api import expect

    studio, url, alice, hers, his = served
    public = len(hers["sample"]) + len(hers["prompt"])
    with visitor_or(chromium, url, None) as visitor:
        visitor.goto(f"{url}showcase")
        cards = visitor.locator("figure.showcase-card")
        expect(cards).to_have_count(public)
        visitor.wait_for_function(
            "n => [...document.images].filter((i) => i.naturalWidth > 0).length === n", arg=public
        )
        assert "Alice in the alps" in visitor.content() and "surprise party" not in visitor.content()
        for image in his["sample"] + his["prompt"]:
            expect(visitor.locator(f'[data-image="{image}"]')).to_have_count(0)
        link = visitor.locator("figure.showcase-card img").first.get_attribute("src")
        screenshot(visitor, tmp_path)

        with visitor_or(chromium, url, "alice") as owner:
            owner.goto(url)
            owner.get_by_role("tab", name="Showcase").click()  # the app's tab shows what the visitor sees
            expect(owner.locator("#showcase-cards figure.showcase-card")).to_have_count(public)
            assert "surprise party" not in owner.locator("#showcase-cards").inner_text()
            owner.get_by_role("tab", name="Generate").click()
            owner.locator("#generate-tune input").click()  # focusing the picker refreshes the list of tunes
            owner.get_by_role("option", name=re.compile("^Alice in the alps")).first.click()
            choice = owner.locator("#generate-visibility")
            expect(choice.get_by_label("public")).to_be_checked()

            owner.locator("#generate-history").get_by_role("gridcell", name="later 0").first.click()
            owner.locator("#generate-gallery button.thumbnail-item").first.click()
            owner.locator("#generate-hide").click()  # one avatar off the showcase, the others stay
            expect(owner.locator("#generate-gallery .caption-label").first).to_contain_text("off the showcase")
            [hidden] = [i.id for prompt in studio.list_prompts("alice", limit=50) for i in prompt.images if i.hidden]
            visitor.reload()
            expect(visitor.locator("figure.showcase-card")).to_have_count(public - 1)
            expect(visitor.locator(f'[data-image="{hidden}"]')).to_have_count(0)

            choice.get_by_label("private").check()
            expect(owner.get_by_text("its avatars left the showcase")).to_be_visible()
        assert studio.get_tune("alice", alice.id).visibility == "private"

        visitor.reload()
        expect(visitor.locator("figure.showcase-card")).to_have_count(0)
        expect(visitor.get_by_text("No public avatars yet.")).to_be_visible()
        assert visitor.request.get(f"{url.rstrip('/')}{link}").status == 404, "the image link stopped at once"


def screenshot(page, tmp_path) -> None:
    path = tmp_path / "showcase.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TUNES_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, DOCS / "showcase.png")
