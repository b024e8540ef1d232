"""The tunes service end to end: records, idempotency, isolation, the worker, callbacks, credits."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from pipelines.errors import PhotoRejectedError, ValidationError
from pipelines.settings import Settings
from storage.db import Database
from studio import queue
from studio.errors import ApiKeyLimitError, ConflictError, InsufficientCreditsError, NotFoundError, RateLimitedError
from studio.limits import RateLimiter
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from studio.service import Studio
from tests.conftest import astronaut_photos


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


PHOTOS = [(f"me-{i}.jpg", jpeg(p)) for i, p in enumerate(astronaut_photos())]


class Receiver:
    """A local HTTP server that records POSTed JSON and answers with scripted status codes."""

    def __init__(self, statuses: list[int] | None = None):
        self.received: list[tuple[str, object]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append((self.path, json.loads(body)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def runtime(settings):
    settings = settings.with_overrides(allowed_fetch_hosts=("127.0.0.1",))
    rt = open_runtime(settings, start_worker=False, callback_delays=[0.0, 0.0])
    yield rt
    rt.close()


def tune_request(title: str = "me", **changes) -> TuneCreate:
    return TuneCreate(**{"title": title, "name": "woman", "images": PHOTOS, "branch": "fast", **changes})


def test_fast_branch_tune_trains_runs_its_prompts_and_calls_back(runtime, receiver):
    studio = runtime.studio
    created = studio.create_tune(
        "alice",
        tune_request(
            callback=f"{receiver.url}/tune",
            prompts_callback=f"{receiver.url}/prompts",
            prompts=[PromptCreate("{{subject}} as a pilot", num_images=2, seed=5, callback=f"{receiver.url}/p")],
        ),
    )
    tune = created.tune
    assert created.created and tune.status == "queued" and tune.token == "sks"
    assert len(tune.photo_report) == 4 and all(r["faces"] == 1 for r in tune.photo_report)

    runtime.worker.drain()

    tune = studio.get_tune("alice", tune.id)
    assert tune.status == "trained" and tune.trained_at is not None
    [prompt] = studio.list_prompts("alice", tune_id=tune.id)
    assert prompt.status == "done" and prompt.rendered_text == "sks woman as a pilot"
    assert [image.seed for image in prompt.images] == [5, 6]
    assert all(Path(studio.image_file("alice", image.id)).exists() for image in prompt.images)
    paths = [path for path, _ in receiver.received]
    assert sorted(paths) == ["/p", "/prompts", "/tune"]
    body = dict(receiver.received)
    assert body["/tune"]["status"] == "trained" and body["/tune"]["id"] == tune.id
    assert "artifact_location" not in body["/tune"]
    assert [p["id"] for p in body["/prompts"]] == [prompt.id]


def test_the_same_title_returns_the_same_tune_without_training_twice(runtime):
    first = runtime.studio.create_tune("alice", tune_request())
    second = runtime.studio.create_tune("alice", tune_request())
    other_owner = runtime.studio.create_tune("bob", tune_request())

    assert second.tune.id == first.tune.id and not second.created
    assert other_owner.created and other_owner.tune.id != first.tune.id
    assert runtime.worker.drain() == 2


def test_another_owner_sees_nothing_and_can_touch_nothing(runtime):
    studio = runtime.studio
    tune = studio.create_tune("alice", tune_request(prompts=[PromptCreate("{{subject}}", num_images=1)])).tune
    runtime.worker.drain()
    [prompt] = studio.list_prompts("alice", tune_id=tune.id)
    image_id = prompt.images[0].id

    for action in (
        lambda: studio.get_tune("bob", tune.id),
        lambda: studio.cancel_tune("bob", tune.id),
        lambda: studio.delete_tune("bob", tune.id),
        lambda: studio.create_prompt("bob", tune.id, PromptCreate("x")),
        lambda: studio.list_prompts("bob", tune_id=tune.id),
        lambda: studio.get_prompt("bob", prompt.id),
        lambda: studio.delete_prompt("bob", prompt.id),
        lambda: studio.like_image("bob", image_id),
        lambda: studio.image_file("bob", image_id),
    ):
        with pytest.raises(NotFoundError):
            action()
    assert studio.list_tunes("bob") == [] and studio.list_prompts("bob") == []
    assert studio.get_tune("alice", tune.id).status == "trained"
    assert not studio.get_prompt("alice", prompt.id).images[0].liked


def test_list_is_newest_first_with_limit_and_offset(runtime):
    for title in ("a", "b", "c"):
        runtime.studio.create_tune("alice", tune_request(title))
    titles = [t.title for t in runtime.studio.list_tunes("alice")]
    assert titles == ["c", "b", "a"]
    assert [t.title for t in runtime.studio.list_tunes("alice", limit=1, offset=1)] == ["b"]
    with pytest.raises(ValidationError, match="`limit`"):
        runtime.studio.list_tunes("alice", limit=0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"branch": "sd9"}, "branch"),
        ({"name": "r2d2"}, "name"),
        ({"token": "OH WX"}, "token"),
        ({"callback": "http://169.254.169.254/latest"}, "callback"),
        ({"prompts": [PromptCreate("{{subject}} with {{hat}}")]}, "prompts_attributes[0].text"),
        ({"images": PHOTOS[:2]}, "images"),
        ({"steps": 10**6}, "steps"),
        ({"characteristics": {"eye color": "blue"}}, "characteristics.eye color"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_written(runtime, changes, field):
    with pytest.raises(ValidationError) as error:
        runtime.studio.create_tune("alice", tune_request(**changes))
    assert error.value.field == field
    assert runtime.studio.list_tunes("alice") == []
    assert not (runtime.settings.data_dir / "photos").exists() or not any(
        (runtime.settings.data_dir / "photos").iterdir()
    )


def test_a_bad_photo_is_named_and_nothing_is_written(runtime):
    with pytest.raises(PhotoRejectedError, match=r"notes\.jpg"):
        runtime.studio.create_tune("alice", tune_request(images=[*PHOTOS[:3], ("notes.jpg", b"hello")]))
    assert runtime.studio.list_tunes("alice") == []


def test_without_credits_nothing_is_queued(runtime):
    runtime.db.set_credits("alice", tunes=1, images=2)
    with pytest.raises(InsufficientCreditsError, match="needs 1 tune credit"):
        runtime.studio.create_tune("alice", tune_request(prompts=[PromptCreate("{{subject}}", num_images=4)]))
    assert runtime.studio.list_tunes("alice") == []
    tune = runtime.studio.create_tune("alice", tune_request(prompts=[PromptCreate("{{subject}}", num_images=2)]))
    assert runtime.db.credits("alice") == (0, 0)
    with pytest.raises(InsufficientCreditsError):
        runtime.studio.create_prompt("alice", tune.tune.id, PromptCreate("{{subject}}", num_images=1))


def test_cancel_stops_a_queued_tune_and_fails_its_prompts(runtime):
    tune = runtime.studio.create_tune("alice", tune_request(prompts=[PromptCreate("{{subject}}")])).tune
    cancelled = runtime.studio.cancel_tune("alice", tune.id)

    assert cancelled.status == "cancelled"
    assert runtime.worker.drain() == 0
    [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
    assert prompt.status == "failed" and "cancelled" in prompt.error
    with pytest.raises(ConflictError):
        runtime.studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}"))


def test_likes_and_delete(runtime):
    studio = runtime.studio
    tune = studio.create_tune("alice", tune_request(prompts=[PromptCreate("{{subject}}", num_images=1)])).tune
    runtime.worker.drain()
    [prompt] = studio.list_prompts("alice", tune_id=tune.id)
    image = prompt.images[0]
    assert studio.like_image("alice", image.id).liked
    assert not studio.unlike_image("alice", image.id).liked

    image_path = studio.image_file("alice", image.id)
    studio.delete_tune("alice", tune.id)
    with pytest.raises(NotFoundError):
        studio.get_tune("alice", tune.id)
    assert image_path.exists(), "images outlive their tune unless asked"
    assert not studio.photos_dir(tune.id).exists()


def test_a_failing_callback_is_retried_then_given_up_and_never_fails_the_tune(runtime):
    receiver = Receiver(statuses=[500, 500, 500])
    try:
        tune = runtime.studio.create_tune("alice", tune_request(callback=f"{receiver.url}/tune")).tune
        runtime.worker.drain()  # first attempt: 500
        runtime.worker.callbacks.deliver_due()  # retry 1: 500
        runtime.worker.callbacks.deliver_due()  # retry 2: 500, out of retries
        runtime.worker.callbacks.deliver_due()  # nothing left to try
    finally:
        receiver.close()
    [delivery] = runtime.db.deliveries_for("alice", "tune", tune.id)
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("failed", 3, 500)
    assert len(receiver.received) == 3
    assert runtime.studio.get_tune("alice", tune.id).status == "trained"


def test_a_callback_that_fails_once_is_delivered_on_retry(runtime):
    receiver = Receiver(statuses=[503])
    try:
        tune = runtime.studio.create_tune("alice", tune_request(callback=f"{receiver.url}/tune")).tune
        runtime.worker.drain()
        runtime.worker.callbacks.deliver_due()
    finally:
        receiver.close()
    [delivery] = runtime.db.deliveries_for("alice", "tune", tune.id)
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 2, 200)


def test_work_left_running_by_a_dead_process_is_requeued_then_failed_after_three_tries(runtime):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    for attempt in (1, 2, 3):
        kind, claimed = queue.claim_next_job(runtime.db)  # "crash" right after claiming
        assert (kind, claimed.id, claimed.attempts) == ("tune", tune.id, attempt)
        reopened = Database(runtime.db.path)
        requeued, failed = queue.requeue_interrupted(reopened)
        reopened.close()
        assert (requeued, failed) == ((1, 0) if attempt < 3 else (0, 1))
    final = runtime.studio.get_tune("alice", tune.id)
    assert final.status == "failed" and "interrupted 3 times" in final.error


def test_tiny_branch_trains_a_real_lora_and_generates_with_it(runtime):
    studio = runtime.studio
    tune = studio.create_tune(
        "alice",
        tune_request(branch="tiny", steps=3, prompts=[PromptCreate("{{subject}} smiling", num_images=2, steps=2)]),
    ).tune
    runtime.worker.drain()

    tune = studio.get_tune("alice", tune.id)
    assert tune.status == "trained", tune.error
    assert tune.expires_at > tune.trained_at
    assert runtime.store.exists(tune.artifact_location)
    assert not studio.photos_dir(tune.id).exists(), "training photos are deleted once trained"
    [prompt] = studio.list_prompts("alice", tune_id=tune.id)
    assert prompt.status == "done" and len(prompt.images) == 2
    assert Image.open(studio.image_file("alice", prompt.images[0].id)).size == (128, 128)

    studio.delete_tune("alice", tune.id)
    assert not runtime.store.exists(tune.artifact_location), "deleting a tune deletes its LoRA"


def test_api_keys_are_shown_once_stored_hashed_and_revocable(runtime):
    studio = runtime.studio
    key = studio.create_api_key("alice")
    assert key.startswith("tsk_") and len(key) > 40
    assert studio.owner_for_api_key(key) == "alice"
    assert studio.owner_for_api_key(key + "x") is None and studio.owner_for_api_key("") is None
    [listed] = studio.list_api_keys("alice")
    assert key not in json.dumps(listed) and listed["prefix"] == key[:8]
    stored = b"".join(path.read_bytes() for path in runtime.db.path.parent.glob("tunes.db*"))  # with the WAL
    assert key[4:].encode() not in stored
    with pytest.raises(NotFoundError):
        studio.revoke_api_key("bob", listed["id"])
    studio.revoke_api_key("alice", listed["id"])
    assert studio.owner_for_api_key(key) is None


@pytest.fixture
def bare_studio(tmp_path):
    """A service without models or worker: keys and limits only (max 2 keys, 3 requests a minute)."""
    settings = Settings(data_dir=tmp_path / "data", max_api_keys=2, api_rate_per_minute=3)
    settings.data_dir.mkdir()
    db = Database(settings.data_dir / "tunes.db")
    yield Studio(settings, db)
    db.close()


def test_a_user_holds_at_most_max_api_keys_and_revoking_one_makes_room(bare_studio):
    studio = bare_studio
    first, _ = studio.create_api_key("alice"), studio.create_api_key("alice")
    with pytest.raises(ApiKeyLimitError) as refused:
        studio.create_api_key("alice")
    assert "TUNES_MAX_API_KEYS=2" in str(refused.value) and "revoke one" in str(refused.value)
    assert len(studio.list_api_keys("alice")) == 2, "nothing was created"
    assert studio.create_api_key("bob").startswith("tsk_"), "another user has keys of their own"
    [first_id] = [row["id"] for row in studio.list_api_keys("alice") if row["prefix"] == first[:8]]
    studio.revoke_api_key("alice", first_id)
    assert studio.owner_for_api_key(studio.create_api_key("alice")) == "alice"


def test_the_rate_is_one_bucket_per_user_whatever_the_keys(bare_studio):
    now = [0.0]
    studio = bare_studio
    studio.rate_limiter = RateLimiter(studio.settings.api_rate_per_minute, clock=lambda: now[0])
    for _ in range(3):
        studio.check_rate("alice")
    with pytest.raises(RateLimitedError) as limited:
        studio.check_rate("alice")
    assert limited.value.retry_after == 20  # 3 a minute: the next token in 20 s
    assert "rate limit" in str(limited.value) and "try again in 20 s" in str(limited.value)
    studio.check_rate("bob")  # another user is unaffected
    now[0] += 20.0
    studio.check_rate("alice")


def test_prompts_of_trained_tunes_run_before_queued_trainings(runtime):
    studio = runtime.studio
    first = studio.create_tune("alice", tune_request("first")).tune
    runtime.worker.drain()
    studio.create_tune("alice", tune_request("second"))
    studio.create_prompt("alice", first.id, PromptCreate("{{subject}}", num_images=1))
    kind, record = queue.claim_next_job(runtime.db)
    assert kind == "prompt" and record.tune_id == first.id
    kind, record = queue.claim_next_job(runtime.db)
    assert kind == "tune" and record.title == "second"


def test_photos_can_come_from_urls(runtime):
    served = {f"/p{i}.jpg": body for i, (_, body) in enumerate(PHOTOS)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = served[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        request = tune_request(images=[], image_urls=[f"{base}{path}" for path in served])
        created = runtime.studio.create_tune("alice", request)
    finally:
        server.shutdown()
    assert created.tune.orig_images == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"]
    assert len(list(runtime.studio.photos_dir(created.tune.id).glob("*.png"))) == 4


def test_photo_urls_to_private_addresses_are_refused(settings):
    runtime = open_runtime(settings, start_worker=False)  # no allowed hosts
    try:
        with pytest.raises(ValidationError) as error:
            runtime.studio.create_tune("alice", tune_request(images=PHOTOS[:3], image_urls=["http://127.0.0.1/x.jpg"]))
        assert error.value.field == "image_urls[0]"
        assert runtime.studio.list_tunes("alice") == []
    finally:
        runtime.close()


def test_a_tune_cancelled_while_training_stays_cancelled_and_keeps_no_lora(runtime):
    studio = runtime.studio
    tune = studio.create_tune("alice", tune_request(branch="tiny", steps=2)).tune
    kind, claimed = queue.claim_next_job(runtime.db)
    studio.cancel_tune("alice", tune.id)  # the user cancels while the worker trains
    runtime.worker.run(kind, claimed)

    final = studio.get_tune("alice", tune.id)
    assert final.status == "cancelled" and final.artifact_location is None
    assert not (runtime.settings.data_dir / "artifacts").exists() or not any(
        (runtime.settings.data_dir / "artifacts").iterdir()
    )
    assert not studio.training_dir(tune.id).exists() and not studio.photos_dir(tune.id).exists()


def test_a_prompt_deleted_while_generating_leaves_no_images(runtime):
    studio = runtime.studio
    tune = studio.create_tune("alice", tune_request()).tune
    runtime.worker.drain()
    prompt = studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", num_images=2))
    kind, claimed = queue.claim_next_job(runtime.db)
    studio.delete_prompt("alice", prompt.id)
    runtime.worker.run(kind, claimed)

    assert not studio.images_dir(prompt.id).exists()
    with pytest.raises(NotFoundError):
        studio.get_prompt("alice", prompt.id)


def test_a_trained_tune_cannot_be_cancelled(runtime):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    runtime.worker.drain()
    with pytest.raises(ConflictError, match="trained"):
        runtime.studio.cancel_tune("alice", tune.id)
    assert runtime.studio.get_tune("alice", tune.id).status == "trained"


def test_cancelling_sends_the_callbacks_and_deletes_the_photos(runtime, receiver):
    request = tune_request(
        callback=f"{receiver.url}/tune",
        prompts_callback=f"{receiver.url}/prompts",
        prompts=[PromptCreate("{{subject}}", callback=f"{receiver.url}/p")],
    )
    tune = runtime.studio.create_tune("alice", request).tune
    runtime.studio.cancel_tune("alice", tune.id)
    runtime.worker.callbacks.deliver_due()

    assert sorted(path for path, _ in receiver.received) == ["/p", "/prompts", "/tune"]
    assert dict(receiver.received)["/tune"]["status"] == "cancelled"
    assert not runtime.studio.photos_dir(tune.id).exists()


def test_a_tune_failed_after_three_interruptions_fails_its_prompts_and_calls_back(runtime, receiver):
    request = tune_request(callback=f"{receiver.url}/tune", prompts=[PromptCreate("{{subject}}")])
    tune = runtime.studio.create_tune("alice", request).tune
    for _ in range(3):
        queue.claim_next_job(runtime.db)
        queue.requeue_interrupted(runtime.db)
    runtime.worker.callbacks.deliver_due()

    [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
    assert prompt.status == "failed" and "interrupted 3 times" in prompt.error
    assert [(path, body["status"]) for path, body in receiver.received] == [("/tune", "failed")]


def test_photos_of_a_fast_tune_are_deleted_once_trained_and_a_random_seed_is_kept(runtime):
    tune = runtime.studio.create_tune("alice", tune_request(prompts=[PromptCreate("{{subject}}", num_images=2)])).tune
    assert len(list(runtime.studio.photos_dir(tune.id).glob("*.png"))) == 4
    runtime.worker.drain()
    assert not runtime.studio.photos_dir(tune.id).exists()
    [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
    assert prompt.seed is not None and [image.seed for image in prompt.images] == [prompt.seed, prompt.seed + 1]


def test_the_service_takes_photo_contents_not_server_paths(runtime):
    stolen = [str(runtime.settings.data_dir / "photos" / "1" / f"{i:02d}.png") for i in range(4)]
    with pytest.raises(ValidationError) as error:
        runtime.studio.create_tune("bob", tune_request(images=stolen))
    assert error.value.field == "images[0]"


def test_a_bad_prompt_callback_is_refused_before_anything_is_written(runtime):
    request = tune_request(prompts=[PromptCreate("{{subject}}", callback="http://10.0.0.7/hook")])
    with pytest.raises(ValidationError) as error:
        runtime.studio.create_tune("alice", request)
    assert error.value.field == "prompts_attributes[0].callback"
    assert runtime.studio.list_tunes("alice") == []


def test_a_missing_base_model_fails_the_tune_at_once_saying_which_setting_to_use(runtime):
    created = runtime.studio.create_tune("ann", tune_request("no sdxl", branch="sdxl1"))
    runtime.worker.drain()
    tune = runtime.studio.get_tune("ann", created.tune.id)
    assert tune.status == "failed" and tune.attempts == 1  # a permanent error is not retried
    assert "TUNES_BASE_MODEL_SDXL1" in tune.error
