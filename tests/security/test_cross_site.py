"""Another site against a signed-in user, and one user listening in on another's events.

The server is addressed as a real host (`Host: studio.example.com`) by a page of another site
(`Origin: https://evil.example`), as a browser sends them: that page gets no credentialed CORS answer, cannot
run the Account tab's "create key" event, cannot frame the app, and the sign-in cookie does not travel with
its requests. Bob, signed in, cannot read alice's event results by naming her session hash.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace

import httpx
import pytest

from rest.browser import QuietAccessLog, redact
from tests.conftest import served_app
from tests.security.conftest import PASSWORDS, Served

HOST = "studio.example.com"
FOREIGN = {"Host": HOST, "Origin": "https://evil.example"}
OWN = {"Host": HOST, "Origin": f"https://{HOST}"}


def fn_index(session: httpx.Client, api_name: str) -> int:
    config = session.get("config").json()
    [index] = [dep["id"] for dep in config["dependencies"] if dep.get("api_name") == api_name]
    return index


def join(session: httpx.Client, api_name: str, session_hash: str, headers: dict[str, str]) -> httpx.Response:
    """The browser's first step of an event: `queue/join` (the results then stream from `queue/data`)."""
    body = {"data": [], "fn_index": fn_index(session, api_name), "session_hash": session_hash, "trigger_id": None}
    return session.post("gradio_api/queue/join", json=body, headers=headers)


def results(session: httpx.Client, session_hash: str, headers: dict[str, str] | None = None) -> tuple[int, list]:
    """Status and messages of `queue/data` for a session, read until its event completes."""
    messages = []
    with session.stream("GET", "gradio_api/queue/data", params={"session_hash": session_hash}, headers=headers) as r:
        if r.status_code != 200:
            return r.status_code, []
        for line in r.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1].get("msg") == "process_completed":
                    break
    return 200, messages


def keys_of(served: Served, user: str) -> int:
    return len(served.studio.list_api_keys(user))


