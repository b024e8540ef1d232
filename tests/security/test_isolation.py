"""Bob against alice's records, through every interface: he reads nothing and changes nothing.

REST (every route, signed links he holds or tampers with), the named Gradio API (every endpoint), the UI's
private events (not callable by gradio_client; over plain HTTP they act as the caller), the admin and pack
editor endpoints (refused with a permission message), Gradio's file route (never serves the data folder)
and the service itself. After every test alice's tunes, prompts, images, likes, credits, API keys, packs
and files are exactly as they were, and the server still answers.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import pytest
import yaml
from gradio.utils import get_upload_folder
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from admin.operations import TABLES
from rest.security import UrlSigner
from studio.errors import NotFoundError
from studio.requests import PromptCreate
from tests.conftest import astronaut_photos, wait_for
from tests.security.conftest import Served, call_raw, stored_files

TITLE = "Alice's private tune"
PACK = "fantasy"


@dataclass(frozen=True)
class Records:
    """Alice's tune, prompt and images (and bob's own tune and image, for mixed-up requests)."""

    tune: int
    prompt: int
    images: tuple[int, ...]
    links: tuple[str, ...]  # the signed image links alice got from REST
    key_id: int  # alice's API key's id
    bob_tune: int
    bob_image: int
    bob_link: str


def jpeg_files() -> list[tuple[str, tuple[str, bytes, str]]]:
    files = []
    for i, photo in enumerate(astronaut_photos()):
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        files.append(("tune[images][]", (f"me-{i}.jpg", buffer.getvalue(), "image/jpeg")))
    return files


def trained_with_images(client: httpx.Client, title: str) -> tuple[dict, dict]:
    """A trained tune (fast branch) with one finished two-image prompt, made through REST."""
    created = client.post("/tunes", data={"tune[title]": title, "tune[name]": "woman"}, files=jpeg_files())
    assert created.status_code == 201, created.text
    tune_id = created.json()["id"]
    prompt = client.post(f"/tunes/{tune_id}/prompts", json={"prompt": {"text": "{{subject}}", "num_images": 2}})
    assert prompt.status_code == 201, prompt.text
    done = wait_for(
        lambda: client.get(f"/tunes/{tune_id}/prompts/{prompt.json()['id']}").json(), lambda p: p["status"] == "done"
    )
    assert done["status"] == "done" and len(done["images"]) == 2, done
    return client.get(f"/tunes/{tune_id}").json(), done


def image_id(link: str) -> int:
    return int(urlsplit(link).path.rsplit("/", 1)[1])


@pytest.fixture(scope="module")
def rest(served: Served):
    with served.rest("alice") as alice, served.rest("bob") as bob:
        yield {"alice": alice, "bob": bob}


@pytest.fixture(scope="module")
def records(served: Served, rest) -> Records:
    tune, prompt = trained_with_images(rest["alice"], TITLE)
    bob_tune, bob_prompt = trained_with_images(rest["bob"], "Bob's own")
    [key] = served.studio.list_api_keys("alice")
    return Records(
        tune=tune["id"],
        prompt=prompt["id"],
        images=tuple(image_id(link) for link in prompt["images"]),
        links=tuple(prompt["images"]),
        key_id=key["id"],
        bob_tune=bob_tune["id"],
        bob_image=image_id(bob_prompt["images"][0]),
        bob_link=bob_prompt["images"][0],
    )


@pytest.fixture(scope="module")
def bob_gradio(served: Served):
    return served.gradio("bob")


def snapshot(served: Served) -> dict[str, Any]:
    """Everything of alice's that bob could read or change, and every file in the data folder but the DB's."""
    studio, data_dir = served.studio, served.settings.data_dir
    return {
        "tunes": [t.to_dict() for t in studio.list_tunes("alice", limit=100)],
        "prompts": [p.to_dict() for p in studio.list_prompts("alice", limit=100)],
        "credits": studio.credits("alice"),
        "keys": studio.list_api_keys("alice"),
        "packs": [
            (p.to_file_data(), studio.pack_editor.versions(p.id)) for p in studio.packs.list(include_unpublished=True)
        ],
        "files": {f for f in stored_files(data_dir) if not f.startswith("tunes.db")},
    }


@pytest.fixture(autouse=True)
def alice_unchanged(served: Served, records: Records):
    before = snapshot(served)
    yield
    after = snapshot(served)
    assert after["tunes"] == before["tunes"] and after["prompts"] == before["prompts"]
    assert after["credits"] == before["credits"] and after["keys"] == before["keys"]
    assert after["packs"] == before["packs"]
    assert before["files"] <= after["files"], "a file of the data folder was deleted"  # bob may add his own
    served.still_answers()


# -- REST ------------------------------------------------------------------------------------------


def bob_rest_attempts(r: Records) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body) for every REST route, aimed at alice's records."""
    return [
        ("GET", f"/tunes/{r.tune}", None),
        ("DELETE", f"/tunes/{r.tune}", None),
        ("GET", f"/tunes/{r.tune}/prompts", None),
        ("POST", f"/tunes/{r.tune}/prompts", {"prompt": {"text": "{{subject}}"}}),
        ("GET", f"/tunes/{r.tune}/prompts/{r.prompt}", None),
        ("DELETE", f"/tunes/{r.tune}/prompts/{r.prompt}", None),
        ("GET", f"/tunes/{r.bob_tune}/prompts/{r.prompt}", None),  # his tune, her prompt
        ("DELETE", f"/tunes/{r.bob_tune}/prompts/{r.prompt}", None),
        ("POST", f"/prompts/{r.prompt}/likes", None),
        ("DELETE", f"/prompts/{r.prompt}/likes", None),
        ("GET", f"/images/{r.images[0]}", None),
        ("GET", f"/tunes/{r.tune}/ckpt", None),
        ("POST", f"/p/{PACK}/tunes", {"tune": {"tune_ids": [r.tune]}}),
        ("POST", f"/p/{PACK}/tunes", {"tune": {"tune_ids": [r.bob_tune, r.tune]}}),  # one of his, one of hers
        ("POST", f"/tunes/{r.bob_tune}/prompts", {"prompt": {"text": f"<lora:{r.tune}:0.5> {{{{subject}}}}"}}),
        (
            "POST",
            "/tunes",
            {"tune": {"title": "Borrowing", "name": "woman", "prompts_attributes": [{"text": f"<lora:{r.tune}> x"}]}},
        ),
    ]


