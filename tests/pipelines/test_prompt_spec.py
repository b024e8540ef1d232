"""The prompt spec is the one definition of a prompt's fields: the record, the table and the docs follow it."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import fields
from pathlib import Path

import pytest

from pipelines.errors import ValidationError
from pipelines.prompt_spec import FIELDS, STORED_FIELDS, PromptOptions, default_of, rule_of
from storage.db import Database
from storage.records import Prompt

ROOT = Path(__file__).resolve().parents[2]


def test_every_stored_field_is_a_record_field_and_a_column(tmp_path):
    assert set(STORED_FIELDS) <= {item.name for item in fields(Prompt)}
    Database(tmp_path / "t.db").close()
    with sqlite3.connect(tmp_path / "t.db") as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(prompts)")}
    assert set(STORED_FIELDS) <= columns, f"a stored spec field needs a migration: {set(STORED_FIELDS) - columns}"


def test_the_pack_schema_documents_every_field():
    schema = (ROOT / "packs" / "SCHEMA.md").read_text()
    documented = set(re.findall(r"^\s+-?\s*(\w+):", schema, flags=re.MULTILINE))
    assert set(FIELDS) - {"w", "h"} <= documented  # w and h are described in the aspect_ratio comment
    assert "`w`" in schema and "`h`" in schema


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_refuses_a_value_of_the_wrong_kind_naming_itself(name):
    wrong = 3 if rule_of(name).kind is str else "x"
    values = {"text": "ohwx", name: wrong}
    with pytest.raises(ValidationError) as refused:
        PromptOptions(**values)
    assert refused.value.field == name and refused.value.message == rule_of(name).expected


def test_defaults_are_valid_and_face_correct_sets_inpaint_faces():
    options = PromptOptions(text="ohwx woman", face_correct=True)
    assert options.inpaint_faces is True
    assert {
        name: getattr(options, name) for name in FIELDS if name not in ("text", "face_correct", "inpaint_faces")
    } == {name: default_of(name) for name in FIELDS if name not in ("text", "face_correct", "inpaint_faces")}


@pytest.mark.parametrize(
    ("values", "size"),
    [
        ({}, (512, 512)),
        ({"aspect_ratio": "4:5"}, (456, 576)),
        ({"aspect_ratio": "16:9", "w": 640, "h": 384}, (640, 384)),  # both sides given: they win
        ({"w": 640}, (640, 512)),
    ],
)
def test_size_for_a_model_resolution(values, size):
    w, h = PromptOptions(text="ohwx", **values).size_for(512)
    assert (w, h) == size and w % 8 == 0 and h % 8 == 0
