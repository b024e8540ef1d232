"""Views that stay current and a layout that is finished, as a person in a browser meets them (issue 13: 6, 7, 9).

The admin tab shows a tune created after the page loaded; a like counts in the history at once; an error goes
once its field changes; toasts fade; every row of pack cards shows; the Generate tab names the chosen tune's
own token; a pack page names the model its tune trains on here; expiring or deleting a tune asks first.
Tunes here use the mock branch (`fast`): no training, placeholder images, in moments.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

import pytest

from app import serving
from studio.errors import NotFoundError
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.admin.test_operations import PHOTOS
from tests.conftest import settings_with_tiny
from tests.test_browser import CHROMIUM, browser_page

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")

OWNER = "ann"  # the single local user, who runs the place (admin)
FADE_MS = 15_000  # errors fade after 10 s, notes after 4 s


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_sd15_dir):
    settings = replace(settings_with_tiny(tmp_path_factory.mktemp("views"), tiny_sd15_dir), local_user=OWNER)
    runtime = open_runtime(settings)
    try:
        with serving(runtime) as url:
            yield runtime.studio, url
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def page(served):
    with browser_page(served[1]) as page:
        yield page


def new_tune(studio, title: str, *, token: str | None = None, prompt: str | None = None):
    """A tune of ann's on the mock branch, trained by the worker; with `prompt`, also a finished prompt."""
    prompts = [PromptCreate(prompt, num_images=2, seed=1)] if prompt else []
    tune = studio.create_tune(
        OWNER, TuneCreate(title=title, name="woman", images=PHOTOS, branch="fast", token=token, prompts=prompts)
    ).tune
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = studio.list_prompts(OWNER, tune_id=tune.id, limit=10)
        if studio.get_tune(OWNER, tune.id).status == "trained" and all(p.status == "done" for p in done):
            return tune
        time.sleep(0.1)
    raise AssertionError(f"tune {tune.id} did not finish")


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def pick_tune(page, label: str) -> None:
    page.locator("#generate-tune input").click()  # focusing the picker refreshes the list of tunes
    page.get_by_role("option", name=label).first.click()


def test_the_admin_tab_shows_a_tune_created_after_the_page_loaded(served, page):
    studio, _ = served
    open_tab(page, "Admin")
    page.locator("#admin-tunes").wait_for()
    new_tune(studio, "Made just now")
    open_tab(page, "Account")
    open_tab(page, "Admin")  # no Refresh pressed: opening the tab is enough
    page.locator("#admin-tunes [role=gridcell]", has_text="Made just now").first.wait_for(timeout=15_000)


def test_expire_and_delete_ask_first_and_the_id_starts_empty(served, page):
    from playwright.sync_api import expect

    studio, _ = served
    tune = new_tune(studio, "To delete")
    open_tab(page, "Admin")
    record = page.locator("#admin-record-id input, #admin-record-id textarea").first
    expect(record).to_have_value("")
    page.locator("#admin-delete").click()  # no id yet: said by the box, nothing asked
    expect(page.locator("#admin-error")).to_contain_text("is empty: type an id")
    expect(page.locator("#admin-confirm")).to_be_hidden()
    record.fill(str(tune.id))
    expect(page.locator("#admin-error")).to_be_hidden()  # the box changed: its error went

    page.locator("#admin-expire").click()
    expect(page.locator("#admin-confirm")).to_contain_text(
        f"Expire tune {tune.id} ('To delete' of {OWNER}, trained) now?"
    )
    expect(page.locator("#admin-confirm-delete")).to_be_hidden()
    page.get_by_role("button", name="No, keep it").click()
    expect(page.locator("#admin-confirm")).to_be_hidden()
    assert studio.get_tune(OWNER, tune.id).status == "trained", "asking changed nothing"

    page.locator("#admin-delete").click()
    expect(page.locator("#admin-confirm")).to_contain_text(f"Delete tune {tune.id} ('To delete' of {OWNER}, trained)?")
    page.locator("#admin-confirm-delete").click()
    expect(page.locator("#admin-status")).to_contain_text(f"Deleted tune {tune.id}")
    expect(page.locator("#admin-confirm")).to_be_hidden()
    with pytest.raises(NotFoundError):
        studio.get_tune(OWNER, tune.id)