REST_ATTEMPTS = 16


def test_bob_gets_404_on_every_rest_route(rest, records: Records):
    attempts = bob_rest_attempts(records)
    assert len(attempts) == REST_ATTEMPTS
    for method, path, body in attempts:
        response = rest["bob"].request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.status_code, response.text[:200])
        assert "alice" not in response.text and TITLE not in response.text


def test_bob_lists_see_none_of_alices_records(rest, records: Records):
    tunes = rest["bob"].get("/tunes", params={"limit": 100}).json()
    prompts = rest["bob"].get("/prompts", params={"limit": 100}).json()
    assert [t["id"] for t in tunes] == [records.bob_tune]
    assert records.prompt not in {p["id"] for p in prompts} and all(p["tune_id"] == records.bob_tune for p in prompts)


def test_the_same_title_gives_bob_his_own_tune(served: Served, rest, records: Records):
    response = rest["bob"].post("/tunes", data={"tune[title]": TITLE, "tune[name]": "man"}, files=jpeg_files())
    assert response.status_code == 201 and response.json()["id"] != records.tune
    assert served.studio.get_tune("bob", response.json()["id"]).owner == "bob"
    assert rest["bob"].delete(f"/tunes/{response.json()['id']}").status_code == 204  # his to delete


def test_a_signed_link_works_for_whoever_holds_it(records: Records, rest):
    """By design: a link alice shares (an <img src>) works without a key, and with bob's."""
    for response in (httpx.get(records.links[0]), rest["bob"].get(records.links[0])):
        assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (512, 512)


def _with(link: str, *, path: str | None = None, **changes: str | None) -> str:
    parts = urlsplit(link)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    query = {name: value for name, value in (query | changes).items() if value is not None}
    return f"{parts.scheme}://{parts.netloc}{path or parts.path}?{urlencode(query)}"


def tampered_links(served: Served, r: Records) -> dict[str, str]:
    link, query = r.links[0], parse_qs(urlsplit(r.links[0]).query)
    expires, signature = query["exp"][0], query["sig"][0]
    bob_signature = parse_qs(urlsplit(r.bob_link).query)["sig"][0]
    expired_signer = UrlSigner(served.settings.data_dir, clock=lambda: 1_000_000.0)  # the real secret, long ago
    return {
        "another of her ids": _with(link, path=f"/images/{r.images[1]}"),
        "her ckpt with an image signature": _with(link, path=f"/tunes/{r.tune}/ckpt"),
        "owner changed to bob": _with(link, u="bob"),
        "owner with a trailing NUL": _with(link, u="alice\x00"),
        "expiry extended": _with(link, exp=str(int(expires) + 86_400)),
        "expiry not a number": _with(link, exp=expires + "e3"),
        "signature dropped": _with(link, sig=None),
        "signature cut short": _with(link, sig=signature[:-1]),
        "signature in capitals": _with(link, sig=signature.upper()),
        "bob's signature on her image": _with(r.bob_link, path=f"/images/{r.images[0]}"),
        "bob's signature, her name": _with(r.bob_link, path=f"/images/{r.images[0]}", u="alice"),
        "signed long ago": expired_signer.sign(served.url, f"/images/{r.images[0]}", "alice", r.key_id),
        "another key of hers": _with(link, k=str(r.key_id + 1000)),
        "bob's signature, her id, his name": _with(link, path=f"/images/{r.images[0]}", u="bob", sig=bob_signature),
    }


