"""The reads programs poll (`get_tune`, `list_tunes`, `list_prompts`, `list_packs`) on the launched app: off the
queue and without a concurrency limit, with the same names, parameters and answers as before, for the signed-in
caller only and within the caller's rate allowance.

gradio_client joins the queue for every endpoint; what makes its polls cheap is that no limit holds them back:
ten polls held inside the service do not stop an eleventh (the old limit let eight run), nor do long calls of
another endpoint. HTTP callers (`POST /gradio_api/run/get_tune`) skip the queue altogether.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from gradio_client import Client

from app import serving
from pipelines.settings import Settings
from studio.errors import ConflictError
from studio.limits import RateLimiter
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.admin.test_operations import PHOTOS
from tests.conftest import wait_for
from ui.api import tune_json

POLLS = {"get_tune", "list_tunes", "list_prompts", "list_packs"}
QUEUED = {
    "create_tune", "delete_tune", "cancel_tune", "create_prompt", "delete_prompt", "like", "get_prompt",
    "set_visibility", "hide_image",
}  # fmt: skip
HELD = 10  # more than the queue's default concurrency limit (8 in app.py), which polls no longer have


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("polling") / "data",
        device="cpu",
        default_branch="fast",
        accounts=("alice:alice-pw", "bob:bob-pw", "carol:carol-pw"),
        api_rate_per_minute=100_000,  # one test narrows it
    )
    runtime = open_runtime(settings, start_worker=False)  # records stay as created: answers compare exactly
    try:
        with serving(runtime) as url:
            yield runtime, url
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def tunes(served):
    """Two queued tunes of alice's; the first has a prompt."""
    runtime, _ = served
    first, second = (
        runtime.studio.create_tune(
            "alice",
            TuneCreate(title=title, name="woman", images=PHOTOS, branch="fast", prompts=prompts),
        ).tune
        for title, prompts in (("Polled", [PromptCreate("{{subject}} at sea", num_images=1)]), ("Held", []))
    )
    return first, second


def client(served, user: str) -> Client:
    return Client(served[1], auth=(user, f"{user}-pw"), verbose=False)


@pytest.fixture(scope="module")
def alice(served):
    return client(served, "alice")


@pytest.fixture(scope="module")
def bob(served):
    return client(served, "bob")


@contextmanager
def http(served, user: str) -> Iterator[httpx.Client]:
    """A signed-in HTTP session, as a script without gradio_client has."""
    with httpx.Client(base_url=served[1], timeout=30) as session:
        answer = session.post("/login", data={"username": user, "password": f"{user}-pw"})
        assert answer.status_code == 200, answer.text
        yield session


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_the_polls_skip_the_queue_and_the_other_endpoints_keep_it(alice):
    queued = {dep["api_name"]: dep["queue"] for dep in alice.config["dependencies"] if dep.get("api_name")}
    assert {name: queued[name] for name in POLLS} == dict.fromkeys(POLLS, False)
    assert {name: queued[name] for name in QUEUED} == dict.fromkeys(QUEUED, True)


def test_the_polls_answer_as_they_always_did(served, alice, tunes):
    runtime, _ = served
    first, second = tunes
    studio = runtime.studio
    tune = as_json(tune_json(studio.get_tune("alice", first.id)))
    assert alice.predict(tune_id=first.id, api_name="/get_tune") == tune
    assert alice.predict(api_name="/list_tunes") == as_json([tune_json(t) for t in studio.list_tunes("alice")])
    assert [t["id"] for t in alice.predict(limit=1, offset=1, api_name="/list_tunes")] == [first.id]
    prompts = alice.predict(tune_id=first.id, api_name="/list_prompts")
    assert prompts == as_json([p.to_dict() for p in studio.list_prompts("alice", tune_id=first.id)])
    assert prompts[0]["rendered_text"] == "sks woman at sea" and alice.predict(api_name="/list_prompts") == prompts
    assert alice.predict(tune_id=second.id, api_name="/list_prompts") == []
    assert [p["id"] for p in alice.predict(class_name="cat", api_name="/list_packs")] == ["pets-in-costumes"]
    with pytest.raises(Exception, match="`tune_id`"):
        alice.predict(tune_id=0, api_name="/get_tune")

    with http(served, "alice") as session:  # the same answer without gradio_client, straight off the queue
        answer = session.post("/gradio_api/run/get_tune", json={"data": [first.id]})
        assert answer.status_code == 200 and answer.json()["data"] == [alice.predict(first.id, api_name="/get_tune")]


