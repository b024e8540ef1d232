"""Storage that fails under the studio: a full disk, a locked database, a Hugging Face Hub that errors.

What a user must see each time: a clear error (or a short wait), nothing half-made (no tune row, no photo
folder, no credits spent, no empty Hub repo), and the same request working once the fault is gone.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from starlette.testclient import TestClient

from admin.scheduler import sweep
from pipelines.errors import ArtifactError
from pipelines.train import LORA_WEIGHTS_NAME
from rest.routes import build_rest_api
from storage.artifacts import RetryPolicy
from studio import outages
from studio import worker as worker_module
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.fakehub import FAKE_TOKEN, FakeHubHandler, fake_hub_fixture  # noqa: F401 (registers `fake_hub`)
from tests.studio.test_service import PHOTOS
from ui.feedback import FieldErrors, user_errors

ROOT = Path(__file__).resolve().parents[2]
ONE_PHOTO = PHOTOS[:1]  # with TUNES_MIN_PHOTOS=1: photo checks are not what these tests are about


@pytest.fixture
def settings(settings):
    return settings.with_overrides(min_photos=1)


def tune_request(title: str = "me", **changes) -> TuneCreate:
    fields = {"title": title, "name": "woman", "images": ONE_PHOTO, "branch": "fast", **changes}
    return TuneCreate(**fields)


def is_empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    """An error as SQLite raises it: its message and result code (5 SQLITE_BUSY, 13 SQLITE_FULL)."""
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


class DiskFull:
    """The data folder's disk fills up: `room` more files fit under `folder`, then creating a file or a folder
    there fails with ENOSPC, as the OS reports a full disk (`code=errno.EROFS`: the disk turned read-only;
    tests run as root, so permissions cannot refuse a write). Reads, and the database, still work.

    Patched where every write of the product starts: `open` for writing (Pillow's `Image.save`, `Path.write_*`,
    `shutil.copy`) and `os.mkdir` (`Path.mkdir`, `tempfile.mkdtemp`)."""

    def __init__(self, folder: Path, room: int = 0, *, code: int = errno.ENOSPC):
        self.folder = folder.resolve()
        self.room = room
        self.code = code
        self.refused: list[str] = []

    def _take(self, path: object, *, is_file: bool) -> None:
        target = Path(os.fsdecode(path)).resolve()
        if not target.is_relative_to(self.folder):
            return
        if self.room > 0:
            self.room -= int(is_file)
            return
        self.refused.append(str(target))
        raise OSError(self.code, os.strerror(self.code), str(target))

    @contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[DiskFull]:
        real_open, real_mkdir = builtins.open, os.mkdir

        def open_(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and any(flag in mode for flag in "wax+"):
                self._take(file, is_file=True)
            return real_open(file, mode, *args, **kwargs)

        def mkdir(path, *args, **kwargs):
            if not Path(os.fsdecode(path)).exists():
                self._take(path, is_file=False)
            return real_mkdir(path, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(builtins, "open", open_)
            patch.setattr(io, "open", open_)
            patch.setattr(os, "mkdir", mkdir)
            yield self


@pytest.fixture
def runtime(settings):
    rt = open_runtime(settings, start_worker=False)
    yield rt
    rt.close()


# -- (a) a full disk -------------------------------------------------------------------------------------------


def test_a_full_disk_refuses_a_new_tune_cleanly_and_the_same_request_works_once_space_is_back(runtime, monkeypatch):
    studio = runtime.studio
    runtime.db.set_credits("alice", tunes=1, images=2)
    request = tune_request(images=PHOTOS, prompts=[PromptCreate("{{subject}} as a pilot", num_images=2)])
    photos_root = studio.settings.data_dir / "photos"

    disk = DiskFull(studio.settings.data_dir, room=1)  # room for one photo of four
    with disk.installed(monkeypatch), pytest.raises(OSError) as error:
        studio.create_tune("alice", request)
    assert error.value.errno == errno.ENOSPC and disk.refused

    assert studio.list_tunes("alice") == [] and studio.list_prompts("alice") == [], "no tune or prompt row"
    assert studio.credits("alice") == (1, 2), "no credits spent"
    assert is_empty(photos_root), "no photo folder, not even a staging one"

    created = studio.create_tune("alice", request)
    assert created.created and studio.credits("alice") == (0, 0)
    assert len(list(studio.photos_dir(created.tune.id).glob("*.png"))) == 4


def test_over_rest_a_full_disk_is_a_507_that_says_so_and_writes_nothing(runtime, monkeypatch):
    studio = runtime.studio
    key = studio.create_api_key("alice")
    client = TestClient(build_rest_api(studio), headers={"Authorization": f"Bearer {key}"})
    fields = {"tune[title]": "Me", "tune[name]": "woman", "tune[branch]": "fast"}
    files = [("tune[images][]", (name, data, "image/jpeg")) for name, data in ONE_PHOTO]

    with DiskFull(studio.settings.data_dir).installed(monkeypatch):
        refused = client.post("/tunes", data=fields, files=files)
    assert refused.status_code == 507, refused.text
    message = refused.json()["error"]
    assert message == "the server is out of disk space; try again later", "no server paths in the answer"
    assert client.get("/tunes").json() == [] and is_empty(studio.settings.data_dir / "photos"), "nothing written"

    assert client.post("/tunes", data=fields, files=files).status_code == 201


def test_a_full_disk_while_saving_images_retries_the_prompt_which_then_has_exactly_its_images(runtime, monkeypatch):
    studio = runtime.studio
    tune = studio.create_tune("alice", tune_request()).tune
    runtime.worker.drain()
    prompt = studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", num_images=3, seed=11))

    with DiskFull(studio.settings.data_dir, room=1).installed(monkeypatch):  # one image of three fits
        assert runtime.worker.run_once()
    waiting = studio.get_prompt("alice", prompt.id)
    assert waiting.status == "queued" and waiting.images == [], "put back in the queue, no images yet"
    assert "No space left on device" in waiting.error

    runtime.worker.drain()  # space is back
    done = studio.get_prompt("alice", prompt.id)
    assert done.status == "done" and done.error is None
    assert [image.seed for image in done.images] == [11, 12, 13], "exactly its images, none twice"
    files = sorted(path.name for path in studio.images_dir(prompt.id).iterdir())
    assert files == sorted(Path(image.path).name for image in done.images), "no half-written files left"


def test_a_disk_that_stays_full_fails_the_prompt_with_the_reason_and_leaves_no_partial_images(runtime, monkeypatch):
    studio = runtime.studio
    tune = studio.create_tune("alice", tune_request()).tune
    runtime.worker.drain()
    prompt = studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", num_images=3))

    with DiskFull(studio.settings.data_dir, room=1).installed(monkeypatch):
        runtime.worker.drain()
    failed = studio.get_prompt("alice", prompt.id)
    assert failed.status == "failed" and failed.attempts == 3 and "No space left on device" in failed.error
    assert str(studio.settings.data_dir) not in failed.error, "the owner sees the reason, not the server's paths"
    assert is_empty(studio.images_dir(prompt.id)), "no partial images left on the full disk"

    later = studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", num_images=2))
    runtime.worker.drain()
    assert len(studio.get_prompt("alice", later.id).images) == 2, "the next prompt works once space is back"


def test_a_data_folder_turned_read_only_refuses_writes_with_503_and_reads_go_on(runtime, monkeypatch):
    studio = runtime.studio
    key = studio.create_api_key("alice")
    client = TestClient(build_rest_api(studio), headers={"Authorization": f"Bearer {key}"})
    fields = {"tune[title]": "Me", "tune[name]": "woman", "tune[branch]": "fast"}
    files = [("tune[images][]", (name, data, "image/jpeg")) for name, data in ONE_PHOTO]
    kept = client.post("/tunes", data={**fields, "tune[title]": "Kept"}, files=files).json()

    with DiskFull(studio.settings.data_dir, code=errno.EROFS).installed(monkeypatch):
        refused = client.post("/tunes", data=fields, files=files)
        listed = client.get("/tunes")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == outages.UNWRITABLE, "says what is wrong, names no server path"
    assert listed.status_code == 200 and [tune["id"] for tune in listed.json()] == [kept["id"]], "reads go on"
    assert is_empty(studio.photos_dir(kept["id"] + 1)), "nothing written for the refused tune"


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/srv/data/photos/7/0.png"), "out of disk space"),
        (OSError(errno.EROFS, "Read-only file system", "/srv/data/tunes.db"), "cannot write to its data folder"),
        (sqlite_error("database is locked", 5), "database is busy"),
    ],
)
def test_the_ui_says_what_storage_trouble_is_without_server_paths(error, shown):
    def create_tune():
        raise error

    with pytest.raises(gr.Error) as raised:
        user_errors(create_tune)()
    assert shown in raised.value.message and "/srv/data" not in raised.value.message

    with gr.Blocks():
        form = FieldErrors(gr.Markdown(), {"title": gr.Textbox(info="A name")})
    banner = form.show(error)[form.banner]
    assert shown in banner["value"] and "/srv/data" not in banner["value"]


def test_a_bug_is_not_passed_off_as_storage_trouble():
    def create_tune():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/data/models/x")

    with pytest.raises(FileNotFoundError):
        user_errors(create_tune)()


def test_a_server_whose_data_folder_cannot_be_written_will_not_start_and_names_the_setting(tmp_path):
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the data folder should be")
    env = {**os.environ, "TUNES_DATA_DIR": str(not_a_folder), "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert "Tune Studio cannot start: `TUNES_DATA_DIR` must be a folder this server can write to" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert not_a_folder.read_text().startswith("a file"), "left as it was"


# -- (b) a locked database -------------------------------------------------------------------------------------


@contextmanager
def exclusive_lock(path: Path) -> Iterator[threading.Event]:
    """Another process's connection holds `BEGIN EXCLUSIVE` on the database until the yielded event is set."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(timeout=60)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert locked.wait(timeout=10)
    try:
        yield release
    finally:
        release.set()
        holder.join(timeout=10)


