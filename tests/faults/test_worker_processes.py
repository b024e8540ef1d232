"""Worker processes (`python -m studio.worker`) over one data folder, as `python app.py` starts them: they share the
queue without running a job twice, a SIGKILLed or paused worker's training is taken over once its lease lapses and
resumes from its checkpoint, and the web process serves without torch and stops its workers with it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from pipelines.settings import Settings
from storage.records import DeliveryKind, PromptStatus, TuneStatus
from studio.requests import PromptCreate
from studio.runtime import open_runtime
from tests.conftest import settings_with_tiny, wait_for
from tests.faults.test_server_kill import Server, _jpeg
from tests.studio.test_service import tune_request

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 3
STEPS, CHECKPOINT_EVERY = 12, 4  # a checkpoint at 4 and 8: the kill lands mid-training


class Workers:
    """Worker processes started by the test on one data folder; each logs to a file of its own."""

    def __init__(self, data_dir: Path, log_dir: Path):
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TUNES_DATA_DIR": str(data_dir),
            "TUNES_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY),
            "TUNES_WORKER_LEASE_SECONDS": str(LEASE_S),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "studio.worker", "--id", name, "--device", "cpu"]
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(30)


@pytest.fixture
def folder(tmp_path, tiny_sd15_dir) -> Settings:
    # the tiny model linked into data/models; callbacks go to a closed local port (counted, never delivered)
    return replace(settings_with_tiny(tmp_path, tiny_sd15_dir), allowed_fetch_hosts=("127.0.0.1",))


@pytest.fixture
def workers(folder, tmp_path) -> Iterator[Workers]:
    running = Workers(folder.data_dir, tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
def runtime(folder):
    """The test's view of the shared database (it runs no worker of its own)."""
    rt = open_runtime(folder, start_worker=False)
    yield rt
    rt.close()


def column(data_dir: Path, query: str, *params: object) -> object:
    with sqlite3.connect(f"file:{data_dir / 'tunes.db'}?mode=ro", uri=True) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def test_two_workers_drain_ten_mixed_jobs_with_no_job_run_twice(runtime, workers):
    studio = runtime.studio
    tunes = []
    for index, count in enumerate((2, 1, 2, 1)):  # 4 trainings and 6 prompts
        prompts = [
            PromptCreate(f"{{{{subject}}}} scene {n}", num_images=n + 1, callback="http://127.0.0.1:9/p")
            for n in range(count)
        ]
        request = tune_request(f"tune {index}", prompts=prompts, callback="http://127.0.0.1:9/t")
        tunes.append(studio.create_tune("alice", request).tune)
    workers.start("w1")
    workers.start("w2")

    def finished():
        prompts = studio.list_prompts("alice", limit=100)
        return all(p.status == PromptStatus.DONE for p in prompts) and len(prompts) == 6

    wait_for(finished, bool, timeout=120, what="both workers to drain the queue")
    for tune in tunes:
        done = studio.get_tune("alice", tune.id)
        assert (done.status, done.attempts) == (TuneStatus.TRAINED, 1)
        assert len(runtime.db.deliveries_for("alice", DeliveryKind.TUNE, tune.id)) == 1
    for prompt in studio.list_prompts("alice", limit=100):
        assert prompt.attempts == 1 and len(prompt.images) == prompt.num_images, prompt
        assert len(runtime.db.deliveries_for("alice", DeliveryKind.PROMPT, prompt.id)) == 1
    done = wait_for(
        lambda: {w.id: w.jobs_done for w in runtime.db.list_workers()},
        lambda jobs: sum(jobs.values()) == 10,
        what="the workers' heartbeats to count the jobs",
    )
    assert set(done) == {"w1", "w2"}


def _tiny_tune(runtime) -> int:
    prompts = [PromptCreate("{{subject}} as a pilot", num_images=2, steps=2, seed=3, callback="http://127.0.0.1:9/p")]
    request = tune_request("tiny", branch="tiny", steps=STEPS, prompts=prompts, callback="http://127.0.0.1:9/t")
    return runtime.studio.create_tune("alice", request).tune.id


def _training_on_w1(runtime, workers: Workers, tune_id: int) -> subprocess.Popen:
    first = workers.start("w1")
    data = runtime.settings.data_dir
    wait_for(
        lambda: column(data, "SELECT status FROM tunes WHERE id = ?", tune_id),
        lambda status: status == TuneStatus.TRAINING,
        every=0.05,
        what="w1 to claim the training",
    )
    return first


def _passed_a_checkpoint(runtime, tune_id: int) -> None:
    checkpoint = runtime.studio.training_dir(tune_id) / "checkpoint.pt"
    wait_for(checkpoint.exists, bool, every=0.02, timeout=180, what="a training checkpoint")


