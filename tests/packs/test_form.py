"""The pack studio's form as data: every shipped pack survives pack -> form -> pack, rows keep their other keys
when added, removed and moved, and a loader error's key path finds its class, row and column."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from packs.form import (
    ASPECT,
    CHECK,
    IMAGES,
    MORE,
    NUMBER,
    TEXT,
    FormSpot,
    add_row,
    error_banner,
    error_spot,
    form_data,
    mark_error,
    move_row,
    pack_form,
    prompt_frame,
    remove_row,
)
from packs.loader import LIBRARY_DIR, PackError, load_library, parse_pack
from pipelines.errors import ValidationError
from tests.studio.test_packs import MINI_PACK

SHIPPED = sorted(load_library(LIBRARY_DIR).values(), key=lambda pack: pack.id)


def round_trip(data: dict) -> dict:
    return form_data(pack_form(data, source="t"), data, source="t")


@pytest.mark.parametrize("pack", SHIPPED, ids=lambda pack: pack.id)
def test_every_shipped_pack_survives_pack_to_form_to_pack(pack):
    saved = pack.to_file_data()  # as the editor saves it: every key written out
    assert parse_pack(round_trip(saved), source="t").to_file_data() == saved
    written = yaml.safe_load((LIBRARY_DIR / f"{pack.id}.yaml").read_text())  # as the team wrote the file
    for items in written["prompts"].values():
        for item in items:
            if item.get("seed") == "random":
                del item["seed"]  # the default, which the form leaves out (it reads the same)
    assert round_trip(written) == written, "the file comes back key for key"
    assert parse_pack(round_trip(round_trip(saved)), source="t") == pack


def test_keys_without_a_column_ride_in_more_and_come_back():
    data = copy.deepcopy(MINI_PACK)
    data["prompts"]["woman"][0].update(cfg_scale=6.5, best_of=4, hires_fix=True, inpaint_faces=False)
    data["prompts"]["dog"][0].update(w=832, h=1216)
    form = pack_form(data, source="t")
    woman, dog = form.frames["woman"], form.frames["dog"]
    assert json.loads(woman.loc[0, MORE]) == {"seed": 11, "cfg_scale": 6.5, "best_of": 4, "hires_fix": True}
    assert woman.loc[0, ASPECT] == "3:2" and dog.loc[0, ASPECT] == "832x1216"
    back = form_data(form, data, source="t")
    del data["prompts"]["woman"][0]["inpaint_faces"]  # a default, left out (it reads the same)
    assert back == data


def test_rows_keep_their_other_keys_when_added_removed_and_moved():
    items = [
        {"text": "a {{subject}}", "seed": 1},
        {"text": "b {{subject}}", "cfg_scale": 5},
        {"text": "c {{subject}}", "best_of": 8, "num_images": 2},
    ]
    frame = prompt_frame(items)

    moved, at = move_row(frame, 0, +1)
    assert at == 1 and list(moved[TEXT]) == ["b {{subject}}", "a {{subject}}", "c {{subject}}"]
    assert list(moved[NUMBER]) == [1, 2, 3]
    assert moved.loc[1, MORE] == '{"seed": 1}' and moved.loc[0, MORE] == '{"cfg_scale": 5}'
    top, at = move_row(moved, 0, -1)
    assert at == 0 and list(top[TEXT]) == list(moved[TEXT]), "the first row stays first"

    added, at = add_row(moved, 0)
    assert at == 1 and list(added[TEXT]) == ["b {{subject}}", "", "a {{subject}}", "c {{subject}}"]
    added.loc[1, TEXT] = "new {{subject}}"
    removed, picked = remove_row(added, 2)
    assert picked == 2 and list(removed[TEXT]) == ["b {{subject}}", "new {{subject}}", "c {{subject}}"]

    data = {"classes": ["woman"], "prompts": {"woman": items}}
    form = pack_form(data, source="t")
    form.frames["woman"] = removed
    assert form_data(form, data, source="t")["prompts"]["woman"] == [
        {"text": "b {{subject}}", "cfg_scale": 5},
        {"text": "new {{subject}}"},
        {"text": "c {{subject}}", "num_images": 2, "best_of": 8},
    ]
    with pytest.raises(ValidationError, match=r"`row` must be a row number between 1 and 3"):
        remove_row(removed, 3)


def test_blank_rows_are_left_out_and_numbers_come_back_as_the_pack_writes_them():
    """A number column hands back 6.0, a text cell "20": the pack gets 6 and 20."""
    frame, _ = add_row(prompt_frame([{"text": "a {{subject}}", "num_images": 6.0, "steps": "20"}]), None)
    data = {"classes": ["woman"], "prompts": {"woman": []}}
    form = pack_form(data, source="t")
    form.frames["woman"] = frame
    assert form_data(form, data, source="t")["prompts"]["woman"] == [
        {"text": "a {{subject}}", "num_images": 6, "steps": 20}
    ]


def test_a_more_cell_that_is_not_json_or_repeats_a_column_is_named_by_its_row():
    frame = prompt_frame([{"text": "a {{subject}}"}, {"text": "b {{subject}}"}])
    form = pack_form({"classes": ["dog"], "prompts": {}}, source="t")
    form.frames["dog"] = frame
    frame.loc[1, MORE] = "cfg_scale: 6"
    with pytest.raises(PackError) as error:
        form_data(form, {}, source="edit of x")
    assert error.value.path == "prompts.dog[1].more" and "must be a JSON object" in error.value.message
    frame.loc[1, MORE] = '{"num_images": 2}'
    with pytest.raises(PackError, match=r"prompts\.dog\[1\]\.num_images` sets `num_images`, which has its own"):
        form_data(form, {}, source="edit of x")


@pytest.mark.parametrize(
    ("path", "spot"),
    [
        ("prompts.woman[2].num_images", FormSpot("prompts", "woman", 2, IMAGES)),
        ("prompts.man[0].aspect_ratio", FormSpot("prompts", "man", 0, ASPECT)),
        ("prompts.man[0].h", FormSpot("prompts", "man", 0, ASPECT)),
        ("prompts.dog[4].cfg_scale", FormSpot("prompts", "dog", 4, MORE)),
        ("prompts.dog[4].strength", FormSpot("prompts", "dog", 4, "strength")),
        ("prompts.cat[1]", FormSpot("prompts", "cat", 1, None)),
        ("prompts.cat", FormSpot("prompts", "cat", None, None)),
        ("classes[1]", FormSpot("classes")),
        ("title", FormSpot("title")),
    ],
)
def test_a_loader_error_path_finds_its_class_row_and_column(path, spot):
    assert error_spot(path) == spot


def test_a_refused_save_is_named_in_the_banner_and_marked_on_its_row():
    data = copy.deepcopy(MINI_PACK)
    data["prompts"]["woman"].append({"text": "{{subject}} at sea", "num_images": 12})
    form = pack_form(data, source="t")
    with pytest.raises(PackError) as refused:
        parse_pack(form_data(form, data, source="edit of mini"), source="edit of mini")
    error = refused.value
    assert error_banner(error) == (
        'prompts.woman[2].num_images: 12 — must be an integer between 1 and 8 (woman row 3, column "images")'
    )
    marked = mark_error(form.frames, error)
    assert list(marked["woman"][CHECK]) == ["", "", "⚠ images: 12 — must be an integer between 1 and 8"]
    assert list(marked["dog"][CHECK]) == [""] and list(form.frames["woman"][CHECK]) == ["", "", ""]