def test_the_generate_intro_names_the_chosen_tunes_token_and_the_seed_starts_empty(served, page):
    from playwright.sync_api import expect

    new_tune(served[0], "Token zwx", token="zwx")
    open_tab(page, "Generate")
    expect(page.locator("#generate-intro")).not_to_contain_text("ohwx")
    pick_tune(page, "Token zwx")
    expect(page.locator("#generate-intro")).to_contain_text("zwx woman")
    expect(page.get_by_label("Seed")).to_have_value("")


def test_the_tune_pickers_text_stops_before_its_caret(page):
    open_tab(page, "Generate")
    gap = page.evaluate(
        """() => {
            const input = document.querySelector('#generate-tune input');
            const caret = document.querySelector('#generate-tune .icon-wrap');
            const text_end = input.getBoundingClientRect().right - parseFloat(getComputedStyle(input).paddingRight);
            return caret.getBoundingClientRect().left - text_end;
        }"""
    )
    assert gap >= 0, f"the text runs {-gap:.0f}px under the caret"


def test_an_error_goes_once_its_field_changes(page):
    from playwright.sync_api import expect

    open_tab(page, "Generate")
    prompt = page.locator("#generate-prompt textarea")
    prompt.fill("")
    page.locator("#generate-run").click()
    banner = page.locator("#generate-banner")
    expect(banner).to_contain_text("Could not do that")
    expect(page.locator("#generate-prompt")).to_have_class(re.compile("field-error"))
    prompt.fill("portrait of {{subject}}")
    expect(banner).to_be_hidden()
    expect(page.locator("#generate-prompt")).not_to_have_class(re.compile("field-error"))


def test_a_like_counts_in_the_history_at_once_and_error_and_note_toasts_fade(served, page):
    from playwright.sync_api import expect

    new_tune(served[0], "Liked one", prompt="photo of {{subject}}")
    page.reload()
    open_tab(page, "Generate")
    page.get_by_role("button", name="♥ Like / unlike").click()  # no image picked: an error toast, which fades
    error = page.get_by_test_id("toast-body").filter(has_text="Click an image first")
    error.wait_for()

    # the like is counted while the error toast is still up (it fades on its own; waited for at the end)
    history = page.locator("#generate-history")
    history.get_by_role("gridcell", name="photo of sks woman").first.click()
    page.locator("#generate-gallery button.thumbnail-item").first.click()
    liked = history.locator("[role=row]").nth(1).locator("[role=gridcell]").nth(5)
    expect(liked).to_have_text("0")
    page.get_by_role("button", name="♥ Like / unlike").click()
    expect(liked).to_have_text("1")

    # a note toast (a key revoked) fades too
    open_tab(page, "Account")
    page.get_by_role("button", name="Create a new API key").click()
    page.locator("#account-keys [role=gridcell]").first.wait_for()
    key_id = page.locator("#account-keys [role=row]").nth(1).locator("[role=gridcell]").first.inner_text()
    page.get_by_label("Key id to revoke").fill(key_id.strip())
    page.get_by_role("button", name="Revoke").click()
    note = page.get_by_test_id("toast-body").filter(has_text="revoked")
    note.wait_for()
    error.wait_for(state="detached", timeout=FADE_MS)
    note.wait_for(state="detached", timeout=FADE_MS)


def test_every_row_of_pack_cards_shows_and_a_pack_names_the_model_used_here(page):
    from playwright.sync_api import expect

    open_tab(page, "Pack gallery")
    cards = page.locator("#pack-cards img")
    expect(cards).to_have_count(8)
    cut = cards.nth(7).evaluate(
        """(image) => {
            const grid = document.querySelector('#pack-cards .grid-wrap');
            const block = document.querySelector('#pack-cards').getBoundingClientRect();
            const hidden = image.getBoundingClientRect().bottom - block.bottom;
            return Math.max(hidden, grid.scrollHeight - grid.clientHeight);
        }"""
    )
    assert cut <= 0, f"the second row of pack cards is cut off ({cut:.0f}px hidden)"
    cards.first.click()
    about = page.locator("#pack-about")
    expect(about).to_contain_text("Model here: tiny")
    expect(about).to_contain_text("written for sdxl1")