def _trained_once_resumed(runtime, tune_id: int) -> None:
    """The tune trained in two attempts from the checkpoint, its prompt has exactly its images, one callback each."""
    trained = wait_for(
        lambda: runtime.studio.get_tune("alice", tune_id),
        lambda t: t.status in (TuneStatus.TRAINED, TuneStatus.FAILED),
        timeout=240,
        what="the tune to train",
    )
    assert (trained.status, trained.attempts) == (TuneStatus.TRAINED, 2), trained.error
    metadata = json.loads((Path(trained.artifact_location) / "lora_metadata.json").read_text())
    assert metadata["steps"] == STEPS and metadata["resumed_from_step"] >= CHECKPOINT_EVERY, metadata
    [prompt] = wait_for(
        lambda: runtime.studio.list_prompts("alice", tune_id=tune_id),
        lambda ps: ps[0].status in (PromptStatus.DONE, PromptStatus.FAILED),
        timeout=120,
        what="the prompt",
    )
    assert prompt.status == PromptStatus.DONE and len(prompt.images) == 2, prompt.error
    assert len(runtime.db.deliveries_for("alice", DeliveryKind.TUNE, tune_id)) == 1
    assert len(runtime.db.deliveries_for("alice", DeliveryKind.PROMPT, prompt.id)) == 1


def test_a_killed_workers_training_is_taken_over_after_its_lease_and_resumes_from_the_checkpoint(runtime, workers):
    tune_id = _tiny_tune(runtime)
    first = _training_on_w1(runtime, workers, tune_id)
    workers.start("w2")  # idle meanwhile: the only job is w1's, under a live lease
    _passed_a_checkpoint(runtime, tune_id)
    first.kill()
    first.wait(30)
    data = runtime.settings.data_dir
    assert column(data, "SELECT attempts FROM tunes WHERE id = ?", tune_id) == 1
    assert str(column(data, "SELECT worker_id FROM tunes WHERE id = ?", tune_id)).startswith("w1.")

    # w1 is dead but has another name: w2 takes over once the lease lapses, and resumes from the checkpoint
    _trained_once_resumed(runtime, tune_id)


def test_a_paused_worker_loses_its_job_and_on_waking_stops_it_without_writing(runtime, workers):
    tune_id = _tiny_tune(runtime)
    first = _training_on_w1(runtime, workers, tune_id)
    workers.start("w2")
    _passed_a_checkpoint(runtime, tune_id)
    first.send_signal(signal.SIGSTOP)  # a hung worker: alive, but no heartbeat
    data = runtime.settings.data_dir
    wait_for(
        lambda: str(column(data, "SELECT worker_id FROM tunes WHERE id = ?", tune_id)),
        lambda holder: holder.startswith("w2."),
        timeout=60,
        what="w2 to take the training over",
    )
    first.send_signal(signal.SIGCONT)
    wait_for(lambda: workers.log("w1"), lambda text: "lost its lease" in text, timeout=60, what="w1 to notice")
    _trained_once_resumed(runtime, tune_id)
    assert first.poll() is None, "w1 lives on and takes other work"


def test_the_web_process_serves_without_torch_and_its_workers_stop_with_it(folder, tmp_path):
    server = Server(folder.data_dir, tmp_path)
    server.env |= {"TUNES_DEFAULT_BRANCH": "fast", "TUNES_WORKER_LEASE_SECONDS": str(LEASE_S)}
    key = server.create_key("alice")
    url = server.start(key)
    auth = {"Authorization": f"Bearer {key}"}
    photos = [("tune[images][]", (f"me-{i}.jpg", _jpeg(p), "image/jpeg")) for i, p in enumerate(_photos())]
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        created = client.post("/tunes", data={"tune[title]": "Me", "tune[name]": "woman"}, files=photos)
        assert created.status_code == 201, created.text
        trained = wait_for(
            lambda: client.get(f"/tunes/{created.json()['id']}").json(),
            lambda t: t["status"] == "trained",
            what="the worker process to train the tune",
        )
        assert client.get("/").status_code == 200 and trained["status"] == "trained"
    web = server.process.pid
    maps = Path(f"/proc/{web}/maps").read_text()
    assert "libtorch" not in maps, "the web process loaded torch"
    [worker_pid] = [int(pid) for pid in _children(web)]

    server.process.send_signal(signal.SIGINT)  # Ctrl-C
    server.process.wait(30)
    wait_for(lambda: _running(worker_pid), lambda alive: not alive, timeout=30, what="the worker to stop")
    assert column(folder.data_dir, "SELECT stopped_at FROM workers WHERE id = 'w0'") is not None

    url = server.start(key)  # again, then SIGKILL the web process alone: its worker does not outlive it
    [worker_pid] = [int(pid) for pid in _children(server.process.pid)]
    wait_for(
        lambda: column(folder.data_dir, "SELECT pid FROM workers WHERE id = 'w0' AND stopped_at IS NULL"),
        lambda pid: pid == worker_pid,
        timeout=120,
        what="the new worker to serve",
    )
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(30)
    wait_for(lambda: _running(worker_pid), lambda alive: not alive, timeout=30, what="the orphan worker to stop")


def _photos():
    from tests.conftest import astronaut_photos

    return astronaut_photos()


def _children(pid: int) -> list[str]:
    return wait_for(
        lambda: Path(f"/proc/{pid}/task/{pid}/children").read_text().split(),
        lambda found: len(found) == 1,
        what="the worker process",
    )


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