def test_a_tampered_link_opens_nothing(served: Served, rest, records: Records):
    links = tampered_links(served, records)
    for why, link in links.items():
        anonymous = httpx.get(link)
        assert anonymous.status_code == 401, (why, anonymous.status_code)
        with_bobs_key = rest["bob"].get(link)
        assert with_bobs_key.status_code == 404, (why, with_bobs_key.status_code)
        assert not with_bobs_key.content.startswith(b"\x89PNG")


def test_odd_paths_never_reach_a_file(served: Served, rest):
    for path in ["/images/..%2F..%2Ftunes.db", "/images/1%20OR%201=1", "/images/-1", f"/images/{2**63}", "/tunes.db"]:
        response = rest["bob"].get(path)
        assert response.status_code in (404, 422), (path, response.status_code)
        assert b"SQLite format" not in response.content


# -- the Gradio API ------------------------------------------------------------------------------


def bob_gradio_attempts(r: Records) -> dict[str, dict[str, Any]]:
    """Every named endpoint that takes a record, aimed at alice's (each must answer "not found")."""
    return {
        "get_tune": {"tune_id": r.tune},
        "cancel_tune": {"tune_id": r.tune},
        "delete_tune": {"tune_id": r.tune},
        "create_prompt": {"tune_id": r.tune, "text": "{{subject}}"},
        "create_prompt with her tune as a tag": {"tune_id": r.bob_tune, "text": f"<lora:{r.tune}:0.5> x"},
        "list_prompts": {"tune_id": r.tune},
        "get_prompt": {"prompt_id": r.prompt},
        "delete_prompt": {"prompt_id": r.prompt},
        "like": {"image_id": r.images[0]},
        "like (unlike)": {"image_id": r.images[0], "liked": False},
        "create_tune_from_pack": {"pack_id": PACK, "tune_ids": [r.tune]},
    }


GRADIO_ATTEMPTS = 11


def test_bob_gets_not_found_from_every_named_endpoint(bob_gradio, records: Records):
    attempts = bob_gradio_attempts(records)
    assert len(attempts) == GRADIO_ATTEMPTS
    for name, arguments in attempts.items():
        with pytest.raises(AppError, match="was not found") as refused:
            bob_gradio.predict(**arguments, api_name="/" + name.split()[0])
        assert "alice" not in str(refused.value), name


def test_bob_gradio_lists_see_none_of_alices_records(bob_gradio, records: Records):
    assert [t["id"] for t in bob_gradio.predict(limit=100, api_name="/list_tunes")] == [records.bob_tune]
    prompts = bob_gradio.predict(limit=100, api_name="/list_prompts")
    assert prompts and all(p["tune_id"] == records.bob_tune for p in prompts)


def test_the_same_title_gives_bob_his_own_tune_through_gradio(bob_gradio, records: Records, tmp_path):
    photos = []
    for i, photo in enumerate(astronaut_photos()):
        photo.save(tmp_path / f"me-{i}.jpg", quality=90)
        photos.append(handle_file(str(tmp_path / f"me-{i}.jpg")))
    tune = bob_gradio.predict(photos=photos, title=TITLE, name="man", api_name="/create_tune")
    assert tune["created"] is True and tune["id"] != records.tune and tune["owner"] == "bob"
    assert bob_gradio.predict(tune_id=tune["id"], api_name="/delete_tune")["deleted"] is True  # his to delete


def file_data(path: Path) -> dict[str, Any]:
    """A file as Gradio's HTTP API passes one: by a server path (normally one its upload route returned)."""
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def server_files(served: Served, r: Records) -> dict[str, Path]:
    data_dir = served.settings.data_dir
    return {
        "her image": served.studio.image_file("alice", r.images[0]),
        "her photo": data_dir / "photos" / str(r.tune) / "00.png",
        "the database": data_dir / "tunes.db",
        "the link secret": data_dir / "url-secret",
    }


