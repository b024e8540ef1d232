"""Abusive pack edits (security review, issue 12 item 8): a YAML alias bomb, an oversized pack, path-like pack ids.

Each is refused with an error naming the file or field, the value and the limit; nothing reaches users or the disk.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from packs.loader import MAX_PACK_BYTES, MAX_PROMPTS_PER_CLASS, PackError, load_pack_file, parse_pack, read_pack_text
from pipelines.errors import ValidationError
from studio.packs import PackEditor, PackLibrary
from tests.studio.test_packs import MINI_PACK

LOL = "[" + ",".join(["lol"] * 9) + "]"
# 9 levels of 9 aliases: a ~600-byte pack whose title expands to 9**7 strings
BOMB = (
    "id: bomb\ndescription: d\nclasses: [woman]\ndefault_branch: sdxl1\n"
    'prompts: {woman: [{text: "{{subject}}"}]}\n'
    f"title: [&a {LOL}, "
    + ", ".join(f"&{name} [{','.join(['*' + prev] * 9)}]" for prev, name in zip("abcdef", "bcdefg", strict=True))
    + "]\n"
)
EVIL_ID = "../../outside"


@pytest.fixture
def team(tmp_path) -> tuple[PackLibrary, PackEditor]:
    library = PackLibrary(tmp_path / "shipped", tmp_path / "team")
    return library, PackEditor(library, tmp_path / "team")


# -- A: alias bombs --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_yaml_alias_bomb_is_refused_with_a_short_message_that_names_the_aliases(team):
    _library, editor = team
    with pytest.raises(PackError) as error:
        editor.create(read_pack_text(BOMB, source="new pack"), editor="ana")
    message = str(error.value)
    assert message.startswith("`new pack: (file)`") and "aliases" in message, message
    assert len(message) < 400
    assert editor.versions("bomb") == []


@pytest.mark.timeout(60)
def test_a_huge_shared_value_is_named_cut_short_without_expanding_it():
    level: list = ["lol"] * 9
    for _ in range(6):
        level = [level] * 9  # 9**7 strings, built from shared references as a YAML loader builds aliases
    data = {**copy.deepcopy(MINI_PACK), "title": level}
    with pytest.raises(PackError) as error:
        parse_pack(data, source="edit of mini")
    message = str(error.value)
    assert message.startswith("`edit of mini: title` must be non-empty text"), message
    assert len(message) < 400


# -- B: sizes and counts; new packs are drafts ----------------------------------------------------


def test_a_pack_file_over_the_size_limit_is_refused_naming_the_file_and_the_limit(tmp_path):
    data = copy.deepcopy(MINI_PACK) | {"description": "x" * 500}
    data["prompts"]["woman"] = [{"text": "{{subject}} " + "y" * 1900} for _ in range(200)]  # ~400 KB of YAML
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PackError, match=rf"`mini.yaml: \(file\)` is larger than the {MAX_PACK_BYTES} byte"):
        load_pack_file(path)
    with pytest.raises(PackError, match=rf"`new pack: \(file\)` is larger than the {MAX_PACK_BYTES} byte"):
        read_pack_text(path.read_text(), source="new pack")


def test_too_many_prompts_for_a_class_are_refused_naming_the_class_and_the_limit(team):
    _library, editor = team
    data = copy.deepcopy(MINI_PACK)
    data["prompts"]["woman"] = [{"text": "{{subject}} as a pilot"}] * (MAX_PROMPTS_PER_CLASS + 1)
    limit = MAX_PROMPTS_PER_CLASS
    with pytest.raises(PackError, match=rf"`new pack 'mini': prompts.woman` must be a list of at most {limit} prompts"):
        editor.create(data, editor="ana")
    assert editor.versions("mini") == []


def test_a_new_pack_is_a_draft_until_it_is_published(team):
    library, editor = team
    created = editor.create({**MINI_PACK, "published": True}, editor="ana")
    assert not created.published
    assert library.list() == [], "users do not see a pack nobody has published"
    editor.set_published("mini", True, editor="ana")
    assert [pack.id for pack in library.list()] == ["mini"]
    assert [v["action"] for v in editor.versions("mini")] == ["create", "publish"]


# -- C: pack ids that are paths ---------------------------------------------------------------------

CALLS = {
    "get": lambda library, editor: library.get(EVIL_ID, include_unpublished=True),
    "edit": lambda library, editor: editor.edit(EVIL_ID, MINI_PACK, editor="ana"),
    "duplicate": lambda library, editor: editor.duplicate(EVIL_ID, "copy", editor="ana"),
    "publish": lambda library, editor: editor.set_published(EVIL_ID, True, editor="ana"),
    "versions": lambda library, editor: editor.versions(EVIL_ID),
    "revert": lambda library, editor: editor.revert(EVIL_ID, 1, editor="ana"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_pack_id_that_is_a_path_is_refused_naming_the_field_and_the_value(team, tmp_path, call):
    library, editor = team
    outside = tmp_path / "outside"  # where team/.versions/../../outside points
    outside.mkdir()
    (outside / "0001.yaml").write_text(yaml.safe_dump({**MINI_PACK, "id": "outside", "published": True}))
    (outside / "log.jsonl").write_text('{"version": 1}\n')

    with pytest.raises(ValidationError) as error:
        call(library, editor)
    assert error.value.field == "pack_id" and error.value.value == EVIL_ID
    assert "'../../outside'" in str(error.value) and "lowercase letters, digits" in str(error.value)
    imported = [pack.id for pack in library.list(include_unpublished=True) if pack.id == "outside"]
    assert imported == [], "nothing from outside the packs folder was imported"


def test_a_copy_under_a_path_like_id_is_refused_naming_the_new_id(team):
    _library, editor = team
    editor.create(MINI_PACK, editor="ana")
    with pytest.raises(ValidationError) as error:
        editor.duplicate("mini", EVIL_ID, editor="ana")
    assert error.value.field == "new_id" and error.value.value == EVIL_ID
