"""Callback receivers that fail: one that never answers, one that answers 500, one that trickles its answer.

Whatever the receivers do, the tune trains and its status can be polled; each delivery is retried on the backoff
schedule and ends `failed` with the error recorded; a receiver that hangs costs other deliveries only a timeout.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from storage.records import iso
from studio.callbacks import CallbackSender
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.conftest import wait_for
from tests.studio.test_service import PHOTOS

ONE_PHOTO = PHOTOS[:1]  # with TUNES_MIN_PHOTOS=1: photo checks are not what these tests are about


@pytest.fixture
def settings(settings):
    return settings.with_overrides(min_photos=1)


TIMEOUT = 0.5  # seconds one POST may take (10 s in production)


class Receiver:
    """A callback receiver on 127.0.0.1 that records every POST and then answers `status`, or with `status=None`
    never answers (until `close()`)."""

    def __init__(self, status: int | None):
        self.bodies: list[Any] = []
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                if status is None:
                    receiver.released.wait(timeout=60)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[[int | None], Receiver]]:
    made: list[Receiver] = []

    def make(status: int | None) -> Receiver:
        made.append(Receiver(status))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_hanging_and_failing_receivers_never_hold_up_the_tune_and_end_failed_with_the_error(settings, receivers):
    hanging, failing, working = receivers(None), receivers(500), receivers(200)
    runtime = open_runtime(settings.with_overrides(allowed_fetch_hosts=("127.0.0.1",)), start_worker=False)
    runtime.worker.callbacks = CallbackSender(runtime.studio, delays=[0.1, 0.2], timeout=TIMEOUT)
    runtime.worker.start()  # the real threads: the worker, and the callback sender beside it
    try:
        studio = runtime.studio
        request = TuneCreate(
            title="me",
            name="woman",
            images=ONE_PHOTO,
            branch="fast",
            callback=f"{hanging.url}/tune",
            prompts_callback=f"{working.url}/prompts",
            prompts=[PromptCreate("{{subject}} as a pilot", num_images=2, callback=f"{failing.url}/prompt")],
        )
        tune = studio.create_tune("alice", request).tune

        # the tune trains and its prompt runs while the receivers hang or fail
        wait_for(lambda: studio.get_tune("alice", tune.id).status, lambda s: s == "trained", what="the tune to train")
        [prompt] = studio.list_prompts("alice", tune_id=tune.id)
        prompt = wait_for(
            lambda: studio.get_prompt("alice", prompt.id), lambda p: p.status == "done", what="the prompt"
        )
        assert len(prompt.images) == 2

        def deliveries() -> list:
            kinds = (("tune", tune.id), ("prompt", prompt.id), ("prompts", tune.id))
            return [d for kind, record in kinds for d in runtime.db.deliveries_for("alice", kind, record)]

        to_tune, to_prompt, to_prompts = wait_for(
            deliveries, lambda ds: len(ds) == 3 and all(d.status != "pending" for d in ds), what="every delivery to end"
        )
        assert (to_prompts.status, to_prompts.last_status) == ("delivered", 200), "the working receiver got its call"
        assert [body["id"] for body in working.bodies[0]] == [prompt.id]
        assert (to_prompt.status, to_prompt.attempts, to_prompt.last_status) == ("failed", 3, 500)
        assert to_prompt.last_error == "HTTP 500" and len(failing.bodies) == 3
        assert (to_tune.status, to_tune.attempts, to_tune.last_status) == ("failed", 3, None)
        assert f"timed out after {TIMEOUT:g} s" in to_tune.last_error and len(hanging.bodies) == 3
        assert all(body["status"] == "trained" for body in hanging.bodies), "each try sent the trained tune"
        assert studio.get_tune("alice", tune.id).status == "trained", "a failed callback never changes the tune"
    finally:
        for receiver in (hanging, failing, working):
            receiver.released.set()
        runtime.close()


def test_retries_follow_the_backoff_schedule_and_a_hang_costs_the_next_delivery_only_the_timeout(settings, receivers):
    hanging, working = receivers(None), receivers(200)
    clock = Clock()
    runtime = open_runtime(settings.with_overrides(allowed_fetch_hosts=("127.0.0.1",)), start_worker=False, clock=clock)
    sender = runtime.worker.callbacks = CallbackSender(runtime.studio, delays=[30.0, 120.0], timeout=TIMEOUT)
    try:
        studio = runtime.studio
        request = TuneCreate(
            title="me",
            name="woman",
            images=ONE_PHOTO,
            branch="fast",
            callback=f"{hanging.url}/tune",
            prompts=[PromptCreate("{{subject}}", num_images=1, callback=f"{working.url}/prompt")],
        )
        tune = studio.create_tune("alice", request).tune
        runtime.worker.run_once()  # trains: the tune's callback is queued first
        runtime.worker.run_once()  # generates: the prompt's callback is queued behind it

        started = time.monotonic()
        assert sender.deliver_due() == 1, "the prompt's callback went out in the same pass as the hanging one"
        assert time.monotonic() - started < TIMEOUT + 5, "the hang cost one timeout, not more"
        assert len(working.bodies) == 1 and len(hanging.bodies) == 1

        start = clock.now
        schedule = []
        for offset in (29, 30, 149, 150, 10_000):  # seconds after the first attempt
            clock.now = start + timedelta(seconds=offset)
            sender.deliver_due()
            [delivery] = runtime.db.deliveries_for("alice", "tune", tune.id)
            schedule.append((offset, delivery.attempts, delivery.status))
        assert schedule == [
            (29, 1, "pending"),  # not due before its 30 s backoff
            (30, 2, "pending"),
            (149, 2, "pending"),  # the next one waits 120 s more
            (150, 3, "failed"),  # out of tries
            (10_000, 3, "failed"),  # and never tried again
        ]
        assert delivery.next_attempt_at == iso(start + timedelta(seconds=150))
        assert f"timed out after {TIMEOUT:g} s" in delivery.last_error and delivery.delivered_at is None
        assert len(hanging.bodies) == 3 and studio.get_tune("alice", tune.id).status == "trained"
    finally:
        hanging.released.set()
        runtime.close()


class TricklingReceiver:
    """Answers a POST with a status line, then one header line every 0.1 s, never ending the headers."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.socket.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not self.stop.wait(0.1):
                try:
                    conn.sendall(b"X-Wait: 1\r\n")
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.socket.close()


