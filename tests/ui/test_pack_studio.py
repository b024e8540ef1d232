"""The pack studio as the creative team drives it, through the served app's HTTP events (gradio_client, and the
browser's own queue calls): a form save with a bad row names the class, row and column, marks the row and writes
nothing; a good save (rows added and moved, their other keys kept) is a new version; a prompt is previewed as real
images on the editor's own tune; the charts count images, likes and likeness; someone who is not an editor is
refused by every studio event, however it is called. Tunes run on the mock branch (`fast`): no model runs."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from packs.form import CHECK, COLUMNS, IMAGES, MORE, TEXT
from packs.loader import KNOWN_CLASSES
from pipelines.settings import Settings
from storage.records import PromptStatus
from studio.requests import TuneCreate
from studio.runtime import Runtime, open_runtime
from tests.admin.test_operations import PHOTOS
from tests.security.conftest import queue_call as security_queue_call
from ui.context import UIContext
from ui.pack_studio import chart_frame
from ui.packs_tab import build_packs_tab, pack_cards

PACK = "fantasy"  # man, woman, boy, girl; shipped, so the first save is version 1
TABLES = list(KNOWN_CLASSES)  # the form's tables, in the order its events take them
# view outputs as a client gets them (no states): banner, pack, status, yaml, versions, version, preview class,
# then the form
FORM_AT = 7


@dataclass(frozen=True)
class Served:
    runtime: Runtime
    app: gr.Blocks

    def client(self, user: str) -> Client:
        return Client(self.app.local_url, auth=(user, "pw"), verbose=False)


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    settings = Settings(
        data_dir=tmp_path / "data", device="cpu", accounts=("ed:pw", "bob:pw"), editors=("ed",), default_branch="fast"
    )
    runtime = open_runtime(settings, start_worker=False)
    with gr.Blocks() as app, gr.Tab("Packs"):
        build_packs_tab(UIContext(runtime.studio, settings))
    app.launch(prevent_thread_lock=True, quiet=True, auth=settings.account_pairs)
    try:
        yield Served(runtime, app)
    finally:
        app.close()
        runtime.close()


def opened(ed: Client, pack_id: str = PACK) -> list[Any]:
    return ed.predict(pack_id, api_name="/pack_editor_open")


def form_values(outputs: list[Any]) -> dict[str, Any]:
    """The form as the open event filled it: title, description, classes and a table payload per class."""
    shown = copy.deepcopy(outputs[FORM_AT : FORM_AT + 3 + len(TABLES)])
    title, description, classes, *tables = [item["value"] for item in shown]
    return {
        "title": title,
        "description": description,
        "classes": classes,
        "tables": dict(zip(TABLES, tables, strict=True)),
    }


def save_form(ed: Client, yaml_text: str, form: dict[str, Any]) -> list[Any]:
    tables = [form["tables"][name] for name in TABLES]
    return ed.predict(
        PACK, yaml_text, form["title"], form["description"], form["classes"], *tables, api_name="/pack_studio_save"
    )


def cell(table: dict[str, Any], row: int, column: str) -> Any:
    return table["data"][row][COLUMNS.index(column)]


def set_cell(table: dict[str, Any], row: int, column: str, value: Any) -> None:
    table["data"][row][COLUMNS.index(column)] = value


def test_a_form_save_with_a_bad_row_names_the_class_row_and_column_marks_the_row_and_writes_nothing(served):
    ed = served.client("ed")
    outputs = opened(ed)
    form = form_values(outputs)
    woman = form["tables"]["woman"]
    assert [cell(woman, row, "#") for row in range(len(woman["data"]))] == list(range(1, len(woman["data"]) + 1))
    set_cell(woman, 2, IMAGES, 12)

    after = save_form(ed, outputs[3], form)

    banner = after[0]["value"]
    assert "prompts.woman[2].num_images: 12 — must be an integer between 1 and 8" in banner
    assert 'woman row 3, column "images"' in banner
    marked = after[FORM_AT + 3 + TABLES.index("woman")]["value"]
    assert cell(marked, 2, CHECK).startswith("⚠ images: 12 — must be an integer between 1 and 8")
    assert [cell(marked, row, CHECK) for row in (0, 1, 3)] == ["", "", ""], "only the bad row is marked"
    assert after[FORM_AT + 3 + TABLES.index("woman")]["elem_classes"] == ["field-error"]
    assert served.runtime.studio.pack_editor.versions(PACK) == []
    assert not (served.runtime.settings.data_dir / "packs" / f"{PACK}.yaml").exists()
    assert served.runtime.studio.get_pack(PACK).prompts["woman"][2].num_images != 12


def test_a_bad_more_cell_and_a_bad_title_are_named_too(served):
    ed = served.client("ed")
    outputs = opened(ed)
    form = form_values(outputs)
    set_cell(form["tables"]["man"], 1, MORE, "cfg_scale: 6")
    banner = save_form(ed, outputs[3], form)[0]["value"]
    assert "prompts.man[1].more: 'cfg_scale: 6' — must be a JSON object" in banner and "man row 2" in banner

    form = form_values(outputs)
    form["title"] = ""
    after = save_form(ed, outputs[3], form)
    assert "title: '' — must be non-empty text" in after[0]["value"]
    assert after[FORM_AT]["elem_classes"] == ["field-error"]
    assert served.runtime.studio.pack_editor.versions(PACK) == []


def test_a_good_form_save_with_a_row_added_and_moved_keeps_every_key_and_makes_a_new_version(served):
    ed = served.client("ed")
    outputs = opened(ed)
    before = served.runtime.studio.get_pack(PACK)
    form = form_values(outputs)
    tables = [form["tables"][name] for name in TABLES]

    # add a row below woman #1, write it, then move woman #1 (its cfg_scale and hires_fix in `more`) down
    added = ed.predict("woman", 1, *tables, api_name="/pack_studio_add_row")
    woman, picked = added[TABLES.index("woman")], added[-1]
    assert picked == 2 and len(woman["data"]) == len(before.prompts["woman"]) + 1
    set_cell(woman, 1, TEXT, "{{subject}} as a lighthouse keeper, stormy sea")
    set_cell(woman, 1, IMAGES, 3)
    tables[TABLES.index("woman")] = woman
    moved = ed.predict("woman", 1, *tables, api_name="/pack_studio_move_down")
    woman, picked = moved[TABLES.index("woman")], moved[-1]
    assert picked == 2 and json.loads(cell(woman, 1, MORE)) == {"cfg_scale": 7, "hires_fix": True}
    form["tables"]["woman"] = woman
    form["title"] = "Fantasy realms, extended"

    after = save_form(ed, outputs[3], form)

    assert after[0]["visible"] is False, after[0]
    pack = served.runtime.studio.get_pack(PACK)
    assert pack.title == "Fantasy realms, extended"
    keeper, first = pack.prompts["woman"][0], pack.prompts["woman"][1]
    assert keeper.text.endswith("lighthouse keeper, stormy sea") and keeper.num_images == 3
    assert first == before.prompts["woman"][0], "the moved row kept every key"
    assert pack.prompts["woman"][2:] == before.prompts["woman"][1:]
    assert pack.prompts["man"] == before.prompts["man"]
    assert [v["action"] for v in served.runtime.studio.pack_editor.versions(PACK)] == ["edit"]
    assert form_values(after)["tables"]["woman"]["data"][0][COLUMNS.index(TEXT)] == keeper.text


def test_switching_views_carries_form_edits_to_yaml_and_yaml_edits_to_the_form(served):
    ed = served.client("ed")
    outputs = opened(ed)
    form = form_values(outputs)
    set_cell(form["tables"]["boy"], 0, IMAGES, 2)
    tables = [form["tables"][name] for name in TABLES]
    _banner, text = ed.predict(
        PACK, outputs[3], form["title"], form["description"], form["classes"], *tables, api_name="/pack_studio_to_yaml"
    )
    assert "num_images: 2" in text and "cover: fantasy.jpg" in text

    edited = text.replace("title: Fantasy realms", "title: Fantasy, from YAML")
    back = ed.predict(PACK, edited, api_name="/pack_studio_to_form")
    title, boy = back[1]["value"], back[1 + 3 + TABLES.index("boy")]["value"]
    assert title == "Fantasy, from YAML" and cell(boy, 0, IMAGES) == 2


def test_an_editor_previews_a_prompt_as_images_on_a_tune_of_their_own(served):
    studio, worker = served.runtime.studio, served.runtime.worker
    mine = studio.create_tune("ed", TuneCreate(title="Ed", name="woman", images=PHOTOS, branch="fast")).tune
    studio.create_tune("ed", TuneCreate(title="Ed's cat", name="cat", images=PHOTOS, branch="fast"))
    studio.create_tune("bob", TuneCreate(title="Bob", name="woman", images=PHOTOS, branch="fast"))
    worker.drain()
    ed = served.client("ed")
    tunes = opened(ed)[FORM_AT + 3 + len(TABLES) + 3]
    assert tunes["choices"] == [[f"Ed (#{mine.id}, woman)", mine.id]], "only ed's trained tunes of the pack's classes"

    outputs = ed.predict(PACK, "woman", 1, mine.id, api_name="/pack_studio_preview")
    rendered, prompt_id, status = outputs[1:4]
    assert "ohwx woman" in rendered and "queued" in status
    worker.drain()
    line, images, timer = ed.predict(prompt_id, api_name="/pack_studio_preview_status")
    prompt = studio.get_prompt("ed", prompt_id)
    assert prompt.pack_prompt == "woman/1" and prompt.status == PromptStatus.DONE
    assert f"Preview prompt #{prompt_id}" in line and f"done: {len(prompt.images)} images" in line
    assert len(images) == len(prompt.images) == studio.get_pack(PACK).prompts["woman"][1].num_images
    assert timer["active"] is False
    banner = ed.predict(PACK, "woman", 1, mine.id + 2, api_name="/pack_studio_preview")[0]  # bob's tune
    assert banner["visible"] is True and "not found" in banner["value"]


def test_the_charts_count_images_likes_like_rate_and_likeness_per_prompt(served):
    studio = served.runtime.studio
    tune = studio.create_tune("bob", TuneCreate(title="B", name="man", images=PHOTOS, branch="fast")).tune
    served.runtime.worker.drain()
    _, prompt = studio.preview_pack_prompt(PACK, "man", 2, owner="bob", tune_id=tune.id)
    with studio.db.transaction() as conn:
        for seed, likeness in enumerate([0.6, 0.8, None, 0.7]):
            path = Path(studio.settings.data_dir) / f"{seed}.png"
            Image.new("RGB", (8, 8)).save(path)
            image_id = studio.db.insert_image(
                conn, "bob", prompt.id, path=str(path), seed=seed, width=8, height=8, likeness=likeness
            )
            if seed < 2:
                conn.execute("UPDATE images SET liked = 1 WHERE id = ?", (image_id,))
    frame = chart_frame(studio, studio.packs.get(PACK))
    row = frame[frame["prompt"] == "man #3"].iloc[0]
    assert (row["images"], row["likes"], row["like rate"], row["likeness"]) == (4, 2, 0.5, 0.7)
    assert len(frame) == sum(len(items) for items in studio.get_pack(PACK).prompts.values())
    assert frame[frame["prompt"] != "man #3"]["images"].sum() == 0

    plots = opened(served.client("ed"))[-4:]
    shown = plots[0]["value"]
    assert plots[0]["sort"][:3] == ["man #1", "man #2", "man #3"]
    assert {r[0]: r[2] for r in shown["data"] if r[2]} == {"man #3": 4}  # prompt, class, images...


def test_an_uploaded_cover_shows_on_the_card_and_a_text_file_is_refused_naming_cover(served, tmp_path):
    ed = served.client("ed")
    picture = tmp_path / "sunset.jpg"
    Image.new("RGB", (900, 600), (250, 120, 30)).save(picture)
    outputs = ed.predict(PACK, handle_file(str(picture)), api_name="/pack_studio_cover")
    assert outputs[0]["visible"] is False
    pack = served.runtime.studio.get_pack(PACK)
    assert pack.cover.startswith("fantasy-") and pack.cover.endswith(".jpg")
    items, ids = pack_cards(served.runtime.studio, "all")
    assert items[ids.index(PACK)][0].getpixel((10, 10)) == pytest.approx((250, 120, 30), abs=3)

    fake = tmp_path / "notes.png"
    fake.write_text("not a picture")
    banner = ed.predict(PACK, handle_file(str(fake)), api_name="/pack_studio_cover")[0]["value"]
    assert "`cover` must be an image file (PNG, JPEG or WebP) that opens (got 'notes.png')" in banner
    assert served.runtime.studio.get_pack(PACK).cover == pack.cover


# -- who may -----------------------------------------------------------------------------------------------


def studio_events(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {dep["api_name"]: dep for dep in config["dependencies"] if str(dep.get("api_name")).startswith("pack_")}


def test_someone_who_is_not_an_editor_is_refused_by_every_studio_event_however_it_is_called(served):
    """Every pack studio and pack editor event, called as the browser calls it (the queue, with the inputs' own
    values) by a signed-in user who is not an editor: each refuses, and nothing changes."""
    url = served.app.local_url
    with httpx.Client(base_url=url, timeout=60) as session:
        assert session.post("login", data={"username": "bob", "password": "pw"}).status_code == 200
        config = session.get("config").json()
        values = {component["id"]: component.get("props", {}).get("value") for component in config["components"]}
        events = studio_events(config)
        assert {
            "pack_studio_save",
            "pack_studio_add_row",
            "pack_studio_remove_row",
            "pack_studio_move_up",
            "pack_studio_move_down",
            "pack_studio_classes",
            *(f"pack_studio_pick_{name}" for name in TABLES),
            "pack_studio_to_yaml",
            "pack_studio_to_form",
            "pack_studio_cover",
            "pack_studio_preview",
            "pack_studio_preview_status",
            "pack_studio_preview_refresh",
        } <= set(events)
        for name, dep in events.items():
            data = [values.get(component) for component in dep["inputs"]]
            data = [PACK if isinstance(value, str) and value == "" else value for value in data]
            kind, message = queue_call(session, dep["id"], data)
            assert (kind, "may not edit packs" in str(message)) == ("error", True), (name, kind, message)
    assert served.runtime.studio.pack_editor.versions(PACK) == []


def test_the_studio_is_hidden_until_the_app_shows_it_to_an_editor(served):
    [studio_box] = [block for block in served.app.blocks.values() if getattr(block, "elem_id", None) == "pack-studio"]
    assert studio_box.visible is False
    bob = served.client("bob")
    with pytest.raises(AppError, match="may not edit packs"):
        bob.predict(PACK, "woman", 0, 1, api_name="/pack_studio_preview")


def queue_call(session: httpx.Client, fn_index: int, data: list[Any]) -> tuple[str, Any]:
    """One event through the queue, as the browser calls it (a select event carries its row)."""
    event = {"index": [0, 1], "value": "x", "selected": True, "row_value": ["1"], "col_value": []}
    return security_queue_call(session, f"bob-{fn_index}", fn_index, data, event)
