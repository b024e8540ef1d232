"""One full server per test module (REST + Gradio, worker thread, the `fast` mock branch), two accounts.

Module-scoped on purpose: the security suites make hundreds of small calls, and one server per module keeps
the folder fast. `alice` is an admin (so refusals of `bob` are about bob, not about nobody being allowed);
loopback and private hosts are never allowed for fetches (`allowed_fetch_hosts` stays empty).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client

from pipelines.settings import Settings
from storage.db import Database
from studio.service import Studio
from tests.conftest import served_app

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


@dataclass(frozen=True)
class Served:
    """The running server, its settings, a second service on the same data folder (to call and to read
    records directly) and a REST API key per user."""

    url: str
    settings: Settings
    studio: Studio
    keys: dict[str, str]
    probe: httpx.Client  # alice's REST client for `still_answers` (a new client costs ~30 ms)

    def rest(self, user: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[user]}"}, timeout=60)

    def gradio(self, user: str) -> Client:
        return Client(self.url, auth=(user, PASSWORDS[user]), verbose=False)

    @contextmanager
    def browser(self, user: str) -> Iterator[httpx.Client]:
        """A signed-in HTTP session, as the browser has (Gradio's login cookie)."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            response = client.post("login", data={"username": user, "password": PASSWORDS[user]})
            assert response.status_code == 200, response.text
            yield client

    def still_answers(self) -> None:
        """The server is up and well: a REST list answers (Gradio runs in the same server)."""
        assert self.probe.get("/tunes").status_code == 200


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("security") / "data",
        device="cpu",
        default_branch="fast",
        accounts=tuple(f"{user}:{password}" for user, password in PASSWORDS.items()),
        admins=("alice",),
        api_rate_per_minute=100_000,
        delete_photos_after_training=False,  # the stored photos are inspected
    )
    with served_app(settings) as url:
        studio = Studio(settings, Database(settings.data_dir / "tunes.db"))
        keys = {user: studio.create_api_key(user) for user in PASSWORDS}
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['alice']}"}, timeout=60) as probe:
            yield Served(url, settings, studio, keys, probe)


def call_raw(session: httpx.Client, api_name: str, data: list[Any]) -> tuple[str, Any]:
    """Call a Gradio event over plain HTTP (`/gradio_api/call/NAME`), as any program could without
    gradio_client; returns ("complete", outputs), ("error", message) or ("refused", "STATUS BODY")."""
    started = session.post(f"gradio_api/call/{api_name}", json={"data": data})
    if started.status_code != 200:
        return "refused", f"{started.status_code} {started.text}"
    event_id = started.json()["event_id"]
    kind = None
    with session.stream("GET", f"gradio_api/call/{api_name}/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                payload = json.loads(line.split(":", 1)[1]) if line[5:].strip() else None
                if kind == "error" and isinstance(payload, dict):
                    payload = payload.get("error")
                return kind, payload
    return "closed", None


def call_in_session(session: httpx.Client, session_hash: str, api_name: str, data: list[Any]) -> tuple[str, Any]:
    """Call a Gradio event through the queue as the browser does, in one browser session (`session_hash`):
    what earlier events of that session changed (a dropdown's choices) holds. Same returns as `call_raw`."""
    config = session.get("config")
    assert config.status_code == 200, config.text
    [fn_index] = [dep["id"] for dep in config.json()["dependencies"] if dep.get("api_name") == api_name]
    return queue_call(session, session_hash, fn_index, data)


def queue_call(
    session: httpx.Client, session_hash: str, fn_index: int, data: list[Any], event_data: dict | None = None
) -> tuple[str, Any]:
    """Event `fn_index` through the queue, as the browser calls it (a select event carries `event_data`: its row).
    Same returns as `call_raw`."""
    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": event_data}
    joined = session.post("gradio_api/queue/join", json={**body, "trigger_id": None})
    if joined.status_code != 200:
        return "refused", f"{joined.status_code} {joined.text}"
    with session.stream("GET", "gradio_api/queue/data", params={"session_hash": session_hash}) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                output = message.get("output") or {}
                if message.get("success"):
                    return "complete", output.get("data")
                return "error", output.get("error")
    return "closed", None


def stored_files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}
