"""Bracketed fields, the rate limiter and signed links, and a 429 from the running server."""

from __future__ import annotations

import io
from dataclasses import replace

import httpx
import pytest

from pipelines.errors import ValidationError
from pipelines.settings import Settings
from rest.forms import nest_fields
from rest.security import UrlSigner, bearer_key
from storage.db import Database
from studio.limits import RateLimiter
from studio.service import Studio
from tests.conftest import astronaut_photos, served_app, wait_for


def test_bracketed_fields_nest_like_rails():
    pairs = [
        ("tune[title]", "Me"),
        ("tune[images][]", "a.jpg"),
        ("tune[images][]", "b.jpg"),
        ("tune[characteristics][eye_color]", "green"),
        ("tune[prompts_attributes][][text]", "one"),
        ("tune[prompts_attributes][][num_images]", "2"),
        ("tune[prompts_attributes][][text]", "two"),
        ("tune[prompt_attributes][callback]", "https://example.com/hook"),
    ]
    assert nest_fields(pairs) == {
        "tune": {
            "title": "Me",
            "images": ["a.jpg", "b.jpg"],
            "characteristics": {"eye_color": "green"},
            "prompts_attributes": [{"text": "one", "num_images": "2"}, {"text": "two"}],
            "prompt_attributes": {"callback": "https://example.com/hook"},
        }
    }


@pytest.mark.parametrize("key", ["tune[title", "tune]x[", "[a]", "a[b][c][d][e][f][g]"])
def test_malformed_field_names_are_refused_by_name(key):
    with pytest.raises(ValidationError) as caught:
        nest_fields([(key, "x")])
    assert caught.value.field == key


def test_the_rate_limit_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(60, burst=2, clock=lambda: now[0])
    assert limiter.allow("k") == 0 and limiter.allow("k") == 0
    assert limiter.allow("k") == pytest.approx(1.0)
    assert limiter.allow("other") == 0  # per key (the service keys it by user)
    now[0] += 1.0
    assert limiter.allow("k") == 0


def test_signed_links_expire_and_name_their_owner_and_key(tmp_path):
    now = [1000.0]
    signer = UrlSigner(tmp_path, clock=lambda: now[0])
    url = signer.sign("http://h/", "/images/5", "alice", 3)
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    assert query["k"] == "3" and signer.verify("/images/5", "alice", "3", query["exp"], query["sig"])
    assert not signer.verify("/images/6", "alice", "3", query["exp"], query["sig"])
    assert not signer.verify("/images/5", "bob", "3", query["exp"], query["sig"])
    assert not signer.verify("/images/5", "alice", "4", query["exp"], query["sig"])
    now[0] += 8 * 24 * 3600
    assert not signer.verify("/images/5", "alice", "3", query["exp"], query["sig"])
    assert (tmp_path / "url-secret").stat().st_mode & 0o777 == 0o600


def test_revoking_a_key_ends_the_links_made_with_it(tmp_path):
    settings = replace(Settings(data_dir=tmp_path / "data"), default_branch="fast")
    with served_app(settings) as url:
        studio = Studio(settings, Database(settings.data_dir / "tunes.db"))
        first, second = studio.create_api_key("alice"), studio.create_api_key("alice")
        photos = [("tune[images][]", (f"{i}.png", png(i), "image/png")) for i in range(4)]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {first}"}, timeout=60) as rest:
            tune = rest.post("/tunes", data={"tune[title]": "Links", "tune[name]": "woman"}, files=photos).json()
            prompt = rest.post(f"/tunes/{tune['id']}/prompts", json={"prompt": {"text": "x", "num_images": 1}}).json()
            done = wait_for(
                lambda: rest.get(f"/tunes/{tune['id']}/prompts/{prompt['id']}").json(),
                lambda p: p["status"] == "done",
                what="the prompt",
            )
        [link] = done["images"]
        assert httpx.get(link).status_code == 200  # no header: the link alone
        [first_id, _] = [row["id"] for row in studio.list_api_keys("alice")]
        studio.revoke_api_key("alice", first_id)
        assert httpx.get(link).status_code == 401  # signed for the revoked key: over
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {second}"}, timeout=60) as rest:
            again = rest.get(f"/tunes/{tune['id']}/prompts/{prompt['id']}").json()["images"][0]
        assert httpx.get(again).status_code == 200  # the other key's links work


def png(index: int) -> bytes:
    buffer = io.BytesIO()
    astronaut_photos()[index].save(buffer, format="PNG")
    return buffer.getvalue()


def test_only_bearer_keys_count():
    assert bearer_key("Bearer tsk_abc") == "tsk_abc"
    assert bearer_key("bearer  tsk_abc ") == "tsk_abc"
    assert bearer_key("Basic dXNlcg==") is None and bearer_key(None) is None and bearer_key("Bearer ") is None


def test_the_server_answers_429_with_retry_after_when_a_user_is_too_fast(tmp_path):
    settings = replace(Settings(data_dir=tmp_path / "data"), default_branch="fast", api_rate_per_minute=3)
    with served_app(settings) as url:
        key = Studio(settings, Database(settings.data_dir / "tunes.db")).create_api_key("alice")
        headers = {"Authorization": f"Bearer {key}"}
        codes = [httpx.get(f"{url}tunes", headers=headers).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = httpx.get(f"{url}tunes", headers=headers)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["error"]


def test_gradio_endpoints_take_files_only_from_uploads_never_server_paths(tmp_path):
    # `gr.mount_gradio_app` leaves Gradio's own check off; without the guard, naming a server path (another
    # user's image, the database) in a Gradio call would read that file for the caller
    settings = replace(Settings(data_dir=tmp_path / "data"), accounts=("bob:bob-pw",))
    with served_app(settings) as url, httpx.Client(base_url=url, timeout=30) as bob:
        assert bob.post("/login", data={"username": "bob", "password": "bob-pw"}).status_code in (200, 302, 303)
        secret = str(settings.data_dir / "tunes.db")
        for file in ({"path": secret, "meta": {"_type": "gradio.FileData"}}, {"path": secret}):
            response = bob.post("/gradio_api/call/check_photos", json={"data": [[file], "woman"]})
            assert response.status_code == 403 and "was not uploaded" in response.json()["error"]
        assert bob.post("/gradio_api/call/list_tunes", json={"data": [20, 0]}).status_code == 200
