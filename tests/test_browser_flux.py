"""A FLUX tune from the Create tab to the Generate tab, in a browser (issue 17): the user picks the tiny FLUX model,
the tune trains and shows its sample images, and the Generate tab switches to FLUX's own sampler and guidance and
makes the images.

Drives Debian's chromium with Playwright against the launched app, like `tests/test_browser.py`.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from pipelines.prompt_spec import FAMILY_SAMPLING
from tests.conftest import astronaut_photos, served_app, settings_with_tiny
from tests.test_browser import CHROMIUM, browser_page, images_show

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")


def test_a_flux_tune_trains_from_the_create_tab_and_generates_with_flux_sampling(
    tmp_path, tiny_sd15_dir, tiny_flux_dir
):
    from playwright.sync_api import expect

    settings = replace(settings_with_tiny(tmp_path / "app", tiny_sd15_dir), local_user="ann")
    (settings.models_dir / "tiny-flux").symlink_to(tiny_flux_dir, target_is_directory=True)
    paths = []
    for index, photo in enumerate(astronaut_photos()):
        paths.append(str(tmp_path / f"me-{index}.jpg"))
        photo.save(paths[-1], quality=92)
    with served_app(settings) as url, browser_page(url) as page:
        page.get_by_role("tab", name="Create tune").click()
        page.get_by_text("About the base models").click()
        expect(page.get_by_text("tiny-flux", exact=False).first).to_be_visible()  # the picker explains it
        page.get_by_label("Base model").click()
        page.get_by_role("option", name="tiny-flux").click()
        page.locator("#tune-photos input[type=file]").set_input_files(paths)
        page.locator("#photo-report").get_by_text("me-3.jpg").wait_for()
        page.get_by_label("Title").fill("Flux me")
        page.get_by_role("button", name=re.compile("Advanced settings")).click()
        page.get_by_label("Training steps").fill("3")
        page.locator("#create-tune").click()
        page.locator("#tune-progress [data-status=trained]").wait_for(timeout=180_000)
        expect(page.locator("#tune-progress")).to_contain_text("tiny-flux")
        images_show(page, "#tune-avatars img", 2)  # the sample images, drawn by FLUX with the new LoRA

        page.locator("#generate-with-tune").click()
        flux = FAMILY_SAMPLING["flux"]
        expect(page.get_by_text("does not use a negative prompt")).to_be_visible()
        page.get_by_text("Advanced options").click()
        expect(page.get_by_label("Scheduler")).to_have_value(flux.scheduler)
        expect(page.get_by_label("number input for CFG scale")).to_have_value(f"{flux.cfg_scale:g}")
        page.get_by_label("number input for Steps").fill("4")
        page.locator("#generate-run").click()
        page.locator("#generate-status").get_by_text("Done").wait_for(timeout=120_000)
        images_show(page, "#generate-gallery img", 4)
        page.screenshot(path=str(tmp_path / "flux-generate.png"), full_page=True)
