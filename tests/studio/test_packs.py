"""Tunes from packs: the pack's prompts rendered for the tune, reuse of trained tunes, likes per pack prompt."""

from __future__ import annotations

import pytest
import yaml

from pipelines.errors import ValidationError
from storage.db import Database
from studio.errors import NotFoundError
from studio.packs import PackLibrary
from studio.requests import TuneCreate
from studio.runtime import open_runtime
from studio.service import Studio
from tests.studio.test_service import PHOTOS

MINI_PACK = {
    "id": "mini",
    "title": "Mini",
    "description": "Two small prompts.",
    "classes": ["woman", "dog"],
    "default_branch": "sdxl1",
    "preset": {"steps": 2, "face_crop": False},
    "published": True,
    "prompts": {
        "woman": [
            {
                "text": "{{subject}} as a pilot, {{characteristics}}",
                "negative_prompt": "blurry",
                "num_images": 2,
                "steps": 2,
                "aspect_ratio": "3:2",
                "seed": 11,
            },
            {"text": "watercolour of {{subject}}", "num_images": 1, "steps": 2},
        ],
        "dog": [{"text": "{{subject}} in a tiny hat", "num_images": 1, "steps": 2}],
    },
}


@pytest.fixture
def runtime(settings, tmp_path):
    folder = tmp_path / "packs"
    folder.mkdir()
    (folder / "mini.yaml").write_text(yaml.safe_dump(MINI_PACK))
    rt = open_runtime(settings, start_worker=False)
    rt.studio.packs = PackLibrary(folder)
    rt.worker.studio.packs = rt.studio.packs
    yield rt
    rt.close()


def request(**changes) -> TuneCreate:
    return TuneCreate(**{"title": "me", "name": "woman", "images": PHOTOS, **changes})


@pytest.mark.usefixtures("no_card_samples")
def test_a_tiny_tune_from_a_pack_yields_the_pack_images_with_rendered_prompts(runtime):
    studio = runtime.studio
    [created] = studio.create_tune_from_pack(
        "alice", "mini", request(branch="tiny", characteristics={"hair": "red hair"})
    )
    assert created.tune.steps == 2 and not created.tune.face_crop, "the pack's training preset is used"
    runtime.worker.drain()

    prompts = sorted(studio.list_prompts("alice", tune_id=created.tune.id), key=lambda p: p.id)
    assert [p.rendered_text for p in prompts] == ["sks woman as a pilot, red hair", "watercolour of sks woman"]
    assert [p.status for p in prompts] == ["done", "done"]
    assert [len(p.images) for p in prompts] == [2, 1]
    assert [i.seed for i in prompts[0].images] == [11, 12]
    assert (prompts[0].images[0].width, prompts[0].images[0].height) == (160, 104), "3:2 at the tiny resolution"
    assert prompts[0].negative_prompt == "blurry"


def test_a_fast_tune_from_a_shipped_pack_gets_every_prompt_of_its_class(settings):
    rt = open_runtime(settings, start_worker=False)
    try:
        pack = rt.studio.list_packs("woman")[0]
        [created] = rt.studio.create_tune_from_pack("alice", pack.id, request(branch="fast"))
        rt.worker.drain()
        prompts = rt.studio.list_prompts("alice", tune_id=created.tune.id, limit=100)
        assert len(prompts) == len(pack.prompts["woman"])
        assert sum(len(p.images) for p in prompts) == pack.images_for("woman")
        assert all("sks woman" in p.rendered_text and "{{" not in p.rendered_text for p in prompts)
    finally:
        rt.close()


def test_a_pack_tune_without_a_branch_trains_on_what_this_server_runs(runtime):
    """On the CPU demo server (`tiny` by default) the pack's `sdxl1` could not run: the tune uses `tiny`; a server
    whose default is a real model takes the pack's own branch."""
    studio = runtime.studio
    [on_cpu] = studio.create_tune_from_pack("alice", "mini", request(title="cpu"))
    assert studio.settings.default_branch == "tiny" and on_cpu.tune.branch == "tiny"
    studio.settings = studio.settings.with_overrides(default_branch="sd15")
    [on_gpu] = studio.create_tune_from_pack("alice", "mini", request(title="gpu"))
    assert on_gpu.tune.branch == "sdxl1"


