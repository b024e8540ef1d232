"""Likeness in a browser (issue 18): the Generate tab's results carry each avatar's likeness in their captions,
"Sort by: most alike" puts the most alike first and unknown last, and the image picked in the sorted gallery is
the one liked. The avatars are stored as a worker leaves them; no model runs."""

from __future__ import annotations

import pytest
from PIL import Image

from app import serving
from pipelines.settings import Settings
from storage.records import PromptStatus
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.admin.test_operations import PHOTOS
from tests.test_browser import CHROMIUM, browser_page

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")

OWNER = "ann"
LIKENESS = [0.42, None, 0.91, 0.77]  # in the order the images were made


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("likeness")
    runtime = open_runtime(Settings(data_dir=folder / "data", device="cpu", local_user=OWNER), start_worker=False)
    studio = runtime.studio
    tune = studio.create_tune(OWNER, TuneCreate(title="me", name="woman", images=PHOTOS, branch="fast")).tune
    prompt = studio.create_prompt(OWNER, tune.id, PromptCreate("{{subject}} on a boat", num_images=4))
    with runtime.db.transaction() as conn:
        for seed, value in enumerate(LIKENESS):
            path = folder / f"{seed}.png"
            Image.new("RGB", (64, 64), (60 * seed, 90, 120)).save(path)
            runtime.db.insert_image(
                conn, OWNER, prompt.id, path=str(path), seed=seed, width=64, height=64, likeness=value
            )
    runtime.db.update_prompt(OWNER, prompt.id, status=PromptStatus.DONE)
    try:
        with serving(runtime) as url:
            yield studio, prompt.id, url
    finally:
        runtime.close()


def test_results_show_their_likeness_and_sort_most_alike_first(served):
    from playwright.sync_api import expect

    studio, prompt_id, url = served
    with browser_page(url) as page:
        page.get_by_role("tab", name="Generate").click()
        page.locator("#generate-history").get_by_role("gridcell", name="on a boat").first.click()
        captions = page.locator("#generate-gallery .caption-label")
        made = [
            "#1 · seed 0 · likeness 0.42",
            "#2 · seed 1",
            "#3 · seed 2 · likeness 0.91",
            "#4 · seed 3 · likeness 0.77",
        ]
        expect(captions).to_have_text(made)

        page.locator("#generate-sort").get_by_label("most alike").check()
        expect(captions).to_have_text([made[2], made[3], made[0], made[1]])  # no likeness (no face found) last

        page.locator("#generate-gallery button.thumbnail-item").first.click()  # the most alike one
        page.get_by_role("button", name="♥ Like / unlike").click()
        expect(captions.first).to_have_text(f"{made[2]} · ♥")
    liked = [image.likeness for image in studio.get_prompt(OWNER, prompt_id).images if image.liked]
    assert liked == [0.91]