def test_another_site_gets_no_credentialed_cors_answer(served: Served):
    with served.browser("alice") as alice:
        preflight = alice.options("gradio_api/queue/join", headers={**FOREIGN, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        for path in ("config", "gradio_api/info", "tunes"):
            answer = alice.get(path, headers=FOREIGN)
            # without its origin echoed the browser keeps the answer from the page
            assert "access-control-allow-origin" not in answer.headers, path


def test_another_site_cannot_create_an_api_key_for_a_signed_in_user(served: Served):
    before = keys_of(served, "alice")
    with served.browser("alice") as alice:
        refused = join(alice, "create_key", uuid.uuid4().hex[:11], FOREIGN)
        assert refused.status_code == 403 and "evil.example" in refused.json()["error"]
        assert "TUNES_ALLOWED_ORIGINS" in refused.json()["error"]
        # no Origin but Referer, and a sandboxed page's `Origin: null`: refused as well
        via_referer = {"Host": HOST, "Referer": "https://evil.example/page.html"}
        assert join(alice, "create_key", uuid.uuid4().hex[:11], via_referer).status_code == 403
        assert join(alice, "create_key", uuid.uuid4().hex[:11], {"Host": HOST, "Origin": "null"}).status_code == 403
        login = alice.post("login", data={"username": "alice", "password": PASSWORDS["alice"]}, headers=FOREIGN)
        assert login.status_code == 403  # nor sign a visitor in to an account of its choosing
    assert keys_of(served, "alice") == before

    with served.browser("alice") as alice:  # the app's own page (same origin) still works
        session_hash = uuid.uuid4().hex[:11]
        assert join(alice, "create_key", session_hash, OWN).status_code == 200
        status, messages = results(alice, session_hash, {"Host": HOST})
        assert status == 200 and messages[-1]["success"], messages[-1]
    assert keys_of(served, "alice") == before + 1


def test_an_allowed_origin_gets_credentialed_cors_and_may_write(tmp_path, served: Served):
    partner = "https://partner.example"
    settings = replace(served.settings, data_dir=tmp_path / "data", allowed_origins=(partner,))
    with served_app(settings) as url, httpx.Client(base_url=url, timeout=60) as alice:
        assert alice.post("login", data={"username": "alice", "password": PASSWORDS["alice"]}).status_code == 200
        allowed = {"Host": HOST, "Origin": partner}
        preflight = alice.options("gradio_api/queue/join", headers={**allowed, "Access-Control-Request-Method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == partner
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert join(alice, "create_key", uuid.uuid4().hex[:11], allowed).status_code == 200
        assert join(alice, "create_key", uuid.uuid4().hex[:11], FOREIGN).status_code == 403


def test_sign_in_cookies_stay_on_this_site(served: Served):
    with httpx.Client(base_url=served.url, timeout=60) as client:
        response = client.post("login", data={"username": "bob", "password": PASSWORDS["bob"]})
        cookies = response.headers.get_list("set-cookie")
        assert cookies and all("samesite=lax" in cookie.lower() for cookie in cookies), cookies
        assert not any("samesite=none" in cookie.lower() for cookie in cookies)


def test_the_app_cannot_be_framed_by_another_site(served: Served):
    page = httpx.get(served.url, headers={"Host": HOST})
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == "frame-ancestors 'self'"
    assert page.headers["x-frame-options"] == "SAMEORIGIN" and page.headers["x-content-type-options"] == "nosniff"


def test_on_a_space_the_hugging_face_page_may_embed_the_app(tmp_path, served: Served):
    settings = replace(served.settings, data_dir=tmp_path / "data", accounts=(), space_id="alice/tune-studio")
    with served_app(settings) as url:
        page = httpx.get(url)
        assert page.headers["content-security-policy"] == "frame-ancestors 'self' https://huggingface.co"
        assert "x-frame-options" not in page.headers  # it cannot name huggingface.co; CSP does


def test_bob_cannot_read_alices_event_results_by_her_session_hash(served: Served):
    before = {user: keys_of(served, user) for user in ("alice", "bob")}
    with served.browser("alice") as alice, served.browser("bob") as bob:
        session_hash = uuid.uuid4().hex[:11]
        assert join(alice, "create_key", session_hash, {}).status_code == 200
        status, messages = results(bob, session_hash)
        assert status == 403 and messages == []
        assert bob.get(f"gradio_api/heartbeat/{session_hash}").status_code == 403
        assert join(bob, "create_key", session_hash, {}).status_code == 403  # nor join events into her session
        status, messages = results(alice, session_hash)
        assert status == 200 and messages[-1]["success"]
        assert "tsk_" in json.dumps(messages[-1]["output"])  # she got her key
    assert keys_of(served, "alice") == before["alice"] + 1 and keys_of(served, "bob") == before["bob"]


def test_the_access_log_keeps_no_session_hashes_or_signatures():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/images/5?u=alice&exp=1999999999&sig=0123456789abcdef", "1.1", 200), None,
    )  # fmt: skip
    QuietAccessLog().filter(record)
    logged = record.getMessage()
    assert "0123456789abcdef" not in logged and "/images/5?u=alice&exp=1999999999&sig=…" in logged
    assert redact("/gradio_api/queue/data?session_hash=abc123xyz") == "/gradio_api/queue/data?session_hash=…"
    assert redact("/gradio_api/heartbeat/abc123xyz") == "/gradio_api/heartbeat/…"
    assert redact("/tunes?limit=5") == "/tunes?limit=5"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_rest_writes_from_another_sites_page_are_refused_and_programs_pass(served: Served, method: str):
    with served.rest("bob") as bob:
        refused = bob.request(method, "/tunes/999999", headers=FOREIGN)
        assert refused.status_code == 403
        assert bob.request(method, "/tunes/999999").status_code in (404, 405, 422)  # no Origin: a program