def test_a_create_during_a_short_exclusive_lock_waits_for_it_and_succeeds(runtime):
    studio = runtime.studio
    released_at: list[float] = []
    with exclusive_lock(runtime.db.path) as release:

        def release_soon() -> None:
            time.sleep(0.5)  # how long the other process keeps its lock; shorter than the 30 s busy timeout
            released_at.append(time.monotonic())
            release.set()

        threading.Thread(target=release_soon, daemon=True).start()
        created = studio.create_tune("alice", tune_request())
        finished_at = time.monotonic()
    assert created.created and finished_at >= released_at[0], "it waited for the lock instead of failing"
    assert [tune.id for tune in studio.list_tunes("alice")] == [created.tune.id]


def test_a_lock_held_past_the_busy_timeout_fails_the_create_and_writes_nothing(settings, monkeypatch):
    connect = sqlite3.connect
    monkeypatch.setattr(
        "storage.db.sqlite3.connect", lambda *args, **kwargs: connect(*args, **{**kwargs, "timeout": 0.2})
    )  # the real busy timeout is 30 s; the same path, shorter
    runtime = open_runtime(settings, start_worker=False)
    try:
        studio = runtime.studio
        key = studio.create_api_key("alice")
        runtime.db.set_credits("alice", tunes=1, images=0)
        client = TestClient(build_rest_api(studio), headers={"Authorization": f"Bearer {key}"})
        fields = {"tune[title]": "Me", "tune[name]": "woman", "tune[branch]": "fast"}
        files = [("tune[images][]", (name, data, "image/jpeg")) for name, data in ONE_PHOTO]
        with exclusive_lock(runtime.db.path):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                studio.create_tune("alice", tune_request())
            busy = client.post("/tunes", data=fields, files=files)
        assert busy.status_code == 503 and "Retry-After" in busy.headers, busy.text
        assert "database is busy" in busy.json()["error"] and "try again" in busy.json()["error"]

        assert studio.list_tunes("alice") == [] and studio.credits("alice") == (1, 0)
        assert is_empty(studio.settings.data_dir / "photos")
        assert client.post("/tunes", data=fields, files=files).status_code == 201, "a retry works"
    finally:
        runtime.close()


