"""The launched app driven through gradio_client as programs drive it: every named endpoint, two users.

The app runs with two accounts (`TUNES_ACCOUNTS`), a real worker thread and the `fast` mock branch by
default; one test trains and generates on the `tiny` branch (a real, tiny SD-1.5 model).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from admin.operations import Operations
from app import build_app
from pipelines.settings import Settings
from studio.runtime import open_runtime
from tests.conftest import astronaut_photos, served_app, settings_with_tiny, wait_for
from ui.context import UIContext

NAMED = {
    "create_tune",
    "get_tune",
    "list_tunes",
    "delete_tune",
    "cancel_tune",
    "create_prompt",
    "get_prompt",
    "list_prompts",
    "delete_prompt",
    "like",
    "list_packs",
    "create_tune_from_pack",
    "check_photos",
    "set_visibility",
    "hide_image",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_sd15_dir):
    settings = replace(
        settings_with_tiny(tmp_path_factory.mktemp("app"), tiny_sd15_dir),
        default_branch="fast",
        accounts=("alice:alice-pw", "bob:bob-pw"),
        admins=("alice",),
        max_photo_bytes=2_000_000,
        api_rate_per_minute=100_000,  # the tests poll the Gradio API; the limit has its own tests
    )
    with served_app(settings) as url:
        yield url


@pytest.fixture(scope="module")
def alice(served):
    return Client(served, auth=("alice", "alice-pw"), verbose=False)


@pytest.fixture(scope="module")
def bob(served):
    return Client(served, auth=("bob", "bob-pw"), verbose=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, variant in enumerate(astronaut_photos()):
        path = folder / f"me-{i}.jpg"
        variant.save(path, quality=92)
        paths.append(handle_file(str(path)))
    return paths


def new_tune(client, photos, title: str, **fields):
    return client.predict(photos=photos, title=title, name="woman", api_name="/create_tune", **fields)


def test_every_user_action_has_a_named_endpoint_and_admin_ones_are_not_public(alice):
    named = {name.lstrip("/") for name in alice.view_api(print_info=False, return_format="dict")["named_endpoints"]}
    assert named >= NAMED
    assert not any("admin" in name or "grant" in name or "expire" in name for name in named)


def test_create_tune_trains_and_runs_its_styles(alice, photos):
    tune = new_tune(alice, photos, "Styled", styles=["corporate-headshots/woman/0", "fantasy/woman/1"])
    assert tune["status"] in ("queued", "training", "trained") and tune["created"] is True and tune["name"] == "woman"
    assert [r["usable"] for r in tune["photo_report"]] == [True] * 4
    trained = wait_for(
        lambda: alice.predict(tune_id=tune["id"], api_name="/get_tune"), lambda t: t["status"] == "trained"
    )
    assert trained["status"] == "trained" and trained["progress"] == 1.0
    prompts = wait_for(
        lambda: alice.predict(tune_id=tune["id"], api_name="/list_prompts"),
        lambda ps: ps and all(p["status"] == "done" for p in ps),
    )
    assert len(prompts) == 2 and all(p["pack_id"] in ("corporate-headshots", "fantasy") for p in prompts)
    assert all("sks woman" in p["rendered_text"] for p in prompts)


def test_a_second_create_with_the_same_title_returns_the_first_tune(alice, photos):
    first = new_tune(alice, photos, "Same title")
    again = new_tune(alice, photos, "Same title")
    assert again["id"] == first["id"] and again["created"] is False


def test_prompt_images_come_back_with_seeds_and_can_be_liked(alice, photos):
    tune = new_tune(alice, photos, "For prompts")
    wait_for(lambda: alice.predict(tune_id=tune["id"], api_name="/get_tune"), lambda t: t["status"] == "trained")
    prompt = alice.predict(
        tune_id=tune["id"], text="{{subject}} as a pilot", num_images=2, seed=7, api_name="/create_prompt"
    )
    assert prompt["rendered_text"] == "sks woman as a pilot"
    done = wait_for(
        lambda: alice.predict(prompt_id=prompt["id"], api_name="/get_prompt")[0], lambda p: p["status"] == "done"
    )
    record, gallery = alice.predict(prompt_id=prompt["id"], api_name="/get_prompt")
    assert done["status"] == "done"
    assert [item["caption"] for item in gallery] == ["seed 7", "seed 8"]
    assert Image.open(gallery[0]["image"]).size == (512, 512)  # the fast branch's placeholders, downloaded
    liked = alice.predict(image_id=record["images"][0]["id"], api_name="/like")
    assert liked["liked"] is True
    unliked = alice.predict(image_id=record["images"][0]["id"], liked=False, api_name="/like")
    assert unliked["liked"] is False


def test_a_second_user_sees_and_touches_nothing_of_the_first(alice, bob, photos):
    tune = new_tune(alice, photos, "Private")
    wait_for(lambda: alice.predict(tune_id=tune["id"], api_name="/get_tune"), lambda t: t["status"] == "trained")
    prompt = alice.predict(tune_id=tune["id"], text="{{subject}}", num_images=1, api_name="/create_prompt")
    record = wait_for(lambda: alice.predict(prompt_id=prompt["id"], api_name="/get_prompt")[0], lambda p: p["images"])
    image_id = record["images"][0]["id"]

    assert all(t["id"] != tune["id"] for t in bob.predict(api_name="/list_tunes"))
    assert all(p["id"] != prompt["id"] for p in bob.predict(api_name="/list_prompts"))
    attempts = [
        {"tune_id": tune["id"], "api_name": "/get_tune"},
        {"tune_id": tune["id"], "api_name": "/cancel_tune"},
        {"tune_id": tune["id"], "api_name": "/delete_tune"},
        {"tune_id": tune["id"], "text": "{{subject}}", "api_name": "/create_prompt"},
        {"prompt_id": prompt["id"], "api_name": "/get_prompt"},
        {"prompt_id": prompt["id"], "api_name": "/delete_prompt"},
        {"image_id": image_id, "api_name": "/like"},
        {"pack_id": "fantasy", "tune_ids": [tune["id"]], "api_name": "/create_tune_from_pack"},
    ]
    for attempt in attempts:
        with pytest.raises(Exception, match="not found"):
            bob.predict(**attempt)
    # and alice's records are untouched
    assert alice.predict(tune_id=tune["id"], api_name="/get_tune")["status"] == "trained"
    assert alice.predict(prompt_id=prompt["id"], api_name="/get_prompt")[0]["images"][0]["liked"] is False


def test_nobody_gets_in_without_signing_in(served):
    with pytest.raises(Exception):  # noqa: B017 (gradio_client raises its own error types for a login wall)
        Client(served, verbose=False).predict(api_name="/list_tunes")


def test_packs_list_and_a_tune_from_a_pack_queues_every_prompt_of_its_class(alice, photos):
    packs = alice.predict(class_name="cat", api_name="/list_packs")
    assert [p["id"] for p in packs] == ["pets-in-costumes"]
    pack = next(p for p in alice.predict(api_name="/list_packs") if p["id"] == "corporate-headshots")
    [tune] = alice.predict(
        photos=photos,
        pack_id="corporate-headshots",
        title="From pack",
        name="man",
        branch="fast",
        api_name="/create_tune_from_pack",
    )
    prompts = wait_for(
        lambda: alice.predict(tune_id=tune["id"], limit=100, api_name="/list_prompts"),
        lambda ps: ps and all(p["status"] == "done" for p in ps),
    )
    assert all(p["status"] == "done" for p in prompts), [p["error"] for p in prompts]
    assert len(prompts) == len(pack["prompts"]["man"])
    assert sum(p["num_images"] for p in prompts) == pack["images_per_class"]["man"]


def test_delete_tune_removes_it(alice, photos):
    tune = new_tune(alice, photos, "To delete")
    wait_for(lambda: alice.predict(tune_id=tune["id"], api_name="/get_tune"), lambda t: t["status"] == "trained")
    assert alice.predict(tune_id=tune["id"], api_name="/delete_tune") == {"id": tune["id"], "deleted": True}
    with pytest.raises(Exception, match="not found"):
        alice.predict(tune_id=tune["id"], api_name="/get_tune")


def test_bad_input_gets_a_message_naming_the_field_and_nothing_is_created(alice, photos, tmp_path):
    before = len(alice.predict(limit=100, api_name="/list_tunes"))
    with pytest.raises(Exception, match="between 4 and 30 photos"):
        new_tune(alice, photos[:2], "Too few")
    with pytest.raises(Exception, match="branch"):
        new_tune(alice, photos, "Bad branch", branch="sd99")
    with pytest.raises(Exception, match="scheduler"):
        alice.predict(tune_id=1, text="x", scheduler="warp", api_name="/create_prompt")
    with pytest.raises(Exception, match="styles"):
        new_tune(alice, photos, "Bad style", styles=["no-such-pack/woman/0"])
    big = tmp_path / "huge.png"  # over the server's limit (2 MB here): refused by the server, not the widget
    Image.effect_noise((1400, 1400), 120).convert("RGB").save(big)
    with pytest.raises(Exception):  # noqa: B017 (Gradio refuses the upload itself: 413)
        new_tune(alice, [*photos, handle_file(str(big))], "Too big")
    assert len(alice.predict(limit=100, api_name="/list_tunes")) == before


def test_check_photos_reports_each_photo_before_training(alice, photos):
    report = alice.predict(photos=photos, name="woman", api_name="/check_photos")
    assert [r["name"] for r in report] == ["me-0.jpg", "me-1.jpg", "me-2.jpg", "me-3.jpg"]
    assert all(r["faces"] == 1 and r["usable"] for r in report)


def test_tiny_branch_trains_and_generates_real_images(alice, photos):
    tune = new_tune(alice, photos, "Tiny", branch="tiny", steps=3)
    trained = wait_for(
        lambda: alice.predict(tune_id=tune["id"], api_name="/get_tune"),
        lambda t: t["status"] in ("trained", "failed"),
        timeout=280,
    )
    assert trained["status"] == "trained", trained["error"]
    prompt = alice.predict(
        tune_id=tune["id"], text="{{subject}}", num_images=1, seed=3, steps=2, api_name="/create_prompt"
    )
    record = wait_for(
        lambda: alice.predict(prompt_id=prompt["id"], api_name="/get_prompt")[0],
        lambda p: p["status"] in ("done", "failed"),
        timeout=280,
    )
    assert record["status"] == "done", record["error"]
    _, gallery = alice.predict(prompt_id=prompt["id"], api_name="/get_prompt")
    assert Image.open(gallery[0]["image"]).size == (128, 128)


def test_the_readme_lists_every_named_endpoint(alice):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    named = {name.lstrip("/") for name in alice.view_api(print_info=False, return_format="dict")["named_endpoints"]}
    assert {name for name in named if f"`{name}`" not in readme} == set()


def test_a_visitor_who_has_not_signed_in_lands_on_the_showcase(tmp_path, monkeypatch):
    """On a Space with Hugging Face sign-in the app is open to visitors: they land on the public avatars."""
    # Gradio's sign-in button needs the Hub's OAuth (a Space, or a logged-in machine): a plain button stands in
    monkeypatch.setattr(gr, "LoginButton", lambda **options: gr.Button("Sign in with Hugging Face", **options))
    settings = Settings(data_dir=tmp_path / "data", device="cpu", oauth_client_id="abc")
    runtime = open_runtime(settings, start_worker=False)
    try:
        app = build_app(UIContext(runtime.studio, settings), Operations(runtime.studio, runtime.store))
        [roles] = [fn for fn in app.fns.values() if getattr(fn.fn, "__name__", "") == "roles"]
        *_, landing = roles.fn(SimpleNamespace(username=None, session={}))
        assert isinstance(landing, gr.Tabs) and landing.selected == "showcase"
        signed_in = SimpleNamespace(username=None, session={"oauth_info": {"userinfo": {"preferred_username": "ann"}}})
        *_, stays = roles.fn(signed_in)
        assert not isinstance(stays, gr.Tabs) and "selected" not in stays
    finally:
        runtime.close()
