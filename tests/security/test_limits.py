"""How much one user may ask (security review, issue 12, items 4 and 5), through the running server.

One API rate per user, shared by REST and the named Gradio API whatever the number of keys; a cap on API keys
(shown on the Account tab); and Gradio's sign-in, which waits after too many wrong passwords. Counts, not time:
the server's rate limiter runs on a stopped clock (buckets never refill during a test) and the sign-in counters
are shown with a fake clock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app import serving
from pipelines.settings import Settings
from rest.signin import SignInFailures
from studio.limits import RateLimiter
from studio.runtime import open_runtime
from studio.service import Studio
from tests.security.conftest import call_in_session

PASSWORDS = {name: f"{name}-pw" for name in ("alice", "bob", "carol", "dave", "erin", "frank")}


def limited_settings(folder: Path) -> Settings:
    """3 API requests a minute per user, 3 keys per user, 3 wrong passwords before sign-in waits."""
    return Settings(
        data_dir=folder / "data",
        device="cpu",
        default_branch="fast",
        accounts=tuple(f"{user}:{password}" for user, password in PASSWORDS.items()),
        api_rate_per_minute=3,
        max_api_keys=3,
        login_failures=3,
    )


@contextmanager
def served_on_a_stopped_clock(settings: Settings) -> Iterator[tuple[str, Studio]]:
    """The whole server; its rate limiter's clock never moves, so each user has exactly 3 requests."""
    runtime = open_runtime(settings)
    runtime.studio.rate_limiter = RateLimiter(settings.api_rate_per_minute, clock=lambda: 0.0)
    try:
        with serving(runtime) as url:
            yield url, runtime.studio
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[tuple[str, Studio]]:
    with served_on_a_stopped_clock(limited_settings(tmp_path_factory.mktemp("limits"))) as served:
        yield served


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sign_in(http: httpx.Client, user: str, password: str, path: str = "login") -> httpx.Response:
    return http.post(path, data={"username": user, "password": password})


# -- one API rate per user -------------------------------------------------------------------------


def test_three_keys_of_one_user_share_one_rate_and_the_fourth_request_is_429(limited):
    url, studio = limited
    keys = [studio.create_api_key("alice") for _ in range(3)]
    codes = [httpx.get(f"{url}tunes", headers=bearer(key)).status_code for key in [*keys, keys[0]]]
    assert codes == [200, 200, 200, 429], "three keys must not triple the rate"
    refused = httpx.get(f"{url}tunes", headers=bearer(keys[1]))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "rate limit" in refused.json()["error"]
    assert httpx.get(f"{url}tunes", headers=bearer(studio.create_api_key("bob"))).status_code == 200, "bob's own"


def test_rest_requests_and_gradio_api_calls_of_a_user_draw_from_one_bucket(limited):
    url, studio = limited
    key = studio.create_api_key("carol")
    carol = Client(url, auth=("carol", PASSWORDS["carol"]), verbose=False)
    assert httpx.get(f"{url}tunes", headers=bearer(key)).status_code == 200
    assert carol.predict(api_name="/list_tunes") == []
    assert httpx.get(f"{url}prompts", headers=bearer(key)).status_code == 200
    with pytest.raises(AppError, match=r"rate limit.*try again in \d+ s"):
        carol.predict(tune_id=1, text="{{subject}} on a boat", api_name="/create_prompt")
    assert httpx.get(f"{url}tunes", headers=bearer(key)).status_code == 429, "the Gradio call used the last one"
    dave = Client(url, auth=("dave", PASSWORDS["dave"]), verbose=False)
    assert dave.predict(api_name="/list_tunes") == [], "another user is unaffected"


def test_the_uis_own_actions_draw_from_the_same_bucket(limited):
    """The browser's events can be called over HTTP like the named API: making things through them counts too."""
    url, studio = limited
    with httpx.Client(base_url=url, timeout=60) as browser:
        assert sign_in(browser, "frank", PASSWORDS["frank"]).status_code == 200
        session = uuid.uuid4().hex
        for _ in range(2):
            kind, _answer = call_in_session(browser, session, "create_key", [])
            assert kind == "complete"
        inputs = [None, "{{subject}}", "", 1, -1, "1:1", 30, 7, "dpm++2m_karras", False, False, False, ""]
        kind, answer = call_in_session(browser, session, "generate", inputs)
        assert kind == "complete" and "rate limit" not in str(answer), "the third request is allowed"
        kind, message = call_in_session(browser, session, "create_key", [])
    assert kind == "error" and "rate limit" in message, (kind, message)
    assert len(studio.list_api_keys("frank")) == 2