class FailingCommit:
    """The database connection, except that the next COMMIT fails as SQLite says when the disk fills up then."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self.armed = True

    def execute(self, sql: str, *args):
        if sql == "COMMIT" and self.armed:
            self.armed = False
            raise sqlite_error("database or disk is full", 13)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def test_a_commit_that_fails_leaves_no_tune_no_photos_and_the_database_usable(runtime, monkeypatch):
    studio = runtime.studio
    runtime.db.set_credits("alice", tunes=1, images=0)
    monkeypatch.setattr(runtime.db, "_conn", FailingCommit(runtime.db._conn))

    with pytest.raises(sqlite3.OperationalError, match="full"):
        studio.create_tune("alice", tune_request())
    assert studio.list_tunes("alice") == [] and studio.credits("alice") == (1, 0), "no row, no credits spent"
    assert is_empty(studio.settings.data_dir / "photos"), "the photos stored just before the commit are gone"

    created = studio.create_tune("alice", tune_request())  # the connection is not left inside a transaction
    assert created.created and [t.id for t in studio.list_tunes("alice")] == [created.tune.id]


# -- (c) the Hugging Face Hub fails ----------------------------------------------------------------------------


def _instant_training(settings, checked, request, output_dir, *, on_progress=None, should_cancel=None):
    """Stands in for `train_tune`: these tests are about the push to the Hub, not about training."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / LORA_WEIGHTS_NAME).write_bytes(b"lora weights")
    return SimpleNamespace(output_dir=output_dir, metadata={"instance_prompt": f"{request.resolved_token} woman"})


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def open_hub_runtime(settings, monkeypatch, *, attempts: int = 3, **overrides):
    """A studio that keeps LoRAs in private repos on the fake Hub, with instant training, a settable clock
    (`rt.clock.now`) and Hub retries that wait no real time (the waits asked for are in `rt.waits`)."""
    monkeypatch.setattr(worker_module, "train_tune", _instant_training)
    monkeypatch.setattr(worker_module.InProcessWorker, "_samples", lambda self, tune, lora_dir, prompt: ())
    clock = Clock()
    hub = settings.with_overrides(hf_token=FAKE_TOKEN, hub_namespace="studio", **overrides)
    rt = open_runtime(hub, start_worker=False, clock=clock)
    rt.waits = []
    rt.clock = clock
    rt.store.retry = RetryPolicy(attempts=attempts, base_delay=1.0, max_delay=8.0, sleep=rt.waits.append)
    return rt


