"""The REST API over real HTTP against the running server: every route, both body styles, auth and isolation."""

from __future__ import annotations

import io
from dataclasses import replace

import httpx
import pytest
from PIL import Image

from storage.db import Database
from studio.service import Studio
from tests.conftest import astronaut_photos, served_app, settings_with_tiny, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sd15_dir, tiny_flux_dir):
    settings = replace(
        settings_with_tiny(tmp_path_factory.mktemp("rest"), tiny_sd15_dir),
        default_branch="fast",
        api_rate_per_minute=600,
    )
    (settings.models_dir / "tiny-flux").symlink_to(tiny_flux_dir, target_is_directory=True)  # built once per session
    with served_app(settings) as url:
        keys = Studio(settings, Database(settings.data_dir / "tunes.db"))
        yield url, keys.create_api_key("alice"), keys.create_api_key("bob"), keys


@pytest.fixture(scope="module")
def alice(server):
    url, key, _, _ = server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def bob(server):
    url, _, key, _ = server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    out = []
    for photo in astronaut_photos():
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def upload(photos, field="tune[images][]"):
    return [(field, (f"me-{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]


def trained_tune(client, photos, title, **fields):
    data = {"tune[title]": title, "tune[name]": "woman", **fields}
    created = client.post("/tunes", data=data, files=upload(photos))
    assert created.status_code in (200, 201), created.text
    tune_id = created.json()["id"]
    # generous: a tiny training shares 2 cores with the server and the test client
    return wait_for(
        lambda: client.get(f"/tunes/{tune_id}").json(), lambda t: t["status"] in ("trained", "failed"), timeout=280
    )


def test_multipart_with_bracketed_fields_creates_a_tune_and_its_prompts(alice, photos):
    fields = {
        "tune[title]": "Multipart",
        "tune[name]": "woman",
        "tune[branch]": "fast",
        "tune[characteristics][eye_color]": "green eyes",
        "tune[prompts_attributes][][text]": "{{subject}} with {{eye_color}}",
        "tune[prompts_attributes][][num_images]": "2",
        "tune[prompt_attributes][callback]": "",
        "tune[model_type]": "lora",
        "tune[preset]": "flux-lora-portrait",
    }
    response = alice.post("/tunes", data=fields, files=upload(photos))
    assert response.status_code == 201, response.text
    tune = response.json()
    assert (tune["title"], tune["name"], tune["branch"], tune["model_type"]) == ("Multipart", "woman", "fast", "lora")
    assert tune["characteristics"] == {"eye_color": "green eyes"} and tune["preset"] == "flux-lora-portrait"
    assert tune["url"].endswith(f"/tunes/{tune['id']}") and tune["orig_images"] == [f"me-{i}.jpg" for i in range(4)]
    prompts = wait_for(
        lambda: alice.get(f"/tunes/{tune['id']}/prompts").json(), lambda ps: ps and ps[0]["status"] == "done"
    )
    assert prompts[0]["rendered_text"] == "sks woman with green eyes" and len(prompts[0]["images"]) == 2


def test_the_same_title_returns_the_existing_tune(alice, photos):
    first = alice.post("/tunes", data={"tune[title]": "Once", "tune[name]": "man"}, files=upload(photos))
    again = alice.post("/tunes", data={"tune[title]": "Once", "tune[name]": "man"}, files=upload(photos))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_json_and_url_encoded_bodies_create_prompts(alice, photos):
    tune = trained_tune(alice, photos, "Bodies")
    as_json = alice.post(
        f"/tunes/{tune['id']}/prompts",
        json={
            "prompt": {"text": "{{subject}} astronaut", "num_images": 2, "seed": 9, "ar": "4:5", "face_correct": True}
        },
    )
    assert as_json.status_code == 201, as_json.text
    assert as_json.json()["inpaint_faces"] is True and (as_json.json()["w"], as_json.json()["h"]) == (456, 576)
    as_form = alice.post(
        f"/tunes/{tune['id']}/prompts", data={"prompt[text]": "{{subject}} pilot", "prompt[num_images]": "1"}
    )
    assert as_form.status_code == 201 and as_form.json()["rendered_text"] == "sks woman pilot"
    done = wait_for(
        lambda: alice.get(f"/tunes/{tune['id']}/prompts/{as_json.json()['id']}").json(), lambda p: p["status"] == "done"
    )
    assert done["trained_at"] and len(done["images"]) == 2
    image = httpx.get(done["images"][0])  # a signed link: works without the key, e.g. in <img src>
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (456, 576)
    forged = done["images"][0].replace("sig=", "sig=0")
    assert httpx.get(forged).status_code == 401
    listed = alice.get("/prompts", params={"limit": 100}).json()
    assert {as_json.json()["id"], as_form.json()["id"]} <= {p["id"] for p in listed}


def test_likes_and_deletes(alice, photos):
    tune = trained_tune(alice, photos, "Likes")
    prompt = alice.post(
        f"/tunes/{tune['id']}/prompts", json={"prompt": {"text": "{{subject}}", "num_images": 1}}
    ).json()
    wait_for(lambda: alice.get(f"/tunes/{tune['id']}/prompts/{prompt['id']}").json(), lambda p: p["status"] == "done")
    assert alice.post(f"/prompts/{prompt['id']}/likes").json()["liked"] is True
    assert alice.delete(f"/prompts/{prompt['id']}/likes").json()["liked"] is False
    assert alice.delete(f"/tunes/{tune['id']}/prompts/{prompt['id']}").status_code == 204
    assert alice.get(f"/tunes/{tune['id']}/prompts/{prompt['id']}").status_code == 404
    assert alice.delete(f"/tunes/{tune['id']}").status_code == 204
    assert alice.get(f"/tunes/{tune['id']}").status_code == 404


def test_tunes_list_newest_first_with_limit_and_offset(alice, photos):
    for title in ("Page A", "Page B", "Page C"):
        alice.post("/tunes", data={"tune[title]": title, "tune[name]": "man"}, files=upload(photos))
    first_two = alice.get("/tunes", params={"limit": 2}).json()
    next_one = alice.get("/tunes", params={"limit": 1, "offset": 2}).json()
    assert [t["title"] for t in first_two] == ["Page C", "Page B"] and next_one[0]["title"] == "Page A"
    assert alice.get("/tunes", params={"limit": 0}).status_code == 422


def test_packs_and_a_tune_from_a_pack(alice, photos):
    packs = alice.get("/packs").json()
    assert len(packs) == 8 and all(p["costs"] for p in packs)
    assert [p["id"] for p in alice.get("/packs", params={"class": "dog"}).json()] == ["pets-in-costumes"]
    pack = alice.get("/p/corporate-headshots").json()
    response = alice.post(
        "/p/corporate-headshots/tunes",
        data={"tune[title]": "Pack", "tune[name]": "woman", "tune[branch]": "fast"},
        files=upload(photos),
    )
    assert response.status_code == 201, response.text
    prompts = wait_for(
        lambda: alice.get(f"/tunes/{response.json()['id']}/prompts", params={"limit": 100}).json(),
        lambda ps: len(ps) == len(pack["prompts"]["woman"]) and all(p["status"] == "done" for p in ps),
    )
    assert all(p["status"] == "done" for p in prompts), [p["error"] for p in prompts]
    assert sum(p["num_images"] for p in prompts) == pack["images_per_class"]["woman"]
    assert alice.get("/p/no-such-pack").status_code == 404


def test_missing_wrong_or_revoked_keys_get_401_as_json(server, alice):
    url, _, _, keys = server
    for headers in ({}, {"Authorization": "Bearer tsk_wrong"}, {"Authorization": "Basic abc"}):
        response = httpx.get(f"{url}tunes", headers=headers)
        assert response.status_code == 401 and "API key" in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer"
    key = keys.create_api_key("carol")
    assert httpx.get(f"{url}tunes", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    [row] = keys.list_api_keys("carol")
    keys.revoke_api_key("carol", row["id"])
    assert httpx.get(f"{url}tunes", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_another_owner_gets_404_on_every_route(alice, bob, photos):
    tune = trained_tune(alice, photos, "Alice only")
    prompt = alice.post(
        f"/tunes/{tune['id']}/prompts", json={"prompt": {"text": "{{subject}}", "num_images": 1}}
    ).json()
    done = wait_for(lambda: alice.get(f"/tunes/{tune['id']}/prompts/{prompt['id']}").json(), lambda p: p["images"])
    image_id = done["images"][0].split("/images/")[1].split("?")[0]
    tid, pid = tune["id"], prompt["id"]
    attempts = [
        ("GET", f"/tunes/{tid}", None),
        ("DELETE", f"/tunes/{tid}", None),
        ("GET", f"/tunes/{tid}/prompts", None),
        ("POST", f"/tunes/{tid}/prompts", {"prompt": {"text": "x"}}),
        ("GET", f"/tunes/{tid}/prompts/{pid}", None),
        ("DELETE", f"/tunes/{tid}/prompts/{pid}", None),
        ("POST", f"/prompts/{pid}/likes", None),
        ("DELETE", f"/prompts/{pid}/likes", None),
        ("GET", f"/images/{image_id}", None),
        ("GET", f"/tunes/{tid}/ckpt", None),
        ("POST", "/p/fantasy/tunes", {"tune": {"tune_ids": [tid]}}),
    ]
    for method, path, body in attempts:
        response = bob.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert all(t["id"] != tid for t in bob.get("/tunes", params={"limit": 100}).json())
    assert alice.get(f"/tunes/{tid}/prompts/{pid}").json()["liked"] is False  # untouched


def test_bad_fields_get_422_naming_them_and_nothing_is_created(alice, photos):
    before = len(alice.get("/tunes", params={"limit": 100}).json())
    cases = [
        ({"tune[title]": "Few", "tune[name]": "woman"}, upload(photos[:2]), "images"),
        ({"tune[title]": "Branch", "tune[name]": "woman", "tune[branch]": "sd99"}, upload(photos), "branch"),
        ({"tune[title]": "Steps", "tune[name]": "woman", "tune[steps]": "many"}, upload(photos), "steps"),
        ({"tune[title]": "Type", "tune[name]": "woman", "tune[model_type]": "faceid"}, upload(photos), "model_type"),
        (
            {"tune[title]": "Pivotal", "tune[name]": "woman", "tune[branch]": "tiny", "tune[model_type]": "pti"},
            upload(photos),
            "model_type",
        ),
        (
            {"tune[title]": "Hook", "tune[name]": "woman", "tune[callback]": "http://127.0.0.1/x"},
            upload(photos),
            "callback",
        ),
        ({"tune[name]": "woman"}, upload(photos), "title"),
        ({"tune[title]": "Mixed", "tune[name]": "woman", "tune[name][x]": "y"}, upload(photos), "tune[name][x]"),
    ]
    for data, files, field in cases:
        response = alice.post("/tunes", data=data, files=files)
        assert response.status_code == 422, (field, response.text)
        body = response.json()
        assert any(key.startswith(field) for key in body["errors"]), (field, body)
        assert "Traceback" not in response.text
    assert len(alice.get("/tunes", params={"limit": 100}).json()) == before
    assert alice.post("/tunes", json={"title": "no root"}).json()["errors"].keys() == {"tune"}
    assert alice.post("/tunes", content=b"{", headers={"content-type": "application/json"}).status_code == 422
    assert alice.post("/tunes", content=b"x", headers={"content-type": "text/plain"}).status_code == 415


def test_lora_tags_combine_the_callers_tunes_only(alice, bob, photos):
    mine = trained_tune(alice, photos, "Tag A")
    other = trained_tune(alice, photos, "Tag B")
    theirs = trained_tune(bob, photos, "Bob's")
    ok = alice.post(
        f"/tunes/{mine['id']}/prompts", json={"prompt": {"text": f"<lora:{other['id']}:0.6> {{{{subject}}}}"}}
    )
    assert ok.status_code == 201 and ok.json()["rendered_text"] == "sks woman"
    refused = alice.post(f"/tunes/{mine['id']}/prompts", json={"prompt": {"text": f"<lora:{theirs['id']}:0.6> x"}})
    assert refused.status_code == 404


def test_openapi_describes_every_route(alice):
    paths = alice.get("/openapi.json").json()["paths"]
    expected = {
        "/tunes": {"get", "post"},
        "/tunes/{tune_id}": {"get", "delete"},
        "/tunes/{tune_id}/prompts": {"get", "post"},
        "/tunes/{tune_id}/prompts/{prompt_id}": {"get", "delete"},
        "/prompts": {"get"},
        "/prompts/{prompt_id}/likes": {"post", "delete"},
        "/packs": {"get"},
        "/p/{pack_id}": {"get"},
        "/p/{pack_id}/tunes": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    body = paths["/tunes"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "application/x-www-form-urlencoded"} <= set(body)
    assert alice.get("/docs").status_code == 200


@pytest.mark.usefixtures("no_card_samples")
def test_the_tiny_branch_serves_its_lora_through_a_signed_link(alice, photos):
    tune = trained_tune(alice, photos, "Tiny REST", **{"tune[branch]": "tiny", "tune[steps]": "2"})
    assert tune["status"] == "trained", tune["error"]
    assert tune["ckpt_url"] and tune["ckpt_urls"] == [tune["ckpt_url"]] and tune["expires_at"]
    download = httpx.get(tune["ckpt_url"])
    assert download.status_code == 200 and download.content[:8] != b"" and len(download.content) > 1000


def test_model_type_pti_is_sdxl1s_default_echoed_as_stored_and_refused_elsewhere(alice, photos):
    def create(title, model_type=None, branch="sdxl1"):
        data = {"tune[title]": title, "tune[name]": "woman", "tune[branch]": branch}
        if model_type is not None:
            data["tune[model_type]"] = model_type
        return alice.post("/tunes", data=data, files=upload(photos))

    asked, default, plain = create("PTI", "pti"), create("SDXL"), create("SDXL LoRA", "lora")
    try:
        assert [r.status_code for r in (asked, default, plain)] == [201, 201, 201], asked.text
        assert [r.json()["model_type"] for r in (asked, default, plain)] == ["pti", "pti", "lora"]
        assert alice.get(f"/tunes/{default.json()['id']}").json()["model_type"] == "pti"
    finally:  # no SDXL weights here: the worker would fail them
        for response in (asked, default, plain):
            if response.status_code == 201:
                alice.delete(f"/tunes/{response.json()['id']}")
    for branch in ("sd15", "flux1"):
        refused = create(f"PTI on {branch}", "pti", branch)
        assert refused.status_code == 422 and list(refused.json()["errors"]) == ["model_type"], refused.text
        assert (
            f"must be lora on branch {branch}; pti (pivotal tuning) trains on SDXL branches only (sdxl1)"
            in (refused.json()["errors"]["model_type"][0])
        )


def test_a_tiny_flux_tune_trains_generates_and_serves_its_lora(alice, photos):
    tune = trained_tune(alice, photos, "Tiny FLUX", **{"tune[branch]": "tiny-flux", "tune[steps]": "2"})
    assert tune["status"] == "trained", tune["error"]
    assert (tune["branch"], tune["model_type"], tune["token"]) == ("tiny-flux", "lora", "ohwx")
    prompt = alice.post(
        f"/tunes/{tune['id']}/prompts", json={"prompt": {"text": "{{subject}} smiling", "num_images": 1, "steps": 2}}
    )
    assert prompt.status_code == 201, prompt.text
    assert (prompt.json()["scheduler"], prompt.json()["cfg_scale"]) == ("flow_match_euler", 3.5)
    done = wait_for(
        lambda: alice.get(f"/tunes/{tune['id']}/prompts/{prompt.json()['id']}").json(),
        lambda p: p["status"] in ("done", "failed"),
    )
    assert done["status"] == "done", done["error"]
    assert Image.open(io.BytesIO(httpx.get(done["images"][0]).content)).size == (128, 128)
    lora = httpx.get(tune["ckpt_url"])
    assert lora.status_code == 200 and any(key.startswith("transformer.") for key in safetensors_keys(lora.content))
    sd_sampler = alice.post(
        f"/tunes/{tune['id']}/prompts", json={"prompt": {"text": "{{subject}}", "scheduler": "euler_a"}}
    )
    assert sd_sampler.status_code == 422 and "flow_match_euler" in sd_sampler.json()["errors"]["scheduler"][0]


def safetensors_keys(content: bytes) -> list[str]:
    from safetensors.torch import load

    return list(load(content))