# -- API keys per user -----------------------------------------------------------------------------


def test_the_account_tab_says_to_revoke_a_key_once_the_cap_is_reached(limited):
    url, studio = limited
    for _ in range(3):
        studio.create_api_key("erin")
    with httpx.Client(base_url=url, timeout=60) as browser:
        assert sign_in(browser, "erin", PASSWORDS["erin"]).status_code == 200
        kind, message = call_in_session(browser, uuid.uuid4().hex, "create_key", [])
    assert kind == "error" and "TUNES_MAX_API_KEYS=3" in message and "revoke one" in message, (kind, message)
    assert len(studio.list_api_keys("erin")) == 3


# -- sign-in -----------------------------------------------------------------------------------------


def test_a_right_password_clears_the_failures_and_gradio_client_still_signs_in(limited):
    url, _ = limited
    with httpx.Client(base_url=url, timeout=60) as http:
        passwords = ["guess", "guess", PASSWORDS["bob"], "guess", "guess", PASSWORDS["bob"]]
        assert [sign_in(http, "bob", password).status_code for password in passwords] == [400, 400, 200] * 2
    bob = Client(url, auth=("bob", PASSWORDS["bob"]), verbose=False)
    assert bob.predict(api_name="/list_packs"), "signed in, the API answers"


def test_after_three_wrong_passwords_the_right_one_waits_too(tmp_path):
    with served_on_a_stopped_clock(limited_settings(tmp_path)) as (url, _), httpx.Client(base_url=url) as http:
        assert [sign_in(http, "alice", f"guess-{n}").status_code for n in range(3)] == [400, 400, 400]
        refused = sign_in(http, "alice", PASSWORDS["alice"])
        assert refused.status_code == 429 and not refused.cookies, "the password was not even checked"
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 60
        assert re.fullmatch(r"too many failed sign-ins .*; try again in \d+ s", refused.json()["error"])
        assert sign_in(http, "alice", PASSWORDS["alice"], path="login/").status_code == 429
        # the same address: its failures count for every account it tries (no spraying names)
        assert sign_in(http, "bob", PASSWORDS["bob"]).status_code == 429
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("alice", PASSWORDS["alice"]), verbose=False)


def test_failures_count_per_account_and_per_address_then_one_more_a_minute():
    now = [0.0]
    failures = SignInFailures(3, clock=lambda: now[0])
    assert [failures.attempt("alice", "10.0.0.1") for _ in range(3)] == [0, 0, 0]  # three wrong passwords
    assert failures.attempt("alice", "10.0.0.1") == pytest.approx(60)
    assert failures.attempt("alice", "10.0.0.2") == pytest.approx(60), "per account: from any address"
    assert failures.attempt("bob", "10.0.0.1") == pytest.approx(60), "per address: for any account"
    assert failures.attempt("bob", "10.0.0.2") == 0, "neither this account nor this address failed"
    failures.succeeded("bob", "10.0.0.2")
    now[0] += 45
    assert failures.attempt("alice", "10.0.0.1") == pytest.approx(15)
    now[0] += 15
    assert failures.attempt("alice", "10.0.0.1") == 0, "one more a minute"
    assert failures.attempt("alice", "10.0.0.1") == pytest.approx(60)


def test_a_success_clears_that_account_from_that_address_only():
    failures = SignInFailures(3, clock=lambda: 0.0)
    failures.attempt("alice", "10.0.0.9")  # a guess at alice's password from elsewhere
    failures.attempt("mallory", "10.0.0.1")  # alice's address tried another account
    failures.attempt("alice", "10.0.0.1")  # alice mistypes
    failures.attempt("alice", "10.0.0.1")  # then gets it right
    failures.succeeded("alice", "10.0.0.1")
    assert failures.attempt("alice", "10.0.0.5") == 0 and failures.attempt("alice", "10.0.0.6") == 0
    assert failures.attempt("alice", "10.0.0.7") == pytest.approx(60), "the guess from 10.0.0.9 still counts"
    assert failures.attempt("bob", "10.0.0.1") == 0 and failures.attempt("carol", "10.0.0.1") == 0
    assert failures.attempt("dave", "10.0.0.1") == pytest.approx(60), "mallory's try still counts"