def test_another_user_polls_nothing_of_alice(served, bob, tunes):
    first, _ = tunes
    assert bob.predict(api_name="/list_tunes") == [] and bob.predict(api_name="/list_prompts") == []
    for attempt in ({"api_name": "/get_tune"}, {"api_name": "/list_prompts"}):
        with pytest.raises(Exception, match=f"tune {first.id} was not found"):
            bob.predict(tune_id=first.id, **attempt)
    with http(served, "bob") as session:
        answer = session.post("/gradio_api/run/get_tune", json={"data": [first.id]})
        assert answer.status_code == 500 and f"tune {first.id} was not found" in answer.json()["error"]
        assert "alice" not in answer.text and first.title not in answer.text
        assert session.post("/gradio_api/run/list_tunes", json={"data": [20, 0]}).json()["data"] == [[]]
    with httpx.Client(base_url=served[1]) as stranger:  # not signed in
        assert stranger.post("/gradio_api/run/list_tunes", json={"data": [20, 0]}).status_code == 401


def test_a_poll_takes_from_the_callers_rate_allowance(served, monkeypatch):
    runtime, _ = served
    monkeypatch.setattr(runtime.studio, "rate_limiter", RateLimiter(60, burst=1, clock=lambda: 0.0))  # one each
    carol = client(served, "carol")
    assert carol.predict(api_name="/list_tunes") == []
    with pytest.raises(Exception, match="rate limit reached"):
        carol.predict(tune_id=1, api_name="/get_tune")
    with http(served, "carol") as session:
        answer = session.post("/gradio_api/run/list_tunes", json={"data": [20, 0]})
        assert answer.status_code == 500 and "rate limit reached" in answer.json()["error"]


class Gate:
    """Holds the calls that `wraps` picks inside the service until `release`; counts the calls held."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.held: dict[str, int] = {}

    def wraps(self, name: str, call: Callable[..., Any], *, holds: Callable[..., bool]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            if not holds(*args, **kwargs):
                return call(*args, **kwargs)
            with self.lock:
                self.held[name] = self.held.get(name, 0) + 1
            self.opened.wait(timeout=60)
            if name == "create_prompt":
                raise ConflictError("held for the test")
            return call(*args, **kwargs)

        return held

    def release(self) -> None:
        self.opened.set()


def test_a_poll_answers_while_other_polls_and_long_calls_hold_the_queue(served, alice, tunes, monkeypatch):
    runtime, _ = served
    polled, slow = tunes
    studio, gate = runtime.studio, Gate()
    slow_reads = gate.wraps("get_tune", studio.get_tune, holds=lambda owner, tune_id: tune_id == slow.id)
    long_writes = gate.wraps("create_prompt", studio.create_prompt, holds=lambda *_: True)
    monkeypatch.setattr(studio, "get_tune", slow_reads)
    monkeypatch.setattr(studio, "create_prompt", long_writes)
    held: list[Future] = []
    try:
        held += [alice.submit(tune_id=slow.id, text="{{subject}}", api_name="/create_prompt") for _ in range(HELD)]
        held += [alice.submit(tune_id=slow.id, api_name="/get_tune") for _ in range(HELD)]
        wait_for(lambda: dict(gate.held), lambda n: n == {"create_prompt": 8, "get_tune": HELD}, what="held calls")

        answer = alice.submit(tune_id=polled.id, api_name="/get_tune").result(timeout=30)
        assert answer["id"] == polled.id and not any(call.done() for call in held)
        assert [t["id"] for t in alice.submit(api_name="/list_tunes").result(timeout=30)] == [slow.id, polled.id]
    finally:
        gate.release()
    assert all(call.result(timeout=30)["id"] == slow.id for call in held[HELD:])
    for call in held[:HELD]:
        with pytest.raises(Exception, match="held for the test"):
            call.result(timeout=30)


def test_an_unexpected_error_of_a_poll_reaches_gradio_client_without_server_folders(served, alice, tunes, monkeypatch):
    runtime, _ = served
    data = str(runtime.settings.data_dir)

    def broken(owner: str, tune_id: int):
        raise OSError(errno.EIO, "Input/output error", f"{data}/tunes.db")

    monkeypatch.setattr(runtime.studio, "get_tune", broken)
    with pytest.raises(Exception, match=r"Input/output error: 'tunes\.db'") as raised:
        alice.predict(tune_id=tunes[0].id, api_name="/get_tune")
    assert data not in str(raised.value)
    with http(served, "alice") as session:  # the same error off the queue, as one JSON answer
        answer = session.post("/gradio_api/run/get_tune", json={"data": [tunes[0].id]})
        assert "Input/output error: 'tunes.db'" in answer.json()["error"] and data not in answer.text
        assert int(answer.headers["content-length"]) == len(answer.content)
