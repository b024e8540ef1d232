"""The pack studio in a browser (issue 19 item 3): an editor signs in, opens a pack in the form, adds a prompt row,
types its text and saves; the pack's public page in the gallery shows the new prompt; reverting to the previous
version takes it away again. Someone signed in who is not an editor never sees the studio. Tunes and their images
are stored as the mock branch (`fast`) leaves them: no model runs.

With `TUNES_UPDATE_SCREENSHOTS=1` the studio's form (with its charts) replaces `docs/pack-studio.png`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app import serving
from pipelines.settings import Settings
from storage.records import PromptStatus
from studio.requests import TuneCreate
from studio.runtime import open_runtime
from studio.service import Studio
from tests.admin.test_operations import PHOTOS
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, DOCS

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")

PACK, TITLE = "corporate-headshots", "Corporate headshots"
NEW_PROMPT = "{{subject}} as a lighthouse keeper on a stormy cliff, navy wool coat"
SHOWN_PROMPT = "ohwx woman as a lighthouse keeper on a stormy cliff"
# per class, prompt index -> (images made, of them liked), for the charts
MADE = {
    "woman": {0: (8, 5), 1: (8, 2), 2: (6, 4), 3: (4, 0), 4: (8, 7), 5: (6, 1), 7: (8, 3)},
    "man": {0: (8, 6), 1: (6, 1), 2: (6, 3), 4: (8, 2), 5: (4, 4), 6: (6, 0)},
}


def seed(studio: Studio, folder: Path) -> None:
    """A saved first version of the pack (so there is one to go back to), and images of its woman prompts with
    likes and likeness, as users' tunes left them."""
    studio.pack_editor.edit(PACK, studio.get_pack(PACK).to_file_data(), editor="ed")
    studio.create_tune("ed", TuneCreate(title="Ed's test tune", name="woman", images=PHOTOS, branch="fast"))
    for class_name, made_by_prompt in MADE.items():
        tune = studio.create_tune("ann", TuneCreate(title=class_name, name=class_name, images=PHOTOS, branch="fast"))
        for index, (made, liked) in made_by_prompt.items():
            made_images(studio, folder, tune.tune.id, class_name, index, made=made, liked=liked)


def made_images(studio: Studio, folder: Path, tune_id: int, class_name: str, index: int, *, made: int, liked: int):
    """A pack prompt's images as the worker leaves them, `liked` of them liked, with a likeness each."""
    _, prompt = studio.preview_pack_prompt(PACK, class_name, index, owner="ann", tune_id=tune_id)
    with studio.db.transaction() as conn:
        for number in range(made):
            path = folder / f"{class_name}-{index}-{number}.png"
            Image.new("RGB", (32, 32), (30 * index, 90, 160)).save(path)
            image_id = studio.db.insert_image(
                conn, "ann", prompt.id, path=str(path), seed=number, width=32, height=32,
                likeness=0.58 + 0.04 * index + 0.01 * number,
            )  # fmt: skip
            if number < liked:
                conn.execute("UPDATE images SET liked = 1 WHERE id = ?", (image_id,))
    studio.db.update_prompt("ann", prompt.id, status=PromptStatus.DONE)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Studio, str]]:
    folder = tmp_path_factory.mktemp("pack-studio")
    settings = Settings(
        data_dir=folder / "data",
        device="cpu",
        default_branch="fast",
        accounts=("ed:ed-pw", "bob:bob-pw", "ann:ann-pw"),
        editors=("ed",),
    )
    runtime = open_runtime(settings, start_worker=False)  # the seeded images are as a worker leaves them
    try:
        seed(runtime.studio, folder)
        with serving(runtime) as url:
            yield runtime.studio, url
    finally:
        runtime.close()


def signed_in(playwright: Any, url: str, user: str, password: str) -> Any:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Pack gallery").wait_for()
    return page


def open_pack_page(page: Any) -> Any:
    """The pack's public page in the gallery (its card clicked), showing its woman prompts."""
    page.get_by_role("tab", name="Pack gallery").click()
    page.locator("#pack-filter").get_by_label("woman", exact=True).check()
    page.locator("#pack-cards .thumbnail-item", has_text=TITLE).first.click()
    page.locator("#pack-about").get_by_text(TITLE).wait_for()
    return page.locator("#pack-prompts")