def tune_inputs(photos: list[dict]) -> list[Any]:
    """/create_tune's inputs: photos, title, name, branch, steps, token, face_crop, characteristics,
    callback, prompts_callback, auto_extend, styles."""
    return [photos, "Stolen", "woman", "", 0, "", True, {}, "", "", False, []]


# the Create tab's inputs after photos and title: class, branch, steps, token, face crop, characteristics, pack,
# styles, pivotal tuning, visibility
CREATE_TAB_REST = ["woman", "fast", 0, "", True, "", "(no pack)", [], False, "private"]
# the endpoints and UI events that take photos, with their other inputs
PHOTO_INPUTS = {
    "check_photos": lambda photos: [photos, "woman"],
    "create_tune": tune_inputs,
    "create_tune_from_pack": lambda photos: [PACK, [], *tune_inputs(photos)],
    "photos_changed": lambda photos: [photos, "woman"],  # the Create tab's preview (a private event)
    "create_tune_1": lambda photos: [photos, "Stolen", *CREATE_TAB_REST],
}


@pytest.mark.parametrize("endpoint", list(PHOTO_INPUTS))
def test_server_paths_cannot_be_passed_as_uploads(served: Served, records: Records, endpoint: str):
    """A client names files only by uploading them: a path of alice's image or of the database is refused
    (Gradio checks this only in apps it launched itself; this one is mounted into FastAPI)."""
    with served.browser("bob") as session:
        for why, target in server_files(served, records).items():
            kind, answer = call_raw(session, endpoint, PHOTO_INPUTS[endpoint]([file_data(target)] * 4))
            assert kind == "refused" and answer.startswith("403 ") and "was not uploaded" in answer, (why, answer)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/vnd.api+json", "application/json; x=1"])
def test_server_paths_are_refused_whatever_the_body_claims_to_be(served: Served, records: Records, content_type):
    body = json.dumps({"data": [[file_data(served.studio.image_file("alice", records.images[0]))] * 4, "woman"]})
    headers = {"content-type": content_type} if content_type else {}
    with served.browser("bob") as session:
        session.headers.pop("content-type", None)
        for route in ("gradio_api/call/check_photos", "gradio_api/queue/join", "gradio_api/run/check_photos"):
            response = session.post(route, content=body.encode(), headers=headers)
            assert response.status_code == 403 and "was not uploaded" in response.text, (route, response.text[:200])


# -- the UI's own events ---------------------------------------------------------------------------

PRIVATE = ["/cancel_tune_1", "/delete_tune_1", "/revoke_key", "/toggle_like", "/generate", "/create_key"]


@pytest.mark.parametrize("api_name", PRIVATE)
def test_gradio_client_cannot_call_the_uis_private_events(bob_gradio, api_name: str):
    with pytest.raises(ValueError, match="Cannot find a function"):
        bob_gradio.predict(1, api_name=api_name)


def test_the_uis_events_over_plain_http_act_as_the_caller(served: Served, records: Records):
    """The browser calls private events by name over HTTP, so anyone signed in can: they must act as bob."""
    with served.browser("bob") as session:
        kind, answer = call_raw(session, "revoke_key", [records.key_id])
        assert kind == "error" and f"api key {records.key_id} was not found" in answer
        # the tune these follow is per browser session on the server (a gr.State): a sent id is ignored
        for name in ("cancel_tune_1", "delete_tune_1", "refresh"):
            kind, answer = call_raw(session, name, [records.tune])
            assert kind in ("complete", "error") and "alice" not in str(answer) and TITLE not in str(answer)
        inputs = [records.tune, "{{subject}}", "", 1, -1, "1:1", 30, 7, "dpm++2m_karras", False, False, False, ""]
        kind, answer = call_raw(session, "generate", inputs)
        assert kind in ("complete", "error") and TITLE not in str(answer)
    with served.rest("alice") as alice:  # her key still works
        assert alice.get("/tunes").status_code == 200


# -- admin and pack editor endpoints ---------------------------------------------------------------


def admin_attempts(r: Records) -> dict[str, tuple]:
    return {
        "/admin_refresh": ("week", "all", 7),
        "/admin_cancel": ("tune", r.tune),
        "/admin_retry": ("tune", r.tune),
        "/admin_extend": ("tune", r.tune, 365),
        "/admin_expire_now": ("tune", r.tune),
        "/admin_delete": ("tune", r.tune, True),
        "/admin_grant_credits": ("bob", 1000, 1000),
        "/admin_set_credits": ("alice", 0, 0),
        "/admin_block_image": (1,),
        "/admin_unblock_image": (1,),
        **{f"/admin_export_{name}": ("week", "all", 7) for name in TABLES},
    }


