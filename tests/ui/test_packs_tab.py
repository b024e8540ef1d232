"""The pack gallery as people use it: cards with covers, a class filter, a pack's page with its prompts as they
render; and the creative team's editor, driven through gradio_client with two accounts: it refuses someone
who is not an editor, and a bad edit is shown inline naming the key while the saved pack stays as it was."""

from __future__ import annotations

import copy

import gradio as gr
import pytest
import yaml
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

import packs.loader
import ui.packs_tab
from packs.loader import COVERS_DIR, parse_pack
from pipelines.settings import Settings
from storage.db import Database
from studio.service import Studio
from ui.context import UIContext
from ui.packs_tab import NEW_PACK_TEMPLATE, build_packs_tab, pack_about, pack_cards, prompt_table


@pytest.fixture
def studio(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", accounts=("ed:pw", "bob:pw"), editors=("ed",))
    settings.data_dir.mkdir()
    db = Database(settings.data_dir / "tunes.db")
    yield Studio(settings, db)
    db.close()


@pytest.fixture
def served(studio):
    """The tab in an app behind sign-in, as `app.py` serves it."""
    with gr.Blocks() as app, gr.Tab("Packs"):
        tab = build_packs_tab(UIContext(studio, studio.settings))
    app.launch(prevent_thread_lock=True, quiet=True, auth=studio.settings.account_pairs)
    yield app, tab
    app.close()


def client(app: gr.Blocks, user: str) -> Client:
    return Client(app.local_url, auth=(user, "pw"), verbose=False)


def test_every_shipped_pack_has_its_own_small_cover_that_decodes(studio):
    seen = set()
    for pack in studio.list_packs():
        path = COVERS_DIR / (pack.cover or "")
        assert pack.cover and path.is_file(), f"{pack.id} has no cover"
        assert path.stat().st_size < 60_000, f"{pack.cover} is {path.stat().st_size} bytes"
        with Image.open(path) as image:
            image.load()
            assert image.size == (384, 384)
            seen.add(image.tobytes())
    assert len(seen) == len(studio.list_packs()), "two packs share a cover"


def test_cards_show_cover_title_classes_and_image_count(studio):
    items, ids = pack_cards(studio, "all")
    captions = dict(zip(ids, [caption for _, caption in items], strict=True))
    assert len(ids) == len(studio.list_packs()) >= 8
    assert captions["corporate-headshots"] == "Corporate headshots · man, woman · 48 images"
    assert captions["couple-portraits"] == "Couple portraits · couple · 58 images"
    assert all(isinstance(image, Image.Image) and image.size == (384, 384) for image, _ in items)


def test_filtering_by_a_class_shows_only_packs_for_it(studio):
    items, ids = pack_cards(studio, "cat")
    assert ids == ["pets-in-costumes"]
    assert items[0][1] == "Pets in costumes · cat, dog · 50 images"
    _, couples = pack_cards(studio, "couple")
    assert set(couples) == {"couple-portraits", "vintage-film", "watercolour"}


def test_a_packs_page_shows_its_prompts_rendered_for_a_subject_with_images_made_and_likes(studio):
    pack = studio.get_pack("corporate-headshots")
    table = prompt_table(studio, pack, "woman")
    assert len(table) == len(pack.prompts["woman"])
    assert all(
        text.startswith("ohwx woman") or " ohwx woman" in text for text in table["prompt (for a sample subject)"]
    )
    assert not any("{{" in text for text in table["prompt (for a sample subject)"])
    assert table["images"].sum() == pack.images_for("woman")
    assert (table["likes"] == 0).all() and (table["made"] == 0).all()
    about = pack_about(pack, branch="tiny")
    assert "No sample images yet" in about, "without samples the page says the prompts stand in"


def test_a_packs_page_names_the_model_its_tune_trains_on_here(studio):
    pack = studio.get_pack("corporate-headshots")
    assert pack.default_branch == "sdxl1" and studio.settings.default_branch == "tiny"
    about = pack_about(pack, branch=studio.settings.default_branch)
    assert "**Model here:** `tiny` (the pack was written for `sdxl1`)" in about
    assert "**Model here:** `sdxl1` ·" in pack_about(pack, branch="sdxl1")
    assert "**Model here:** `flux1` (the pack was written for `sdxl1`)" in pack_about(pack, branch="flux1")
    assert "placeholder images" in pack_about(pack, branch="fast")


def test_a_pack_with_samples_lists_them_and_keeps_them_when_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(packs.loader, "COVERS_DIR", tmp_path)
    monkeypatch.setattr(ui.packs_tab, "COVERS_DIR", tmp_path)
    Image.new("RGB", (64, 64), "teal").save(tmp_path / "mini-1.jpg")
    data = yaml.safe_load(NEW_PACK_TEMPLATE) | {"samples": ["mini-1.jpg"]}
    pack = parse_pack(data, source="mini")
    assert pack.samples == ("mini-1.jpg",) and "No sample images" not in pack_about(pack, branch="tiny")
    assert parse_pack(pack.to_file_data(), source="again") == pack
    assert ui.packs_tab.pack_image("mini-1.jpg").size == (64, 64)


def test_the_editor_is_hidden_and_refuses_someone_who_is_not_an_editor(served, studio):
    app, tab = served
    assert [block.visible for block in tab.editor_only] == [False]
    text = yaml.safe_dump(studio.get_pack("fantasy").to_file_data() | {"title": "Mine now"})
    bob = client(app, "bob")
    for api_name, args in [("/pack_editor_save", ("fantasy", text)), ("/pack_editor_open", ("fantasy",))]:
        with pytest.raises(AppError, match="may not edit packs"):
            bob.predict(*args, api_name=api_name)
    assert studio.get_pack("fantasy").title == "Fantasy realms"
    assert studio.pack_editor.versions("fantasy") == []


def test_a_bad_edit_is_shown_inline_naming_the_key_and_the_saved_pack_stays(served, studio):
    app, _ = served
    ed = client(app, "ed")
    good = studio.get_pack("corporate-headshots").to_file_data() | {"title": "Headshots, warmer"}
    banner, *_ = ed.predict("corporate-headshots", yaml.safe_dump(good), api_name="/pack_editor_save")
    assert banner["visible"] is False
    assert studio.get_pack("corporate-headshots").title == "Headshots, warmer"

    bad = copy.deepcopy(good)
    bad["prompts"]["man"][1]["strength"] = 0.8
    banner, *_ = ed.predict("corporate-headshots", yaml.safe_dump(bad), api_name="/pack_editor_save")
    assert banner["visible"] is True
    assert "`edit of corporate-headshots: prompts.man[1].strength` is not a known key" in banner["value"]
    assert "(got 0.8)" in banner["value"]
    assert studio.get_pack("corporate-headshots").title == "Headshots, warmer"
    assert [v["version"] for v in studio.pack_editor.versions("corporate-headshots")] == [1]

    banner, *_ = ed.predict("corporate-headshots", "title: [unclosed", api_name="/pack_editor_save")
    assert "line 1" in banner["value"] and "title: [unclosed" in banner["value"]


def test_the_team_copies_publishes_previews_and_reverts_a_pack(served, studio):
    app, _ = served
    ed = client(app, "ed")
    ed.predict("studio-portrait", "studio-portrait-noir", "Noir portraits", api_name="/pack_editor_duplicate")
    assert "studio-portrait-noir" not in pack_cards(studio, "all")[1], "a copy stays hidden until published"
    ed.predict("studio-portrait-noir", api_name="/pack_editor_publish")
    items, ids = pack_cards(studio, "girl")
    assert items[ids.index("studio-portrait-noir")][1].startswith("Noir portraits · man, woman, boy, girl")

    _, rendered = ed.predict("studio-portrait-noir", "girl", 0, api_name="/pack_editor_preview")
    assert "ohwx girl" in rendered and "green eyes" in rendered
    ed.predict("studio-portrait-noir", 1, api_name="/pack_editor_revert")
    assert "studio-portrait-noir" not in pack_cards(studio, "all")[1], "version 1 was the unpublished copy"
    assert [v["action"] for v in studio.pack_editor.versions("studio-portrait-noir")] == [
        "create",
        "publish",
        "revert to 1",
    ]


def test_a_new_pack_is_a_draft_and_once_published_without_a_cover_gets_a_placeholder_card(served, studio):
    app, _ = served
    ed = client(app, "ed")
    published = NEW_PACK_TEMPLATE.replace("published: false", "published: true")
    banner, _, status, *_ = ed.predict(published, api_name="/pack_editor_create")
    assert banner["visible"] is False and "**unpublished**" in status
    assert "my-new-pack" not in pack_cards(studio, "woman")[1], "users see a new pack only once it is published"
    ed.predict("my-new-pack", api_name="/pack_editor_publish")
    items, ids = pack_cards(studio, "woman")
    image, caption = items[ids.index("my-new-pack")]
    assert caption == "My new pack · woman · 4 images" and image.size == (384, 384)


def test_the_editor_warns_about_a_prompt_too_long_to_read_well_and_still_saves_it(served, studio):
    app, _ = served
    ed = client(app, "ed")
    data = studio.get_pack("corporate-headshots").to_file_data()
    data["prompts"]["man"][0]["text"] += ", " + ", ".join(f"fine detail {n}" for n in range(80))
    outputs = ed.predict("corporate-headshots", yaml.safe_dump(data), api_name="/pack_editor_save")
    banner, status = outputs[0], next(o for o in outputs[1:] if isinstance(o, str) and "corporate-headshots" in o)
    assert banner["visible"] is False, "a long prompt is a warning, not an error"
    assert "⚠ corporate-headshots: prompts.man[0].text has" in status and "CLIP tokens" in status
    assert len(studio.pack_editor.versions("corporate-headshots")) == 1
