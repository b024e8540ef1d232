"""REST error messages a person can act on: a missing field says so, a bad signed link says it is invalid or
expired and where a fresh one comes from (in process, over ASGI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from pipelines.settings import Settings
from rest.routes import build_rest_api
from rest.security import LINK_LIFETIME_S, UrlSigner
from storage.db import Database
from studio.service import Studio


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, str, Settings]]:
    settings = Settings(data_dir=tmp_path / "data", device="cpu", default_branch="fast")
    db = Database(settings.data_dir / "tunes.db")
    studio = Studio(settings, db)
    key = studio.create_api_key("alice")
    with TestClient(build_rest_api(studio)) as client:
        yield client, key, settings
    db.close()


def test_a_missing_title_is_named_without_echoing_the_body(api):
    client, key, _ = api
    answer = client.post(
        "/tunes", json={"tune": {"name": "woman", "branch": "fast"}}, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == "`title` is required (got nothing)"
    assert answer.json()["errors"] == {"title": ["is required"]}


def test_a_missing_prompt_text_inside_a_tune_is_named_too(api):
    client, key, _ = api
    body = {"tune": {"title": "Me", "name": "woman", "prompts_attributes": [{"num_images": 2}]}}
    answer = client.post("/tunes", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.json()["error"] == "`prompts_attributes[0].text` is required (got nothing)"


def test_a_wrong_value_still_shows_the_value(api):
    client, key, _ = api
    body = {"tune": {"title": "Me", "name": "woman", "steps": "many"}}
    answer = client.post("/tunes", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 422 and answer.json()["error"].startswith("`steps` ")
    assert answer.json()["error"].endswith("(got 'many')")


def test_a_body_without_its_object_says_nothing_was_sent(api):
    client, key, _ = api
    answer = client.post("/tunes", json={"title": "Me"}, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 422 and answer.json()["error"].endswith("(got nothing)")


def _link_parts(signer: UrlSigner, path: str) -> dict[str, str]:
    query = parse_qs(urlsplit(signer.sign("http://testserver", path, "alice", 1)).query)
    return {name: values[0] for name, values in query.items()}


def test_a_tampered_link_says_it_is_invalid_or_expired(api):
    client, _, settings = api
    parts = _link_parts(UrlSigner(settings.data_dir), "/images/1")
    tampered = ("1" if parts["sig"][0] == "0" else "0") + parts["sig"][1:]  # always a different signature
    answer = client.get("/images/1", params={**parts, "sig": tampered})
    assert answer.status_code == 401
    message = answer.json()["error"]
    assert "link is invalid or expired" in message and "GET /tunes/{tune_id}/prompts/{prompt_id}" in message
    assert "Authorization" not in message


def test_an_expired_link_says_so_and_where_a_fresh_one_comes_from(api):
    client, _, settings = api
    a_week_ago = UrlSigner(settings.data_dir, clock=lambda: 1_000_000 - LINK_LIFETIME_S - 1)
    parts = _link_parts(a_week_ago, "/tunes/3/ckpt")
    answer = client.get("/tunes/3/ckpt", params=parts)
    assert answer.status_code == 401
    assert "link is invalid or expired: GET /tunes/3 (its ckpt_url) returns a fresh one" in answer.json()["error"]


def test_no_link_and_no_key_still_asks_for_the_key(api):
    client, _, _ = api
    answer = client.get("/images/1")
    assert answer.status_code == 401 and "Authorization: Bearer" in answer.json()["error"]


def test_with_an_api_key_a_bad_link_falls_back_to_the_key(api):
    client, key, _ = api
    answer = client.get("/images/1", params={"sig": "x"}, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 404  # the key decides: alice has no image 1