def test_a_receiver_that_trickles_its_answer_costs_other_deliveries_only_the_timeout(settings, receivers):
    trickling, working = TricklingReceiver(), receivers(200)
    runtime = open_runtime(settings.with_overrides(allowed_fetch_hosts=("127.0.0.1",)), start_worker=False)
    sender = runtime.worker.callbacks = CallbackSender(runtime.studio, delays=[], timeout=TIMEOUT)
    delivering = threading.Thread(target=sender.deliver_due, daemon=True)
    try:
        request = TuneCreate(
            title="me",
            name="woman",
            images=ONE_PHOTO,
            branch="fast",
            callback=f"{trickling.url}/tune",
            prompts=[PromptCreate("{{subject}}", num_images=1, callback=f"{working.url}/prompt")],
        )
        tune = runtime.studio.create_tune("alice", request).tune
        runtime.worker.run_once()
        runtime.worker.run_once()
        delivering.start()
        deadline = time.monotonic() + TIMEOUT + 3
        while not working.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
        assert working.bodies, "the next delivery waited far beyond the timeout"
        delivering.join(timeout=5)
        [delivery] = runtime.db.deliveries_for("alice", "tune", tune.id)
        assert delivery.status == "failed" and f"timed out after {TIMEOUT:g} s" in delivery.last_error
    finally:
        trickling.close()
        if delivering.is_alive():
            delivering.join(timeout=10)
        runtime.close()