@pytest.fixture
def hub_runtime(settings, fake_hub, monkeypatch):
    rt = open_hub_runtime(settings, monkeypatch)
    yield rt
    rt.close()


def hub_tune(rt, title: str = "me"):
    return rt.studio.create_tune("alice", tune_request(title, branch="tiny", steps=1)).tune


def test_a_500_from_the_hub_is_retried_and_the_tune_trains(hub_runtime, fake_hub):
    fake_hub.fail_next("/api/repos/create", status=500)
    tune = hub_tune(hub_runtime)
    hub_runtime.worker.drain()

    tune = hub_runtime.studio.get_tune("alice", tune.id)
    assert tune.status == "trained" and tune.attempts == 1, tune.error
    assert hub_runtime.waits == [1.0] and len(fake_hub.calls("POST", "/api/repos/create")) == 2
    repo = fake_hub.repos[tune.artifact_location.removeprefix("hub://")]
    assert repo.private and LORA_WEIGHTS_NAME in repo.files


def test_a_429_is_retried_after_the_wait_the_hub_asks_for(hub_runtime, fake_hub, monkeypatch):
    error = FakeHubHandler._error

    def with_retry_after(self, status, message, **kwargs):
        headers = {"Retry-After": "5"} if status == 429 else {}
        return error(self, status, message, **{**kwargs, "headers": {**(kwargs.get("headers") or {}), **headers}})

    monkeypatch.setattr(FakeHubHandler, "_error", with_retry_after)
    fake_hub.fail_next("/commit/", status=429, message="You have been rate-limited")
    tune = hub_tune(hub_runtime)
    hub_runtime.worker.drain()

    tune = hub_runtime.studio.get_tune("alice", tune.id)
    assert tune.status == "trained", tune.error
    assert hub_runtime.waits == [5.0], "it waited as long as Retry-After said, not its own shorter backoff"
    assert len(fake_hub.calls("POST", "/commit/")) == 2


