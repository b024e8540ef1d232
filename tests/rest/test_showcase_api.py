"""Visibility through REST and the Gradio API, and the public showcase pages (issue 20), on one served app: the
`visibility` field at creation and on change, hiding one avatar, the pages a signed-out visitor gets, and a public
link that 404s the moment the tune is private."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app import serving
from pipelines.settings import Settings
from studio.runtime import open_runtime
from tests.admin.test_operations import PHOTOS
from tests.conftest import astronaut_photos
from tests.studio.test_showcase import avatars

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("showcase-api") / "data",
        device="cpu",
        default_branch="fast",
        accounts=tuple(f"{user}:{password}" for user, password in PASSWORDS.items()),
        api_rate_per_minute=100_000,
    )
    runtime = open_runtime(settings, start_worker=False)
    keys = {user: runtime.studio.create_api_key(user) for user in PASSWORDS}
    try:
        with serving(runtime) as url:
            yield runtime.studio, url, keys
    finally:
        runtime.close()


def rest(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_rest_visibility_at_creation_and_on_change(served):
    studio, url, keys = served
    files = [("tune[images][]", (name, data, "image/jpeg")) for name, data in PHOTOS]
    with rest(url, keys["alice"]) as alice, rest(url, keys["bob"]) as bob:
        made = alice.post("/tunes", data={"tune[title]": "Shown", "tune[name]": "woman", "tune[visibility]": "public"},
                          files=files)  # fmt: skip
        assert made.status_code == 201 and made.json()["visibility"] == "public"
        tune_id = made.json()["id"]
        plain = alice.post("/tunes", data={"tune[title]": "Plain", "tune[name]": "man"}, files=files)
        assert plain.status_code == 201 and plain.json()["visibility"] == "private", "private unless asked"
        bad = alice.post("/tunes", data={"tune[title]": "Bad", "tune[name]": "woman", "tune[visibility]": "friends"},
                         files=files)  # fmt: skip
        assert bad.status_code == 422 and "visibility" in bad.text and "friends" in bad.text
        assert studio.db.tune_by_title("alice", "Bad") is None, "nothing half-made"
        changed = alice.patch(f"/tunes/{tune_id}", json={"tune": {"visibility": "private"}})
        assert changed.status_code == 200 and changed.json()["visibility"] == "private"
        assert alice.get(f"/tunes/{tune_id}").json()["visibility"] == "private"
        assert bob.patch(f"/tunes/{tune_id}", json={"tune": {"visibility": "public"}}).status_code == 404
        wrong = alice.patch(f"/tunes/{tune_id}", json={"tune": {"visibility": "everyone"}})
        assert wrong.status_code == 422 and "visibility" in wrong.text


def test_the_public_pages_and_links_follow_the_tune_and_the_image(served):
    studio, url, keys = served
    tune, images = avatars(studio, "alice", "On show", visibility="public")
    _, hidden_from_all = avatars(studio, "bob", "Bob's secret")
    with httpx.Client(base_url=url, timeout=60) as visitor, rest(url, keys["alice"]) as alice:
        page = visitor.get("/showcase")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "On show" in page.text and "Bob&#x27;s secret" not in page.text and "Bob's secret" not in page.text
        assert page.headers["cache-control"] == "no-store"
        links = [line.split('src="')[1].split('"')[0] for line in page.text.split("<img")[1:]]
        assert len(links) == len(images["sample"]) + len(images["prompt"])
        picture = visitor.get(links[0].replace("&amp;", "&"))
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        assert picture.content[:8] == b"\x89PNG\r\n\x1a\n"
        mine = visitor.get("/showcase/alice", params={"tune": tune.id, "kind": "sample"})
        assert mine.text.count("<img") == len(images["sample"])
        assert "must be one of pack, sample, prompt" in visitor.get("/showcase", params={"kind": "selfie"}).text
        assert visitor.get("/showcase/bob").text.count("<img") == 0

        first = images["prompt"][0]
        hide = alice.patch(f"/images/{first}", json={"image": {"hidden": True}})
        assert hide.status_code == 200 and hide.json()["hidden"] is True
        assert f'data-image="{first}"' not in visitor.get("/showcase").text
        alice.patch(f"/tunes/{tune.id}", json={"tune": {"visibility": "private"}})
        assert visitor.get("/showcase").text.count("<img") == 0
        assert visitor.get(links[0].replace("&amp;", "&")).status_code == 404, "the link died with the tune"
        assert visitor.get(f"/showcase/images/{hidden_from_all['sample'][0]}.png?v=0").status_code == 404


def test_gradio_api_visibility_and_hiding(served, tmp_path):
    studio, url, _ = served
    paths = []
    for index, photo in enumerate(astronaut_photos()):
        photo.save(tmp_path / f"{index}.jpg", quality=90)
        paths.append(handle_file(str(tmp_path / f"{index}.jpg")))
    alice = Client(url, auth=("alice", PASSWORDS["alice"]), verbose=False)
    bob = Client(url, auth=("bob", PASSWORDS["bob"]), verbose=False)
    made = alice.predict(photos=paths, title="Via Gradio", name="woman", visibility="public", api_name="/create_tune")
    assert made["visibility"] == "public"
    with pytest.raises(AppError, match=r"`visibility` must be private or public \(got 'friends'\)"):
        alice.predict(photos=paths, title="Nope", name="woman", visibility="friends", api_name="/create_tune")
    assert alice.predict(made["id"], "private", api_name="/set_visibility")["visibility"] == "private"
    with pytest.raises(AppError, match="not found"):
        bob.predict(made["id"], "public", api_name="/set_visibility")
    _, images = avatars(studio, "alice", "Hide one", visibility="public")
    assert alice.predict(images["prompt"][0], True, api_name="/hide_image")["hidden"] is True
    with pytest.raises(AppError, match="not found"):
        bob.predict(images["prompt"][0], False, api_name="/hide_image")
    assert images["prompt"][0] not in [item.image_id for item in studio.showcase.items(user="alice")]
