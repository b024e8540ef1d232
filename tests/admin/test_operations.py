"""Operator use cases: the admin tables show what the worker and the disk really hold, and the actions
change any owner's records the way the owner-scoped use cases do. Non-admins get nothing."""

from __future__ import annotations

import io
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from admin.operations import Operations
from pipelines.errors import ValidationError
from pipelines.settings import Settings
from pipelines.train import LORA_WEIGHTS_NAME
from storage.artifacts import ModelCard
from storage.records import iso
from studio.errors import ConflictError, InsufficientCreditsError, NotFoundError, PermissionDeniedError
from studio.queue import claim_next_job, end_tune
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.conftest import astronaut_photos

ADMIN = "root"


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.resize((256, 256)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


PHOTOS = [(f"me-{i}.jpg", _jpeg(photo)) for i, photo in enumerate(astronaut_photos())]  # small: quick checks


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def runtime(tmp_path, clock):
    # the `fast` branch needs no model: no tiny model is built for these tests
    settings = Settings(data_dir=tmp_path / "data", device="cpu", admins=(ADMIN,))
    rt = open_runtime(settings, clock=clock, start_worker=False)
    yield rt
    rt.close()


@pytest.fixture
def ops(runtime):
    return Operations(runtime.studio, runtime.store)


def new_tune(runtime, owner: str, title: str, prompts: int = 0):
    request = TuneCreate(
        title=title,
        name="woman",
        images=PHOTOS,
        branch="fast",
        prompts=[PromptCreate(f"{{{{subject}}}} {title} {i}", num_images=1) for i in range(prompts)],
    )
    return runtime.studio.create_tune(owner, request).tune


def prompt_on(runtime, owner: str, tune_id: int, text: str = "{{subject}} again"):
    return runtime.studio.create_prompt(owner, tune_id, PromptCreate(text, num_images=1))


def with_lora(runtime, owner: str, tune_id: int, tmp_path: Path, *, expires_in_days: float = 30):
    """Give a trained fast-branch tune a stored LoRA and an expiry, the state a trained real tune has
    (the real training is covered by tests/studio; it is too slow to repeat here)."""
    lora = tmp_path / f"lora-{tune_id}"
    lora.mkdir()
    (lora / LORA_WEIGHTS_NAME).write_bytes(b"weights")
    location = runtime.store.put(str(tune_id), lora, ModelCard("mock", "sks woman", "fast", "test"))
    expires = runtime.studio.clock() + timedelta(days=expires_in_days)
    runtime.db.update_tune(owner, tune_id, artifact_location=location, expires_at=iso(expires))
    return location


def claimed_order(runtime) -> list[tuple[str, int]]:
    """Run the queue to the end the way the worker does, noting what it claims."""
    order = []
    while (job := claim_next_job(runtime.db, runtime.worker.worker_id)) is not None:
        order.append(("train" if job[0] == "tune" else "generate", job[1].id))
        runtime.worker.run(*job)
    return order


def test_the_queue_shows_jobs_in_the_order_the_worker_takes_them(runtime, ops):
    trained = new_tune(runtime, "alice", "first", prompts=1)
    runtime.worker.drain()
    second = new_tune(runtime, "bob", "second", prompts=1)  # its prompt waits for its training
    early = prompt_on(runtime, "alice", trained.id)  # prompts of trained tunes jump the training queue
    third = new_tune(runtime, "carol", "third", prompts=1)
    late = prompt_on(runtime, "alice", trained.id)

    queue = ops.queue(ADMIN)
    predicted = [(row["job"], row["id"]) for row in queue.to_dict("records")]
    assert list(queue["position"]) == [1, 2, 3, 4, 5, 6]
    assert set(queue["state"]) == {"queued"}
    assert predicted[:3] == [("generate", early.id), ("generate", late.id), ("train", second.id)]
    second_prompt, third_prompt = (runtime.studio.list_prompts(o)[0] for o in ("bob", "carol"))
    assert predicted[3:] == [("generate", second_prompt.id), ("train", third.id), ("generate", third_prompt.id)]
    assert claimed_order(runtime) == predicted
    assert ops.queue(ADMIN).empty


def test_the_running_training_shows_its_progress_and_eta(runtime, ops):
    tune = new_tune(runtime, "alice", "me", prompts=1)
    kind, record = claim_next_job(runtime.db)
    runtime.db.update_tune("alice", tune.id, progress=0.5, eta_seconds=90)

    running, waiting = ops.queue(ADMIN).to_dict("records")
    assert (running["position"], running["state"], running["job"], running["id"]) == (0, "running", "train", tune.id)
    assert (running["progress %"], running["ETA"], running["started (UTC)"]) == (50, "1 min 30 s", "2026-01-01 00:00")
    assert (waiting["position"], waiting["job"], waiting["tune"]) == (1, "generate", tune.id)
    runtime.worker.run(kind, record)


def test_prompts_of_a_dead_tune_are_listed_as_failing(runtime, ops):
    tune = new_tune(runtime, "alice", "me", prompts=1)
    runtime.worker.drain()
    waiting = prompt_on(runtime, "alice", tune.id)
    runtime.db.update_tune("alice", tune.id, status="failed")  # as a crash would leave it, before the backstop
    [row] = ops.queue(ADMIN).to_dict("records")
    assert row["id"] == waiting.id and row["position"] is None and row["state"] == "will fail (tune failed)"


def test_the_workers_table_tells_alive_dead_and_stopped_workers_apart(runtime, ops, clock):
    lease = runtime.settings.worker_lease_s
    for number, device in enumerate(["cuda:0", "cuda:1", "cpu"]):
        runtime.db.worker_started(f"w{number}", device=device, pid=100 + number, host="gpu-box")
    runtime.db.worker_heartbeat("w1", job="prompt 40", branches=["sd15", "fast"], done=2)
    runtime.db.worker_stopped("w2")
    clock.now += timedelta(seconds=lease + 15)  # w1 falls silent (killed, or hangs) while w0 keeps beating
    runtime.db.worker_heartbeat("w0", job="tune 12", branches=["fast"], done=3)
    clock.now += timedelta(seconds=lease)  # one lease exactly since w0's last heartbeat: not dead yet

    workers = ops.workers(ADMIN)
    assert list(workers.columns) == [
        "id", "device", "state", "job", "heartbeat (s ago)", "heartbeat (UTC)", "jobs done", "branches loaded",
        "pid", "host",
    ]  # fmt: skip
    alive, dead, stopped = workers.to_dict("records")
    assert alive == {
        "id": "w0",
        "device": "cuda:0",
        "state": "alive",
        "job": "tune 12",
        "heartbeat (s ago)": lease,
        "heartbeat (UTC)": "2026-01-01 00:00:45",
        "jobs done": 3,
        "branches loaded": "fast",
        "pid": 100,
        "host": "gpu-box",
    }
    silent = 2 * lease + 15
    assert (dead["id"], dead["state"], dead["job"]) == ("w1", f"dead (no heartbeat for {silent} s)", "prompt 40")
    assert (dead["heartbeat (s ago)"], dead["heartbeat (UTC)"]) == (silent, "2026-01-01 00:00:00")
    assert (dead["jobs done"], dead["branches loaded"]) == (2, "sd15, fast")
    assert (stopped["id"], stopped["state"], stopped["job"]) == ("w2", "stopped", None), "a stopped worker runs nothing"

    clock.now += timedelta(seconds=1)
    assert ops.workers(ADMIN)["state"].tolist()[0] == f"dead (no heartbeat for {lease + 1} s)"
    runtime.db.worker_started("w1", device="cuda:1", pid=200, host="gpu-box")  # its restart
    assert ops.overview(ADMIN).workers.set_index("id").loc["w1", "state"] == "alive"


def test_the_workers_table_is_empty_until_a_worker_starts(runtime, ops):
    assert ops.workers(ADMIN).empty
    runtime.worker.start()  # a worker thread of this process (`python -m studio.worker` writes the same row)
    try:
        [row] = ops.workers(ADMIN).to_dict("records")
    finally:
        runtime.worker.stop()
    assert (row["id"], row["device"], row["state"], row["job"]) == ("local", "cpu", "alive", None)
    assert row["pid"] == os.getpid() and row["host"] == socket.gethostname()


def test_the_tunes_and_prompts_tables_cover_every_owner(runtime, ops):
    done = new_tune(runtime, "alice", "done", prompts=1)
    runtime.worker.drain()
    waiting = new_tune(runtime, "bob", "waiting", prompts=2)

    tunes = ops.tunes(ADMIN)
    assert list(tunes.columns[:7]) == ["id", "owner", "title", "class", "branch", "status", "progress %"]
    assert list(tunes["id"]) == [waiting.id, done.id]
    first = tunes.iloc[1]
    assert (first["owner"], first["class"], first["status"], first["progress %"]) == ("alice", "woman", "trained", 100)
    assert first["created (UTC)"] == "2026-01-01 00:00" and first["expires (UTC)"] is None
    assert list(ops.tunes(ADMIN, status="queued")["owner"]) == ["bob"]
    assert len(ops.tunes(ADMIN, limit=1)) == 1

    prompts = ops.prompts(ADMIN)
    assert list(prompts["owner"]) == ["bob", "bob", "alice"]
    assert prompts.iloc[2]["images"] == "1/1" and prompts.iloc[2]["status"] == "done"
    assert prompts.iloc[2]["prompt"] == "sks woman done 0"
    assert len(ops.prompts(ADMIN, tune_id=waiting.id, status="queued")) == 2

    with pytest.raises(ValidationError, match=r"`status`.*'bogus'"):
        ops.tunes(ADMIN, status="bogus")
    with pytest.raises(ValidationError, match="`limit`"):
        ops.prompts(ADMIN, limit=0)


def test_users_show_what_they_own_and_their_credits(runtime, ops):
    new_tune(runtime, "alice", "me", prompts=2)
    runtime.worker.drain()
    runtime.db.set_credits("bob", tunes=3, images=None)

    users = {row["user"]: row for row in ops.users(ADMIN).to_dict("records")}
    assert users["alice"] == {
        "user": "alice",
        "admin": "no",
        "tunes": 1,
        "prompts": 2,
        "images": 2,
        "tune credits": "unlimited",
        "image credits": "unlimited",
    }
    assert (users["bob"]["tunes"], users["bob"]["tune credits"], users["bob"]["image credits"]) == (0, 3, "unlimited")


def made_images(runtime, owner: str, tune_id: int, likeness: list[float | None], *, pack: str | None = None,
                key: str | None = None, liked: int = 0) -> None:  # fmt: skip
    """A prompt (from pack prompt `key` of `pack`, when given) with images of these likenesses, the first `liked`
    of them liked by their owner: the records a worker leaves."""
    request = PromptCreate("{{subject}} at work", num_images=1, pack_id=pack, pack_prompt=key)
    prompt = runtime.studio.create_prompt(owner, tune_id, request)
    with runtime.db.transaction() as conn:
        ids = [
            runtime.db.insert_image(
                conn, owner, prompt.id, path=f"made-{prompt.id}-{i}.png", seed=i, width=64, height=64, likeness=value
            )
            for i, value in enumerate(likeness)
        ]
    for image_id in ids[:liked]:
        runtime.studio.like_image(owner, image_id)


def test_pack_prompts_show_images_likes_and_the_likeness_of_every_owners_images(runtime, ops):
    headshots = "corporate-headshots"
    alice, bob = new_tune(runtime, "alice", "me").id, new_tune(runtime, "bob", "me").id
    made_images(runtime, "alice", alice, [i / 10 for i in range(11)] + [None], pack=headshots, key="woman/0", liked=2)
    made_images(runtime, "alice", alice, [0.9, 0.3], pack=headshots, key="woman/2")
    made_images(runtime, "bob", bob, [0.8, 0.6], pack=headshots, key="woman/2", liked=1)  # same prompt, two owners
    made_images(runtime, "bob", bob, [None, None], pack=headshots, key="woman/10")  # no face found; prompt removed
    made_images(runtime, "bob", bob, [0.4], pack="fantasy", key="woman/1")
    made_images(runtime, "alice", alice, [0.95])  # a free prompt: not a pack's

    table = ops.pack_prompts(ADMIN)

    assert list(table.columns) == [
        "pack", "prompt", "text", "images", "likes", "with likeness", "mean likeness", "p10", "median", "p90"
    ]  # fmt: skip
    rows = {(row["pack"], row["prompt"]): row for row in table.to_dict("records")}
    order = [(headshots, "woman/0"), (headshots, "woman/2"), (headshots, "woman/10"), ("fantasy", "woman/1")]
    assert list(rows) == order, "by pack, then prompt number (10 after 2)"
    spread = [rows[headshots, "woman/0"][name] for name in ("images", "likes", "with likeness")]
    assert spread == [12, 2, 11]
    # 0.0, 0.1 … 1.0: the 10th, 50th and 90th percentiles are the 2nd, 6th and 10th values
    summary = [rows[headshots, "woman/0"][name] for name in ("mean likeness", "p10", "median", "p90")]
    assert summary == [0.5, 0.1, 0.5, 0.9]
    # 0.3 0.6 0.8 0.9 from two owners: linear interpolation between the sorted values
    mixed = rows[headshots, "woman/2"]
    assert [mixed[name] for name in ("images", "likes", "with likeness")] == [4, 1, 4]
    assert [mixed[name] for name in ("mean likeness", "p10", "median", "p90")] == [0.65, 0.39, 0.7, 0.87]
    unscored = rows[headshots, "woman/10"]
    assert (unscored["images"], unscored["with likeness"], unscored["text"]) == (2, 0, None)
    assert [unscored[name] for name in ("mean likeness", "p10", "median", "p90")] == [None] * 4, "blank, not NaN"
    text = runtime.studio.get_pack(headshots).prompts["woman"][0].text
    assert rows[headshots, "woman/0"]["text"] == (text if len(text) <= 80 else text[:79] + "…")
    assert rows["fantasy", "woman/1"]["median"] == 0.4
    assert ops.overview(ADMIN).pack_prompts.equals(table)


def test_storage_adds_up_the_files_under_the_data_folder(runtime, ops, tmp_path):
    tune = new_tune(runtime, "alice", "me", prompts=1)
    photos_bytes = sum(path.stat().st_size for path in runtime.studio.photos_dir(tune.id).iterdir())
    runtime.worker.drain()
    with_lora(runtime, "alice", tune.id, tmp_path)

    storage = ops.storage(ADMIN).set_index("what")
    [prompt] = runtime.studio.list_prompts("alice")
    image_bytes = Path(prompt.images[0].path).stat().st_size
    assert photos_bytes > 0 and storage.loc["training photos", "bytes"] == 0, "photos go once trained"
    assert storage.loc["generated images", "bytes"] == image_bytes
    assert storage.loc["generated images", "files"] == 1
    assert storage.loc["LoRAs", "bytes"] > len(b"weights")  # weights and the model card
    assert storage.loc["database", "bytes"] > 0
    assert storage.loc["total", "bytes"] == storage.drop(index="total")["bytes"].sum()
    assert storage.loc["generated images", "size"].endswith(("B", "KiB"))


def test_expiries_due_lists_trained_loras_expiring_soon(runtime, ops, tmp_path):
    soon, later = new_tune(runtime, "alice", "soon"), new_tune(runtime, "bob", "later")
    runtime.worker.drain()
    with_lora(runtime, "alice", soon.id, tmp_path, expires_in_days=2.5)
    with_lora(runtime, "bob", later.id, tmp_path, expires_in_days=20)

    [row] = ops.expiries_due(ADMIN).to_dict("records")
    assert (row["id"], row["owner"], row["days left"], row["auto extend"]) == (soon.id, "alice", 2.5, "no")
    assert list(ops.expiries_due(ADMIN, within_days=30)["id"]) == [soon.id, later.id]
    with pytest.raises(ValidationError, match="`within_days`"):
        ops.expiries_due(ADMIN, within_days=-1)


def test_cancel_stops_another_owners_queued_tune(runtime, ops):
    tune = new_tune(runtime, "alice", "me", prompts=1)
    cancelled = ops.cancel(ADMIN, tune.id)
    assert cancelled.status == "cancelled" and cancelled.owner == "alice"
    assert runtime.worker.drain() == 0
    [prompt] = runtime.studio.list_prompts("alice")
    assert prompt.status == "failed"
    with pytest.raises(ConflictError, match="only queued or training"):
        ops.cancel(ADMIN, tune.id)
    with pytest.raises(NotFoundError):
        ops.cancel(ADMIN, 999)


def test_retry_makes_a_failed_prompt_complete(runtime, ops, monkeypatch):
    tune = new_tune(runtime, "alice", "me")
    runtime.worker.drain()
    prompt = prompt_on(runtime, "alice", tune.id)
    real = runtime.generator.generate

    def broken(*args, **kwargs):
        raise ConflictError("the GPU fell over")

    monkeypatch.setattr(runtime.generator, "generate", broken)
    runtime.worker.run_once()
    assert runtime.studio.get_prompt("alice", prompt.id).status == "failed"
    monkeypatch.setattr(runtime.generator, "generate", real)

    runtime.studio.work_available.clear()
    queued = ops.retry(ADMIN, "prompt", prompt.id)
    assert (queued.status, queued.attempts, queued.error) == ("queued", 0, None)
    assert runtime.studio.work_available.is_set(), "the worker is woken"
    assert runtime.worker.run_once()
    done = runtime.studio.get_prompt("alice", prompt.id)
    assert done.status == "done" and len(done.images) == 1
    with pytest.raises(ConflictError, match="only failed prompts"):
        ops.retry(ADMIN, "prompt", prompt.id)


def test_retry_refuses_a_prompt_whose_lora_expired(runtime, ops, tmp_path):
    tune = new_tune(runtime, "alice", "me")
    runtime.worker.drain()
    with_lora(runtime, "alice", tune.id, tmp_path)
    prompt = prompt_on(runtime, "alice", tune.id)
    ops.expire_now(ADMIN, tune.id)
    with pytest.raises(ConflictError, match=f"its tune {tune.id} is expired"):
        ops.retry(ADMIN, "prompt", prompt.id)
    with pytest.raises(ValidationError, match="`kind`"):
        ops.retry(ADMIN, "image", prompt.id)


def test_retry_trains_a_failed_tune_again_while_its_photos_exist(runtime, ops):
    tune = new_tune(runtime, "alice", "me", prompts=1)
    # a tune failed after three interrupted runs keeps its photos (nothing else cleaned up after it)
    end_tune(runtime.db, "alice", tune.id, "failed", from_statuses=("queued",), error="interrupted 3 times")
    assert runtime.studio.list_prompts("alice")[0].status == "failed"

    queued = ops.retry(ADMIN, "tune", tune.id)
    assert (queued.status, queued.error, queued.attempts) == ("queued", None, 0)
    runtime.worker.drain()
    assert runtime.studio.get_tune("alice", tune.id).status == "trained"
    [prompt] = runtime.studio.list_prompts("alice")
    assert prompt.status == "done", "the prompts its failure failed run with it"


def test_retry_of_a_tune_without_photos_says_to_create_it_again(runtime, ops):
    tune = new_tune(runtime, "alice", "me")
    ops.cancel(ADMIN, tune.id)  # a cancelled queued tune loses its photos
    with pytest.raises(ConflictError, match=r"photos were deleted.*alice must create the tune again"):
        ops.retry(ADMIN, "tune", tune.id)
    assert runtime.studio.get_tune("alice", tune.id).status == "cancelled"


def test_extend_pushes_the_expiry_of_trained_tunes_only(runtime, ops, tmp_path, clock):
    tune = new_tune(runtime, "alice", "me")
    runtime.worker.drain()
    with_lora(runtime, "alice", tune.id, tmp_path, expires_in_days=3)
    assert ops.extend(ADMIN, tune.id, 10).expires_at == "2026-01-14T00:00:00+00:00"

    clock.now += timedelta(days=20)  # overdue (the sweep has not run yet): counted from now
    assert ops.extend(ADMIN, tune.id, 1).expires_at == "2026-01-22T00:00:00+00:00"
    with pytest.raises(ValidationError, match=r"`days`.*0"):
        ops.extend(ADMIN, tune.id, 0)
    waiting = new_tune(runtime, "bob", "waiting")
    with pytest.raises(ConflictError, match="only trained tunes"):
        ops.extend(ADMIN, waiting.id, 5)


def test_expire_now_deletes_the_lora_and_fails_waiting_prompts(runtime, ops, tmp_path):
    tune = new_tune(runtime, "alice", "me", prompts=1)
    runtime.worker.drain()
    location = with_lora(runtime, "alice", tune.id, tmp_path)
    [done] = runtime.studio.list_prompts("alice")
    waiting = prompt_on(runtime, "alice", tune.id)

    expired = ops.expire_now(ADMIN, tune.id)
    assert expired.status == "expired" and expired.expires_at == "2026-01-01T00:00:00+00:00"
    assert not Path(location).exists() and not runtime.store.exists(location)
    failed = runtime.studio.get_prompt("alice", waiting.id)
    assert failed.status == "failed" and "expired" in failed.error
    assert runtime.studio.image_file("alice", done.images[0].id).exists(), "images are kept"
    with pytest.raises(ConflictError, match="only trained tunes"):
        ops.expire_now(ADMIN, tune.id)


def test_delete_removes_another_owners_tune(runtime, ops):
    tune = new_tune(runtime, "alice", "me", prompts=1)
    runtime.worker.drain()
    deleted = ops.delete(ADMIN, tune.id, delete_images=True)
    assert deleted.id == tune.id and deleted.owner == "alice"
    with pytest.raises(NotFoundError):
        runtime.studio.get_tune("alice", tune.id)
    assert ops.users(ADMIN).set_index("user").loc["alice", "images"] == 0


def test_grant_credits_lets_a_user_without_credits_create_a_tune(runtime, ops):
    runtime.db.set_credits("bob", tunes=0, images=0)
    with pytest.raises(InsufficientCreditsError):
        new_tune(runtime, "bob", "me", prompts=1)

    credits = ops.grant_credits(ADMIN, "bob", 1, 2)
    assert (credits.tunes, credits.images) == (1, 2)
    assert str(credits) == "bob has 1 tune credit(s) and 2 image credit(s)"
    new_tune(runtime, "bob", "me", prompts=1)
    assert runtime.db.credits("bob") == (0, 1)


def test_unlimited_credits_stay_unlimited_unless_set(runtime, ops):
    assert ops.grant_credits(ADMIN, "alice", tunes=5).tunes is None
    limited = ops.set_credits(ADMIN, "alice", tunes=2, images=None)
    assert (limited.tunes, limited.images) == (2, None)
    assert ops.grant_credits(ADMIN, "alice", tunes=1, images=4).tunes == 3
    assert ops.users(ADMIN).set_index("user").loc["alice", "image credits"] == "unlimited"
    with pytest.raises(ValidationError, match=r"`images`.*'2'"):
        ops.grant_credits(ADMIN, "alice", 1, "2")
    with pytest.raises(ValidationError, match=r"`tunes`.*-1"):
        ops.grant_credits(ADMIN, "alice", -1, 0)
    with pytest.raises(ValidationError, match="`user`"):
        ops.grant_credits(ADMIN, " ", 1, 0)


CALLS = {
    "overview": lambda ops, user: ops.overview(user),
    "tunes": lambda ops, user: ops.tunes(user),
    "prompts": lambda ops, user: ops.prompts(user),
    "queue": lambda ops, user: ops.queue(user),
    "workers": lambda ops, user: ops.workers(user),
    "users": lambda ops, user: ops.users(user),
    "storage": lambda ops, user: ops.storage(user),
    "expiries_due": lambda ops, user: ops.expiries_due(user),
    "pack_prompts": lambda ops, user: ops.pack_prompts(user),
    "dashboard": lambda ops, user: ops.dashboard(user),
    "table": lambda ops, user: ops.table(user, "tunes"),
    "describe": lambda ops, user: ops.describe(user, "tune", 1),
    "question": lambda ops, user: ops.question(user, "delete", 1),
    "block_image": lambda ops, user: ops.block_image(user, 1),
    "cancel": lambda ops, user: ops.cancel(user, 1),
    "retry": lambda ops, user: ops.retry(user, "tune", 1),
    "extend": lambda ops, user: ops.extend(user, 1, 5),
    "expire_now": lambda ops, user: ops.expire_now(user, 1),
    "delete": lambda ops, user: ops.delete(user, 1),
    "grant_credits": lambda ops, user: ops.grant_credits(user, "bob", 100, 100),
    "set_credits": lambda ops, user: ops.set_credits(user, "bob", tunes=None, images=None),
}


def test_every_method_refuses_non_admins_and_changes_nothing(runtime, ops):
    tune = new_tune(runtime, "alice", "me", prompts=1)
    runtime.db.set_credits("bob", tunes=0, images=0)
    assert tune.id == 1
    for name, call in CALLS.items():
        with pytest.raises(PermissionDeniedError, match="'bob' is not an admin"):
            call(ops, "bob")
        assert runtime.studio.get_tune("alice", tune.id).status == "queued", name
    assert runtime.db.credits("bob") == (0, 0)
    public = {name for name in dir(Operations) if not name.startswith("_")}
    assert public == set(CALLS), "every public method is checked here"