def test_a_hub_that_keeps_failing_the_upload_fails_the_tune_clearly_and_leaves_no_empty_repo(hub_runtime, fake_hub):
    fake_hub.fail_next("/commit/", status=500, times=1000)
    tune = hub_tune(hub_runtime)
    hub_runtime.worker.drain()

    tune = hub_runtime.studio.get_tune("alice", tune.id)
    assert tune.status == "failed" and tune.attempts == 3
    assert "Could not upload the Hugging Face Hub repo" in tune.error and "HTTP 500" in tune.error
    assert "try again later" in tune.error and FAKE_TOKEN not in tune.error
    assert len(fake_hub.calls("POST", "/api/repos/create")) == 3, "three trainings, one repo each"
    assert fake_hub.repos == {}, "every repo made for a failed upload was deleted again"
    assert not hub_runtime.studio.photos_dir(tune.id).exists(), "a failed tune keeps no photos"


def test_an_expiry_whose_hub_delete_fails_is_reported_and_retried_by_the_next_sweep(hub_runtime, fake_hub):
    studio = hub_runtime.studio
    tune = hub_tune(hub_runtime)
    hub_runtime.worker.drain()
    tune = studio.get_tune("alice", tune.id)
    repo_id = tune.artifact_location.removeprefix("hub://")
    hub_runtime.clock.now += timedelta(days=studio.settings.retention_days, seconds=1)

    fake_hub.fail_next("/api/repos/delete", status=503, times=3)  # every try of the first sweep
    first = sweep(studio, hub_runtime.store)
    assert first.expired == [] and list(first.errors) == [tune.id]
    assert "Could not delete the Hugging Face Hub repo" in first.errors[tune.id] and "HTTP 503" in first.errors[tune.id]
    assert studio.get_tune("alice", tune.id).status == "trained" and repo_id in fake_hub.repos

    second = sweep(studio, hub_runtime.store)
    assert second.expired == [tune.id] and second.errors == {}
    assert studio.get_tune("alice", tune.id).status == "expired" and repo_id not in fake_hub.repos


def test_a_delete_the_hub_refuses_keeps_the_tune_so_it_can_be_deleted_later(hub_runtime, fake_hub):
    studio = hub_runtime.studio
    tune = hub_tune(hub_runtime)
    hub_runtime.worker.drain()
    repo_id = studio.get_tune("alice", tune.id).artifact_location.removeprefix("hub://")

    fake_hub.fail_next("/api/repos/delete", status=500, times=3)
    with pytest.raises(ArtifactError, match="Could not delete the Hugging Face Hub repo"):
        studio.delete_tune("alice", tune.id)
    assert studio.get_tune("alice", tune.id).status == "trained" and repo_id in fake_hub.repos

    studio.delete_tune("alice", tune.id)
    assert studio.list_tunes("alice") == [] and repo_id not in fake_hub.repos


def test_while_the_hub_hangs_the_tune_is_pollable_and_cancellable_and_no_repo_is_left(
    hub_runtime, fake_hub, monkeypatch
):
    """While an upload waits for the Hub (up to TUNES_HUB_TIMEOUT per try), the user still sees an honest
    status and can cancel."""
    hanging, release = threading.Event(), threading.Event()
    handle = FakeHubHandler._handle

    def hang_on_upload(self, method):
        if "/commit/" in self.path and not release.is_set():
            hanging.set()
            release.wait(timeout=60)
        return handle(self, method)

    monkeypatch.setattr(FakeHubHandler, "_handle", hang_on_upload)
    studio = hub_runtime.studio
    hub_runtime.worker.start()
    try:
        tune = hub_tune(hub_runtime)
        assert hanging.wait(timeout=20), "the upload reached the Hub"
        polled = studio.get_tune("alice", tune.id)
        assert (polled.status, polled.error) == ("training", None)
        assert studio.cancel_tune("alice", tune.id).status == "cancelled"
    finally:
        release.set()
    deadline = time.monotonic() + 20
    while fake_hub.repos and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_hub.repos == {}, "the LoRA pushed for a cancelled tune was deleted once the Hub answered"
    tune = studio.get_tune("alice", tune.id)
    assert tune.status == "cancelled" and tune.artifact_location is None


