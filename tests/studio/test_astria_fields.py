"""Astria compatibility fields: stored on the tune and echoed back; a tune's default prompt callback; face_correct.

`model_type` is stored in a column of its own (`Tune.model_type`): see tests/studio/test_model_types.py."""

from __future__ import annotations

import json
import sqlite3

import pytest

from pipelines.errors import ValidationError
from storage.db import MIGRATIONS, Database
from studio import queue
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from studio.service import Studio
from tests.studio.test_service import PHOTOS, Receiver, tune_request

DEFAULTS = {"base_tune_id": None, "preset": None, "training_face_correct": False}


@pytest.fixture
def runtime(settings):
    settings = settings.with_overrides(allowed_fetch_hosts=("127.0.0.1",))
    rt = open_runtime(settings, start_worker=False, callback_delays=[0.0, 0.0])
    yield rt
    rt.close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def test_the_fields_are_stored_and_echoed_back(runtime):
    request = tune_request(
        base_tune_id=690204, model_type="lora", preset="flux-lora-portrait", training_face_correct=True
    )
    tune = runtime.studio.create_tune("alice", request).tune

    expected = {"base_tune_id": 690204, "preset": "flux-lora-portrait", "training_face_correct": True}
    assert tune.model_type == "lora"
    assert tune.api_fields == expected
    assert json.loads(json.dumps(tune.to_dict()))["api_fields"] == expected
    reopened = Database(runtime.db.path)
    try:
        assert reopened.get_tune("alice", tune.id).api_fields == expected
    finally:
        reopened.close()


def test_without_them_the_defaults_are_stored(runtime):
    tune = runtime.studio.create_tune("alice", tune_request(preset="")).tune
    assert tune.api_fields == DEFAULTS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_type", "checkpoint"),
        ("model_type", "LoRA"),
        ("base_tune_id", 0),
        ("base_tune_id", -3),
        ("base_tune_id", True),
        ("base_tune_id", "690204"),
        ("preset", "x" * 61),
        ("preset", 5),
        ("preset", "two\nlines"),
        ("training_face_correct", "yes"),
        ("training_face_correct", 1),
        ("prompt_callback", 5),
    ],
)
def test_bad_values_name_the_field_and_value(field, value):
    with pytest.raises(ValidationError) as error:
        TuneCreate(title="me", name="woman", images=PHOTOS, **{field: value})
    assert error.value.field == field and error.value.value == value
    if field == "model_type":
        assert "must be one of lora, pti" in str(error.value)


def test_prompts_without_a_callback_get_the_tunes_prompt_callback(runtime, receiver):
    prompts = [PromptCreate("{{subject}}", num_images=1), PromptCreate("{{subject}}", callback=f"{receiver.url}/own")]
    tune = runtime.studio.create_tune("alice", tune_request(prompts=prompts, prompt_callback=f"{receiver.url}/d")).tune

    stored = sorted(runtime.studio.list_prompts("alice", tune_id=tune.id), key=lambda p: p.id)
    assert [p.callback for p in stored] == [f"{receiver.url}/d", f"{receiver.url}/own"]
    runtime.worker.drain()
    assert sorted(path for path, _ in receiver.received) == ["/d", "/own"]


def test_pack_prompts_get_the_prompt_callback_when_training_and_when_reusing_tunes(runtime):
    studio = runtime.studio
    pack = studio.list_packs("woman")[0]
    callback = "http://127.0.0.1:9/pack"
    [created] = studio.create_tune_from_pack("alice", pack.id, tune_request(branch="fast", prompt_callback=callback))
    reused = studio.create_tune_from_pack(
        "alice", pack.id, TuneCreate(title="-", name="woman", prompt_callback=callback), tune_ids=[created.tune.id]
    )

    prompts = studio.list_prompts("alice", tune_id=created.tune.id, limit=100)
    assert len(prompts) == 2 * len(pack.prompts["woman"])  # once when trained, once more when reused
    assert reused[0].tune.id == created.tune.id
    assert {p.callback for p in prompts} == {callback}


def test_a_prompt_callback_to_a_private_address_is_refused_before_anything_is_written(settings):
    runtime = open_runtime(settings, start_worker=False)  # no allowed hosts
    try:
        with pytest.raises(ValidationError) as error:
            runtime.studio.create_tune("alice", tune_request(prompt_callback="http://127.0.0.1/x"))
        assert error.value.field == "prompt_callback"
        assert runtime.studio.list_tunes("alice") == []
    finally:
        runtime.close()


def test_face_correct_means_inpaint_faces(runtime):
    assert PromptCreate("{{subject}}", face_correct=True).inpaint_faces is True
    assert PromptCreate("{{subject}}").inpaint_faces is False
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    prompt = runtime.studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", face_correct=True))
    assert prompt.inpaint_faces is True
    with pytest.raises(ValidationError) as error:
        PromptCreate("{{subject}}", face_correct="yes")
    assert (error.value.field, error.value.value) == ("face_correct", "yes")


def test_a_version_2_database_gets_empty_api_fields_and_loras(tmp_path, settings):
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.execute("INSERT INTO users (id, created_at) VALUES ('alice', '2026-01-01T00:00:00+00:00')")
    conn.execute(
        "INSERT INTO tunes (owner, title, name, token, branch, base_model, status, created_at, updated_at)"
        " VALUES ('alice', 'old', 'woman', 'sks', 'fast', 'mock', 'trained', '2026-01-01', '2026-01-01')"
    )
    conn.execute(
        "INSERT INTO prompts (tune_id, owner, text, rendered_text, num_images, cfg_scale, steps, scheduler,"
        " status, created_at, updated_at) VALUES (1, 'alice', 'x', 'sks woman', 1, 7, 30, 'ddim', 'queued', 'a', 'a')"
    )
    conn.commit()
    conn.close()

    db = Database(path)
    try:
        assert db.schema_version == len(MIGRATIONS)  # migrated to the newest
        studio = Studio(settings, db)
        [tune] = studio.list_tunes("alice")
        [prompt] = studio.list_prompts("alice")
        assert tune.api_fields == {} and prompt.loras == []
        kind, claimed = queue.claim_next_job(db)  # an old queued prompt still runs (no tags to wait for)
        assert (kind, claimed.id) == ("prompt", prompt.id)
    finally:
        db.close()