def test_a_flux_pack_on_the_cpu_demo_server_trains_on_the_flux_demo(runtime, tmp_path):
    """A pack made for `flux1` keeps its architecture where the server runs a CPU demo: `tiny-flux`, not `tiny`."""
    studio = runtime.studio
    folder = tmp_path / "flux-packs"
    folder.mkdir()
    pack = {**MINI_PACK, "id": "mini-flux", "default_branch": "flux1"}
    (folder / "mini-flux.yaml").write_text(yaml.safe_dump(pack))
    studio.packs = PackLibrary(folder)
    [on_cpu] = studio.create_tune_from_pack("alice", "mini-flux", request(title="cpu"))
    assert on_cpu.tune.branch == "tiny-flux"
    assert {p.scheduler for p in studio.list_prompts("alice", tune_id=on_cpu.tune.id)} == {"flow_match_euler"}
    studio.settings = studio.settings.with_overrides(default_branch="sd15")
    [on_gpu] = studio.create_tune_from_pack("alice", "mini-flux", request(title="gpu"))
    assert on_gpu.tune.branch == "flux1"


def test_an_unsupported_class_is_refused_naming_the_supported_ones(runtime):
    with pytest.raises(ValidationError, match="it supports woman, dog") as error:
        runtime.studio.create_tune_from_pack("alice", "mini", request(name="man", branch="fast"))
    assert error.value.field == "name"
    assert runtime.studio.list_tunes("alice") == []
    with pytest.raises(NotFoundError):
        runtime.studio.create_tune_from_pack("alice", "no-such-pack", request(branch="fast"))


def test_tune_ids_reuse_trained_tunes_without_training_again(runtime):
    studio = runtime.studio
    tune = studio.create_tune("alice", request(branch="fast")).tune
    runtime.worker.drain()
    [reused] = studio.create_tune_from_pack("alice", "mini", request(branch="fast"), tune_ids=[tune.id])
    assert reused.tune.id == tune.id and studio.list_tunes("alice") == [studio.get_tune("alice", tune.id)]
    assert runtime.worker.drain() == 2  # the two pack prompts, no training
    with pytest.raises(NotFoundError):
        studio.create_tune_from_pack("bob", "mini", request(branch="fast"), tune_ids=[tune.id])


def test_likes_roll_up_to_the_pack_prompt_they_came_from(runtime):
    studio = runtime.studio
    for owner in ("alice", "bob"):
        studio.create_tune_from_pack(owner, "mini", request(branch="fast"))
    runtime.worker.drain()
    for owner in ("alice", "bob"):
        pilot = next(p for p in studio.list_prompts(owner) if "pilot" in p.rendered_text)
        studio.like_image(owner, pilot.images[0].id)
    studio.like_image("bob", pilot.images[1].id)

    stats = {row["prompt"]: row for row in studio.pack_stats("mini")}
    assert stats["woman/0"]["likes"] == 3 and stats["woman/0"]["images"] == 4
    assert stats["woman/1"]["likes"] == 0 and stats["woman/1"]["images"] == 2
    assert stats["dog/0"] == {"prompt": "dog/0", "text": "{{subject}} in a tiny hat", "images": 0, "likes": 0}


def test_list_packs_filters_by_class(runtime):
    assert [p.id for p in runtime.studio.list_packs("dog")] == ["mini"]
    assert runtime.studio.list_packs("couple") == []
    assert runtime.studio.get_pack("mini").images_for("woman") == 3


def test_a_database_from_before_packs_is_migrated_and_keeps_its_records(tmp_path, settings):
    import sqlite3

    from storage.db import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)  # a version-1 database, as the first release wrote it
    conn.executescript(MIGRATIONS[0])
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO users (id, created_at) VALUES ('alice', '2026-01-01T00:00:00+00:00')")
    conn.execute(
        "INSERT INTO tunes (owner, title, name, token, branch, base_model, status, created_at, updated_at)"
        " VALUES ('alice', 'old', 'woman', 'sks', 'fast', 'mock', 'trained', '2026-01-01', '2026-01-01')"
    )
    conn.execute(
        "INSERT INTO prompts (tune_id, owner, text, rendered_text, num_images, cfg_scale, steps, scheduler,"
        " status, created_at, updated_at) VALUES (1, 'alice', 'x', 'sks woman', 1, 7, 30, 'ddim', 'done', 'a', 'a')"
    )
    conn.commit()
    conn.close()

    db = Database(path)
    try:
        assert db.schema_version == len(MIGRATIONS)  # migrated to the newest
        studio = Studio(settings, db)
        assert [t.title for t in studio.list_tunes("alice")] == ["old"]
        [prompt] = studio.list_prompts("alice")
        assert prompt.pack_id is None and prompt.rendered_text == "sks woman"
    finally:
        db.close()