@contextmanager
def hub_hangs_on(monkeypatch: pytest.MonkeyPatch, path_part: str) -> Iterator[threading.Event]:
    """The fake Hub stops answering requests whose path contains `path_part` (until the block ends)."""
    release, handle = threading.Event(), FakeHubHandler._handle

    def hang(self, method):
        if path_part in self.path and not release.is_set():
            release.wait(timeout=60)
        return handle(self, method)

    monkeypatch.setattr(FakeHubHandler, "_handle", hang)
    try:
        yield release
    finally:
        release.set()


@pytest.fixture
def impatient_hub_runtime(settings, fake_hub, monkeypatch):
    """`hub_runtime` with TUNES_HUB_TIMEOUT=1 and two tries per Hub call."""
    rt = open_hub_runtime(settings, monkeypatch, attempts=2, hub_timeout_s=1)
    yield rt
    rt.close()


def test_a_hub_that_stops_answering_an_upload_times_out_and_fails_the_tune_clearly(
    impatient_hub_runtime, fake_hub, monkeypatch
):
    rt = impatient_hub_runtime
    with hub_hangs_on(monkeypatch, "/commit/"):
        tune = hub_tune(rt)
        rt.worker.drain()  # returns: every upload gives up after TUNES_HUB_TIMEOUT instead of waiting forever

    tune = rt.studio.get_tune("alice", tune.id)
    assert tune.status == "failed" and tune.attempts == 3, tune.error
    assert "Could not upload the Hugging Face Hub repo" in tune.error and "timed out" in tune.error.lower()
    assert "tried 2 times" in tune.error and "try again later" in tune.error
    assert fake_hub.repos == {}, "no empty repo is left by the uploads that timed out"


def test_an_expiry_whose_hub_delete_times_out_is_reported_and_retried_by_the_next_sweep(
    impatient_hub_runtime, fake_hub, monkeypatch
):
    rt = impatient_hub_runtime
    tune = hub_tune(rt)
    rt.worker.drain()
    repo_id = rt.studio.get_tune("alice", tune.id).artifact_location.removeprefix("hub://")
    rt.clock.now += timedelta(days=rt.studio.settings.retention_days, seconds=1)

    with hub_hangs_on(monkeypatch, "/api/repos/delete"):
        first = sweep(rt.studio, rt.store)
    assert first.expired == [] and "timed out" in first.errors[tune.id].lower()
    assert rt.studio.get_tune("alice", tune.id).status == "trained"

    second = sweep(rt.studio, rt.store)
    assert second.expired == [tune.id] and repo_id not in fake_hub.repos


def test_a_hub_that_stops_answering_a_download_gives_the_cached_copy_after_the_timeout(
    impatient_hub_runtime, fake_hub, monkeypatch
):
    rt = impatient_hub_runtime
    tune = hub_tune(rt)
    rt.worker.drain()
    location = rt.studio.get_tune("alice", tune.id).artifact_location
    first = rt.store.fetch(location)

    with hub_hangs_on(monkeypatch, "/api/models/"):
        again = rt.store.fetch(location)  # returns: the lookup gives up after TUNES_HUB_TIMEOUT
    assert again == first and (again / LORA_WEIGHTS_NAME).read_bytes() == b"lora weights"

    fresh = rt.settings.data_dir / "hub_cache"
    shutil.rmtree(fresh)
    with hub_hangs_on(monkeypatch, "/api/models/"), pytest.raises(ArtifactError, match="timed out"):
        rt.store.fetch(location)  # nothing cached: the owner learns why