def test_admin_endpoints_refuse_bob(bob_gradio, served: Served, records: Records):
    for api_name, arguments in admin_attempts(records).items():
        with pytest.raises(AppError, match="'bob' is not an admin"):
            bob_gradio.predict(*arguments, api_name=api_name)
    notice, *tables = bob_gradio.predict(api_name="/admin_show")
    assert notice["visible"] is True and all("data" not in table for table in tables)
    assert served.studio.credits("bob") == (None, None)


def editor_attempts() -> dict[str, tuple]:
    pack_text = yaml.safe_dump({"id": "bobs-pack", "title": "Mine"})
    return {
        "/pack_editor_choices": (PACK,),
        "/pack_editor_open": (PACK,),
        "/pack_editor_template": (),
        "/pack_editor_save": (PACK, pack_text),
        "/pack_editor_create": (pack_text,),
        "/pack_editor_publish": (PACK,),
        "/pack_editor_unpublish": (PACK,),
        "/pack_editor_duplicate": (PACK, "bobs-copy", "Bob's copy"),
        "/pack_editor_revert": (PACK, 1),
        "/pack_editor_preview": (PACK, "woman", 0),
    }


def test_pack_editor_endpoints_refuse_bob(bob_gradio, served: Served):
    for api_name, arguments in editor_attempts().items():
        with pytest.raises(AppError, match="'bob' may not edit packs"):
            bob_gradio.predict(*arguments, api_name=api_name)
    assert not (served.settings.data_dir / "packs").exists() or not stored_files(served.settings.data_dir / "packs")


# -- files on disk -----------------------------------------------------------------------------------


def file_targets(served: Served, r: Records) -> dict[str, str]:
    data_dir = served.settings.data_dir
    image = served.studio.image_file("alice", r.images[0])
    return {
        "her image": str(image),
        "the database": str(data_dir / "tunes.db"),
        "the link secret": str(data_dir / "url-secret"),
        "her photo": str(data_dir / "photos" / str(r.tune) / "00.png"),
        "the database, relative": os.path.relpath(data_dir / "tunes.db"),
        "the database, through the cache": f"{get_upload_folder()}/../..{data_dir / 'tunes.db'}",
        "the database, encoded": quote(str(data_dir / "tunes.db"), safe=""),
        "the system": "/etc/passwd",
    }


def test_gradio_file_route_serves_nothing_from_the_data_folder(served: Served, records: Records):
    targets = file_targets(served, records)
    with served.browser("bob") as bob, served.browser("alice") as alice:
        for why, target in targets.items():
            for session, expected in ((bob, (403, 404)), (alice, (403, 404)), (httpx, (401, 403, 404))):
                response = session.get(f"{served.url}gradio_api/file={target}")
                assert response.status_code in expected, (why, response.status_code)
                assert b"SQLite format" not in response.content and not response.content.startswith(b"\x89PNG")


# -- the service ----------------------------------------------------------------------------------


def test_the_service_refuses_bob_everything_of_alices(served: Served, records: Records):
    studio, r = served.studio, records
    attempts = {
        "get_tune": lambda: studio.get_tune("bob", r.tune),
        "cancel_tune": lambda: studio.cancel_tune("bob", r.tune),
        "delete_tune": lambda: studio.delete_tune("bob", r.tune, delete_images=True),
        "create_prompt": lambda: studio.create_prompt("bob", r.tune, PromptCreate(text="x")),
        "list_prompts": lambda: studio.list_prompts("bob", tune_id=r.tune),
        "get_prompt": lambda: studio.get_prompt("bob", r.prompt),
        "get_prompt via his tune": lambda: studio.get_prompt("bob", r.prompt, tune_id=r.bob_tune),
        "delete_prompt": lambda: studio.delete_prompt("bob", r.prompt),
        "like_image": lambda: studio.like_image("bob", r.images[0]),
        "unlike_image": lambda: studio.unlike_image("bob", r.images[0]),
        "like_prompt": lambda: studio.like_prompt("bob", r.prompt),
        "image_file": lambda: studio.image_file("bob", r.images[0]),
        "create_tune_from_pack": lambda: studio.create_tune_from_pack("bob", PACK, None, tune_ids=[r.tune]),
        "preview_pack_prompt": lambda: studio.preview_pack_prompt(PACK, "woman", 0, owner="bob", tune_id=r.tune),
        "revoke_api_key": lambda: studio.revoke_api_key("bob", r.key_id),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
        except NotFoundError:
            continue
        pytest.fail(f"{name}: bob was not told 'not found'")
