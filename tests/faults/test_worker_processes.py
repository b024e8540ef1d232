"""Worker processes (`python -m studio.worker`) over one data folder, as `python app.py` starts them: they share the
queue without running a job twice, and a SIGKILLed or paused worker's training is taken over once its lease lapses
and resumes from its checkpoint. (The web process and its workers: tests/faults/test_server_kill.py.)"""

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

import pytest

from pipelines.settings import Settings
from storage.records import DeliveryKind, PromptStatus, TuneStatus
from studio.requests import PromptCreate
from studio.runtime import open_runtime
from tests.conftest import settings_with_tiny, wait_for
from tests.studio.test_service import tune_request

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 3
# a checkpoint every 4 steps: w1 is paused after one (about step 5 to 10, once its ETA is written), w2 is killed
# after one of its own, and w1 still has steps left when it resumes
STEPS, CHECKPOINT_EVERY = 24, 4


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
    workers.start("w1")
    workers.start("w2")
    # both serving before any job exists: a worker that came up late found the ten quick jobs all taken
    wait_for(lambda: {w.id for w in runtime.db.list_workers()}, lambda ids: ids == {"w1", "w2"}, what="both workers")
    tunes = []
    for index, count in enumerate((2, 1, 2, 1)):  # 4 trainings and 6 prompts
        prompts = [
            PromptCreate(f"{{{{subject}}}} scene {n}", num_images=n + 1, callback="http://127.0.0.1:9/p")
            for n in range(count)
        ]
        request = tune_request(f"tune {index}", prompts=prompts, callback="http://127.0.0.1:9/t")
        tunes.append(studio.create_tune("alice", request).tune)

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


def _checkpoint_version(path: Path) -> tuple[int, int] | None:
    """Which checkpoint file is there (checkpoints are replaced atomically: a new one is a new file)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns


def test_a_paused_worker_loses_its_job_and_a_killed_ones_training_is_taken_over_and_resumes_from_its_checkpoint(
    runtime, workers
):
    """One training, three holders: w1 is paused (SIGSTOP) past its lease and w2 takes the training over; w1 wakes,
    finds it lost its lease and stops that job without writing; w2 is SIGKILLed after a checkpoint of its own, and
    w1, alive and idle, takes the training over once w2's lease lapses and finishes it from w2's checkpoint."""
    tune_id = _tiny_tune(runtime)
    data = runtime.settings.data_dir
    checkpoint = runtime.studio.training_dir(tune_id) / "checkpoint.pt"

    def holder() -> str:
        return str(column(data, "SELECT worker_id FROM tunes WHERE id = ?", tune_id))

    # 1. w1 trains past a checkpoint with its progress and time left on the record; w2 idles (w1's lease is live)
    first = workers.start("w1")
    wait_for(holder, lambda held: held.startswith("w1."), every=0.05, what="w1 to claim the training")
    workers.start("w2")
    wait_for(
        lambda: runtime.studio.get_tune("alice", tune_id),
        lambda t: checkpoint.exists() and t.eta_seconds is not None,
        every=0.02,
        timeout=180,
        what="a training checkpoint and an ETA",
    )
    first.send_signal(signal.SIGSTOP)  # a hung worker: alive, but no heartbeat
    paused = runtime.studio.get_tune("alice", tune_id)
    assert paused.status == TuneStatus.TRAINING and paused.progress > 0 and paused.eta_seconds > 0, paused
    assert (paused.attempts, holder()[:3]) == (1, "w1."), "w2 left w1's job alone while its lease was live"

    # 2. w2 takes it over once the lease lapses; w1 wakes, notices, and writes nothing more
    wait_for(holder, lambda held: held.startswith("w2."), timeout=60, what="w2 to take the training over")
    taken_over_at = _checkpoint_version(checkpoint)
    first.send_signal(signal.SIGCONT)
    wait_for(lambda: workers.log("w1"), lambda text: "lost its lease" in text, timeout=60, what="w1 to notice")

    # 3. w2 is killed once it saved a checkpoint of its own: w1 takes over after w2's lease and resumes from it
    wait_for(
        lambda: _checkpoint_version(checkpoint),
        lambda version: version not in (taken_over_at, None),
        every=0.02,
        timeout=180,
        what="a checkpoint of w2's",
    )
    second = workers.processes["w2"]
    second.kill()
    second.wait(30)
    killed = runtime.studio.get_tune("alice", tune_id)
    assert (killed.status, killed.attempts, holder()[:3]) == (TuneStatus.TRAINING, 2, "w2."), "the kill interrupted it"
    assert first.poll() is None, "w1 lives on after losing its job"

    trained = wait_for(
        lambda: runtime.studio.get_tune("alice", tune_id),
        lambda t: t.status in (TuneStatus.TRAINED, TuneStatus.FAILED),
        timeout=240,
        what="the tune to train",
    )
    assert (trained.status, trained.attempts) == (TuneStatus.TRAINED, 3), trained.error
    metadata = json.loads((Path(trained.artifact_location) / "lora_metadata.json").read_text())
    # w2 resumed from w1's checkpoint (at 4 or 8) and saved one later on: w1 went on from there, not from the start,
    # and the loss curve of the killed attempts came along
    resumed_from = metadata["resumed_from_step"]
    assert resumed_from >= 2 * CHECKPOINT_EVERY and resumed_from % CHECKPOINT_EVERY == 0, metadata
    assert metadata["steps"] == len(metadata["loss_curve"]["values"]) == STEPS, metadata
    assert "w1 INFO stored the LoRA" in workers.log("w1") and "stored the LoRA" not in workers.log("w2")
    [prompt] = wait_for(
        lambda: runtime.studio.list_prompts("alice", tune_id=tune_id),
        lambda ps: ps[0].status in (PromptStatus.DONE, PromptStatus.FAILED),
        timeout=120,
        what="the prompt",
    )
    assert prompt.status == PromptStatus.DONE and len(prompt.images) == 2, prompt.error
    assert len(runtime.db.deliveries_for("alice", DeliveryKind.TUNE, tune_id)) == 1
    assert len(runtime.db.deliveries_for("alice", DeliveryKind.PROMPT, prompt.id)) == 1