def test_an_editor_adds_a_prompt_in_the_form_sees_it_in_the_gallery_and_reverts_it(served):
    from playwright.sync_api import expect, sync_playwright

    studio, url = served
    woman = studio.get_pack(PACK).prompts["woman"]
    with sync_playwright() as playwright:
        page = signed_in(playwright, url, "ed", "ed-pw")
        page.get_by_role("tab", name="Pack gallery").click()
        page.get_by_text("Edit packs (creative team)").click()
        page.locator("#pack-studio-pack input").click()
        page.get_by_role("option", name=TITLE).click()
        table = page.locator("#pack-form-woman")
        rows = table.locator("[role=row][data-index]")
        expect(rows).to_have_count(len(woman))

        table.locator(f'[data-testid="cell-{len(woman) - 1}-2"]').click()  # pick the last row, add one below it
        expect(page.locator("#pack-form-row input")).to_have_value(str(len(woman)))
        page.locator("#pack-form-add").click()
        expect(rows).to_have_count(len(woman) + 1)
        expect(page.locator("#pack-form-row input")).to_have_value(str(len(woman) + 1))  # the new row is picked
        new_text = table.locator(f'[data-testid="cell-{len(woman)}-1"]')
        type_in(new_text, NEW_PROMPT)
        expect(new_text).to_contain_text("lighthouse keeper")
        if os.environ.get("TUNES_UPDATE_SCREENSHOTS") == "1":
            save_screenshot(page)
        page.locator("#pack-form-save").click()
        expect(page.get_by_text("2 saved versions")).to_be_visible()
        assert studio.get_pack(PACK).prompts["woman"][-1].text == NEW_PROMPT

        expect(open_pack_page(page)).to_contain_text(SHOWN_PROMPT)

        page.locator('#pack-studio-versions [data-testid="cell-0-0"]').click()  # version 1, as it was
        expect(page.locator("#pack-studio-version input")).to_have_value("1")
        page.locator("#pack-studio-revert").click()
        expect(page.get_by_text("3 saved versions")).to_be_visible()
        assert studio.get_pack(PACK).prompts["woman"] == woman

        expect(open_pack_page(page)).not_to_contain_text("lighthouse keeper")
        page.context.browser.close()


def test_someone_signed_in_who_is_not_an_editor_never_sees_the_studio(served):
    from playwright.sync_api import expect, sync_playwright

    _, url = served
    with sync_playwright() as playwright:
        page = signed_in(playwright, url, "bob", "bob-pw")
        page.get_by_role("tab", name="Pack gallery").click()
        expect(page.locator("#pack-cards img").first).to_be_visible()
        expect(page.get_by_text("Edit packs (creative team)")).to_be_hidden()
        expect(page.locator("#pack-studio")).to_be_hidden()
        expect(page.locator("#pack-form-save")).to_be_hidden()
        page.context.browser.close()


def type_in(cell: Any, text: str) -> None:
    """Type `text` into a table cell. A double click opens the cell's editor, unless the table was still drawing
    the last update (the row just added): then the next double click does."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    editor = cell.get_by_label("Edit cell")
    for _ in range(5):
        cell.dblclick()
        try:
            editor.wait_for(timeout=2_000)
            break
        except PlaywrightTimeout:
            continue
    editor.fill(text)
    editor.press("Enter")


def save_screenshot(page: Any) -> None:
    """The studio, 1280 px wide, from the pack picker to the charts, into `docs/pack-studio.png`."""
    page.locator("#pack-chart-likes .vega-embed, #pack-chart-likes canvas, #pack-chart-likes svg").first.wait_for()
    page.evaluate("window.scrollTo(0, 0)")  # bounding boxes are then page coordinates, as `clip` takes them
    top = page.locator("#pack-studio").bounding_box()
    bottom = page.locator("#pack-chart-likeness").bounding_box()
    clip = {"x": 0, "y": top["y"], "width": 1280, "height": bottom["y"] + bottom["height"] - top["y"] + 16}
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "pack-studio.png"
    page.screenshot(path=str(path), full_page=True, clip=clip)
    DOCS.mkdir(exist_ok=True)
    shutil.copy(path, DOCS / "pack-studio.png")
