"""The Create tab and the model types: the branch picker explains FLUX and pivotal tuning, the "Pivotal tuning" box
shows where it trains (ticked on sdxl1, its default), and the tab's Create event trains what it says: a tiny-flux
tune end to end, an sdxl1 tune by pivotal tuning or as a plain LoRA."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from storage.db import Database
from studio.service import Studio
from tests.conftest import astronaut_photos, served_app, settings_with_tiny, wait_for
from tests.security.conftest import call_raw
from ui.create_tab import NO_PACK, chosen_model_type, pivotal_box
from ui.views import USER_BRANCHES, branch_help


def test_the_branch_help_explains_flux_the_cpu_demos_and_pivotal_tuning():
    text = branch_help()
    assert {"flux1", "tiny-flux", "sdxl1"} <= set(USER_BRANCHES)
    for name in ("flux1", "tiny-flux", "tiny", "sd15", "sdxl1", "fast"):
        assert f"- **{name}**: " in text
    [sdxl] = [line for line in text.splitlines() if line.startswith("- **sdxl1**")]
    assert "pivotal tuning" in sdxl and "<s0><s1>" in sdxl
    assert "pivotal" not in "".join(line for line in text.splitlines() if line.startswith("- **flux1**"))
    assert "embeddings.safetensors" in text and "flow_match_euler" in text


@pytest.mark.parametrize(
    ("branch", "visible", "ticked"),
    [("sdxl1", True, True), ("sd15", False, False), ("flux1", False, False), ("tiny-flux", False, False)],
)
def test_the_pivotal_box_shows_where_pivotal_tuning_trains_ticked_where_it_is_the_default(branch, visible, ticked):
    assert (pivotal_box(branch)["visible"], pivotal_box(branch)["value"]) == (visible, ticked)


def test_the_form_asks_for_pti_or_lora_only_where_both_train():
    assert chosen_model_type("sdxl1", True) == "pti" and chosen_model_type("sdxl1", False) == "lora"
    assert chosen_model_type("flux1", True) is None and chosen_model_type("tiny", True) is None  # a hidden box
    assert chosen_model_type(None, True) is None


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_sd15_dir, tiny_flux_dir) -> Iterator[tuple[str, Studio]]:
    settings = replace(
        settings_with_tiny(tmp_path_factory.mktemp("create-tab"), tiny_sd15_dir),
        default_branch="fast",
        accounts=("alice:alice-pw",),
        api_rate_per_minute=100_000,
    )
    (settings.models_dir / "tiny-flux").symlink_to(tiny_flux_dir, target_is_directory=True)
    with served_app(settings) as url:
        yield url, Studio(settings, Database(settings.data_dir / "tunes.db"))


@pytest.fixture(scope="module")
def browser(served) -> Iterator[httpx.Client]:
    url, _ = served
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("login", data={"username": "alice", "password": "alice-pw"}).status_code == 200
        yield client


def create_in_tab(
    browser: httpx.Client, studio: Studio, title: str, branch: str, *, steps: str = "", pivotal: bool
) -> int:
    """Press "Create tune" as the browser does: upload the photos, then the tab's event with its widgets' values.
    Returns the id of the tune made (the tab keeps it in its session state, which the browser never sees)."""
    files = []
    for i, photo in enumerate(astronaut_photos()):
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        files.append(("files", (f"me-{i}.jpg", buffer.getvalue(), "image/jpeg")))
    uploaded = browser.post("gradio_api/upload", files=files)
    photos = [{"path": path, "meta": {"_type": "gradio.FileData"}} for path in uploaded.json()]
    # photos, title, class, branch, steps, token, face crop, characteristics, pack, styles, pivotal tuning, visibility
    inputs: list[Any] = [photos, title, "woman", branch, steps, "", True, "", NO_PACK, [], pivotal, "private"]
    kind, outputs = call_raw(browser, "create_tune_1", inputs)
    assert kind == "complete", outputs
    banner = outputs[0]
    assert not (banner.get("visible") if isinstance(banner, dict) else banner), banner  # no error shown
    return studio.db.tune_by_title("alice", title).id


def test_the_create_tab_trains_a_tiny_flux_tune(served, browser):
    _, studio = served
    tune_id = create_in_tab(browser, studio, "Tab FLUX", "tiny-flux", steps="2", pivotal=True)  # hidden: ignored
    tune = wait_for(lambda: studio.get_tune("alice", tune_id), lambda t: t.status in ("trained", "failed"))
    assert tune.status == "trained", tune.error
    assert (tune.branch, tune.model_type, tune.token) == ("tiny-flux", "lora", "ohwx")


def test_the_create_tab_trains_sdxl1_by_pivotal_tuning_unless_unticked(served, browser):
    _, studio = served
    ticked = create_in_tab(browser, studio, "Tab SDXL", "sdxl1", pivotal=True)
    unticked = create_in_tab(browser, studio, "Tab SDXL LoRA", "sdxl1", pivotal=False)
    try:
        assert studio.get_tune("alice", ticked).model_type == "pti"
        assert studio.get_tune("alice", unticked).model_type == "lora"
    finally:  # no SDXL weights here: the worker would fail them
        for tune_id in (ticked, unticked):
            studio.delete_tune("alice", tune_id)
