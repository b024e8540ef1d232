"""The creative team's loop: create, edit (validated, versioned), duplicate, publish, preview, revert."""

from __future__ import annotations

import pytest

from packs.loader import PackError
from studio.errors import ConflictError
from studio.packs import PackEditor, PackLibrary
from studio.requests import TuneCreate
from tests.fakehub import fake_hub_fixture  # noqa: F401 (registers `fake_hub`)
from tests.studio.test_packs import MINI_PACK
from tests.studio.test_service import PHOTOS


@pytest.fixture
def team(tmp_path):
    library = PackLibrary(tmp_path / "shipped", tmp_path / "team")
    return library, PackEditor(library, tmp_path / "team")


def test_an_edit_is_versioned_and_can_be_reverted(team, tmp_path):
    library, editor = team
    editor.create(MINI_PACK, editor="ana")
    changed = {**MINI_PACK, "title": "Mini, warmer"}
    editor.edit("mini", changed, editor="ben")
    assert library.get("mini").title == "Mini, warmer"

    assert [(v["version"], v["saved_by"], v["action"]) for v in editor.versions("mini")] == [
        (1, "ana", "create"),
        (2, "ben", "edit"),
    ]
    editor.revert("mini", 1, editor="ana")
    assert library.get("mini", include_unpublished=True).title == "Mini"
    assert [v["action"] for v in editor.versions("mini")][-1] == "revert to 1"


def test_a_bad_edit_is_refused_and_the_pack_on_disk_stays_as_it_was(team, tmp_path):
    _library, editor = team
    editor.create(MINI_PACK, editor="ana")
    before = (tmp_path / "team" / "mini.yaml").read_bytes()
    bad = {**MINI_PACK, "prompts": {**MINI_PACK["prompts"], "dog": [{"text": "{{subject}}", "num_images": 99}]}}
    with pytest.raises(PackError, match=r"edit of mini: prompts\.dog\[0\]\.num_images"):
        editor.edit("mini", bad, editor="ben")
    assert (tmp_path / "team" / "mini.yaml").read_bytes() == before
    assert len(editor.versions("mini")) == 1


def test_duplicate_publish_and_ids(team):
    library, editor = team
    editor.create(MINI_PACK, editor="ana")
    with pytest.raises(ConflictError):
        editor.create(MINI_PACK, editor="ana")
    editor.set_published("mini", True, editor="ana")
    copy = editor.duplicate("mini", "mini-winter", editor="ana", title="Mini winter")
    assert copy.title == "Mini winter" and not copy.published
    assert [p.id for p in library.list()] == ["mini"], "unpublished packs are hidden from users"
    editor.set_published("mini-winter", True, editor="ana")
    assert sorted(p.id for p in library.list()) == ["mini", "mini-winter"]


def test_editing_a_shipped_pack_writes_a_team_copy_and_leaves_the_shipped_file(tmp_path):
    import yaml

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "mini.yaml").write_text(yaml.safe_dump(MINI_PACK))
    library = PackLibrary(shipped, tmp_path / "team")
    editor = PackEditor(library, tmp_path / "team")
    editor.edit("mini", {**MINI_PACK, "title": "Team Mini"}, editor="ana")
    assert library.get("mini").title == "Team Mini"
    assert yaml.safe_load((shipped / "mini.yaml").read_text())["title"] == "Mini"


def test_preview_renders_with_sample_characteristics(settings, tmp_path):
    import yaml

    from studio.runtime import open_runtime

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "mini.yaml").write_text(yaml.safe_dump(MINI_PACK))
    runtime = open_runtime(settings, start_worker=False)
    try:
        runtime.studio.packs = PackLibrary(folder)
        text, queued = runtime.studio.preview_pack_prompt("mini", "woman", 0)
        assert text == "ohwx woman as a pilot, green eyes, short brown hair" and queued is None

        tune = runtime.studio.create_tune("ana", TuneCreate(title="t", name="woman", images=PHOTOS, branch="fast"))
        runtime.worker.drain()
        _, queued = runtime.studio.preview_pack_prompt("mini", "woman", 0, owner="ana", tune_id=tune.tune.id)
        runtime.worker.drain()
        done = runtime.studio.get_prompt("ana", queued.id)
        assert done.status == "done" and len(done.images) == 2 and done.pack_prompt == "woman/0"
    finally:
        runtime.close()


def test_with_the_hub_configured_every_saved_edit_is_pushed_to_a_private_dataset(tmp_path, fake_hub):
    from pipelines.settings import Settings
    from storage.hub_packs import HubPackMirror
    from tests.fakehub import FAKE_TOKEN

    settings = Settings(data_dir=tmp_path / "data", hf_token=FAKE_TOKEN, hub_namespace="studio")
    library = PackLibrary(tmp_path / "team")
    editor = PackEditor(library, tmp_path / "team", mirror=HubPackMirror(settings))
    editor.create(MINI_PACK, editor="ana")
    editor.edit("mini", {**MINI_PACK, "title": "Mini v2"}, editor="ben")

    repo = fake_hub.repos["datasets/studio/tune-studio-packs"]
    assert repo.private and editor.last_push_error is None
    files = repo.files
    assert "title: Mini v2" in files["packs/mini.yaml"].decode()
    assert {"versions/mini/0001.yaml", "versions/mini/0002.yaml"} <= set(files)
    assert len(files["versions/mini/log.jsonl"].decode().splitlines()) == 2


def test_a_failed_push_keeps_the_local_save(tmp_path, fake_hub):
    from pipelines.settings import Settings
    from storage.artifacts import RetryPolicy
    from storage.hub_packs import HubPackMirror
    from tests.fakehub import FAKE_TOKEN

    settings = Settings(data_dir=tmp_path / "data", hf_token=FAKE_TOKEN, hub_namespace="studio")
    mirror = HubPackMirror(settings, retry=RetryPolicy(attempts=1))
    library = PackLibrary(tmp_path / "team")
    editor = PackEditor(library, tmp_path / "team", mirror=mirror)
    fake_hub.fail_next("/api/repos/create", status=500, times=5)
    editor.create(MINI_PACK, editor="ana")

    assert library.get("mini", include_unpublished=True).title == "Mini"
    assert editor.last_push_error and FAKE_TOKEN not in editor.last_push_error
