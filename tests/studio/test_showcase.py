"""Public avatars (issue 20) through the service: a tune's visibility, an avatar hidden by its owner or blocked by
an admin, the showcase's filters, and public links that stop working the moment an avatar stops being public (and
stay dead when the tune is made public again)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from admin.operations import Operations
from pipelines.errors import ValidationError
from pipelines.settings import Settings
from storage.records import PromptStatus
from studio.errors import NotFoundError
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.admin.test_operations import PHOTOS


@pytest.fixture
def runtime(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", device="cpu", admins=("root",))
    runtime = open_runtime(settings, start_worker=False)
    yield runtime
    runtime.close()


def avatars(studio, owner: str, title: str, *, visibility: str = "private", later: int = 1, pack: bool = False):
    """A tune with one prompt sent with it (a sample) and `later` prompts made afterwards, two images each, all
    done as a worker leaves them. Returns (tune, {kind: [image ids]})."""
    db = studio.db
    request = TuneCreate(title=title, name="woman", images=PHOTOS, branch="fast", visibility=visibility)
    tune = studio.create_tune(owner, replace(request, prompts=[PromptCreate("{{subject}} sample")])).tune
    [sample] = studio.list_prompts(owner, tune_id=tune.id)
    prompts = {"sample": [sample.id]}
    prompts["prompt"] = [
        studio.create_prompt(owner, tune.id, PromptCreate(f"{{{{subject}}}} later {n}")).id for n in range(later)
    ]
    with db.transaction() as conn:
        if pack:  # the later prompts came from a pack
            conn.execute(f"UPDATE prompts SET pack_id = 'fantasy' WHERE tune_id = {tune.id} AND id != {sample.id}")
        later = f"tune_id = {tune.id} AND id != {sample.id}"
        conn.execute(f"UPDATE prompts SET created_at = '2099-01-01T00:00:00+00:00' WHERE {later}")
    images: dict[str, list[int]] = {}
    for kind, ids in prompts.items():
        for prompt_id in ids:
            with db.transaction() as conn:
                for seed in range(2):
                    path = studio.settings.data_dir / f"{owner}-{prompt_id}-{seed}.png"
                    Image.new("RGB", (32, 32), (seed * 90, 40, 200)).save(path)
                    image_id = db.insert_image(conn, owner, prompt_id, path=str(path), seed=seed, width=32, height=32)
                    images.setdefault("pack" if pack and kind == "prompt" else kind, []).append(image_id)
            db.update_prompt(owner, prompt_id, status=PromptStatus.DONE)
    return studio.get_tune(owner, tune.id), images


def shown(runtime, **filters) -> list[int]:
    return [item.image_id for item in runtime.studio.showcase.items(**filters)]


def test_only_public_tunes_are_on_the_showcase_newest_first_with_their_prompt(runtime):
    alice, hers = avatars(runtime.studio, "alice", "Alice", visibility="public")
    bob, _ = avatars(runtime.studio, "bob", "Bob")  # private by default
    assert bob.visibility == "private" and alice.visibility == "public" and alice.publication
    ids = sorted(hers["sample"] + hers["prompt"], reverse=True)
    assert shown(runtime) == ids
    assert shown(runtime, user="bob") == [] and shown(runtime, user="alice") == ids
    first = runtime.studio.showcase.items(user="alice")[0]
    assert (first.title, first.owner, first.kind) == ("Alice", "alice", "prompt")
    assert first.text.endswith("later 0") and "{{" not in first.text
    assert first.url.startswith(f"/showcase/images/{first.image_id}.png?v=")
    assert (
        runtime.studio.showcase.tunes("alice") == [(alice.id, "Alice")] and runtime.studio.showcase.tunes("bob") == []
    )


def test_filters_by_tune_and_kind(runtime):
    first, mine = avatars(runtime.studio, "alice", "First", visibility="public", pack=True)
    _, more = avatars(runtime.studio, "alice", "Second", visibility="public")
    assert shown(runtime, user="alice", tune_id=first.id) == sorted(mine["sample"] + mine["pack"], reverse=True)
    assert shown(runtime, kind="pack") == sorted(mine["pack"], reverse=True)
    assert shown(runtime, kind="sample") == sorted(mine["sample"] + more["sample"], reverse=True)
    assert shown(runtime, kind="prompt") == sorted(more["prompt"], reverse=True)
    with pytest.raises(ValidationError, match=r"`kind` must be one of pack, sample, prompt \(got 'selfie'\)"):
        runtime.studio.showcase.items(kind="selfie")
    with pytest.raises(ValidationError, match="`tune_id`"):
        runtime.studio.showcase.items(tune_id=0)


def test_a_public_link_stops_the_moment_the_tune_is_private_and_stays_dead_after(runtime):
    tune, _ = avatars(runtime.studio, "alice", "Alice", visibility="public")
    showcase = runtime.studio.showcase
    item = showcase.items()[0]
    signature = item.url.split("?v=")[1]
    assert showcase.file(item.image_id, signature).is_file()
    with pytest.raises(NotFoundError):
        showcase.file(item.image_id, "0" * 32)  # a forged link
    runtime.studio.set_visibility("alice", tune.id, "private")
    assert shown(runtime) == []
    with pytest.raises(NotFoundError):
        showcase.file(item.image_id, signature)
    runtime.studio.set_visibility("alice", tune.id, "public")
    with pytest.raises(NotFoundError):  # public again: the old link stays dead, a new one works
        showcase.file(item.image_id, signature)
    fresh = showcase.items()[0]
    assert fresh.image_id == item.image_id and fresh.url != item.url
    assert showcase.file(fresh.image_id, fresh.url.split("?v=")[1]).is_file()


def test_hidden_blocked_and_deleted_avatars_leave_the_showcase(runtime):
    tune, images = avatars(runtime.studio, "alice", "Alice", visibility="public")
    studio, showcase = runtime.studio, runtime.studio.showcase
    one, two = images["prompt"]
    link = {item.image_id: item.url.split("?v=")[1] for item in showcase.items()}
    assert studio.hide_image("alice", one).hidden is True
    assert one not in shown(runtime) and two in shown(runtime)
    with pytest.raises(NotFoundError):
        showcase.file(one, link[one])
    studio.hide_image("alice", one, hidden=False)
    assert one in shown(runtime)
    Operations(studio, runtime.store).block_image("root", two)
    studio.hide_image("alice", two, hidden=False)  # its owner cannot undo an admin's block
    assert two not in shown(runtime)
    with pytest.raises(NotFoundError):
        studio.hide_image("bob", one)  # not bob's
    with pytest.raises(NotFoundError):
        studio.set_visibility("bob", tune.id, "public")
    studio.delete_tune("alice", tune.id)  # images outlive their tune, but not on the showcase
    assert shown(runtime) == []
    with pytest.raises(NotFoundError):
        showcase.file(images["sample"][0], link[images["sample"][0]])


def test_visibility_is_checked_at_creation_and_on_change(runtime):
    with pytest.raises(ValidationError, match=r"`visibility` must be private or public \(got 'friends'\)"):
        TuneCreate(title="x", name="woman", images=PHOTOS, visibility="friends")
    tune, _ = avatars(runtime.studio, "alice", "Alice")
    with pytest.raises(ValidationError, match="`visibility`"):
        runtime.studio.set_visibility("alice", tune.id, "everyone")
    assert runtime.studio.get_tune("alice", tune.id).visibility == "private"


def test_training_photos_are_never_served_as_public(runtime):
    tune, _ = avatars(runtime.studio, "alice", "Alice", visibility="public")
    photos = sorted(runtime.studio.photos_dir(tune.id).glob("*"))
    served = {
        str(runtime.studio.showcase.file(i.image_id, i.url.split("?v=")[1])) for i in runtime.studio.showcase.items()
    }
    assert served and not any(str(path) in served for path in photos)
    assert all("/photos/" not in path for path in served)
