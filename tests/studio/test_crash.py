"""Kill the worker process mid-training; a restarted worker finishes the tune from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from studio import queue
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.studio.test_service import PHOTOS

WORKER = textwrap.dedent(
    """
    from pipelines.settings import Settings
    from studio import queue
    from studio.runtime import open_runtime

    runtime = open_runtime(Settings.from_env(), start_worker=False)
    queue.requeue_interrupted(runtime.db)
    runtime.worker.drain()
    """
)


@pytest.mark.usefixtures("no_card_samples")
def test_a_killed_worker_loses_nothing_and_resumes_training(settings):
    settings = settings.with_overrides(checkpoint_every=5)
    runtime = open_runtime(settings, start_worker=False)
    request = TuneCreate(
        title="me",
        name="woman",
        images=PHOTOS,
        branch="tiny",
        steps=40,  # killed after its first checkpoint (step 5), long before its end
        prompts=[PromptCreate("{{subject}}", num_images=1, steps=1)],
    )
    tune = runtime.studio.create_tune("alice", request).tune
    checkpoint = runtime.studio.training_dir(tune.id) / "checkpoint.pt"

    env = {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "TUNES_DATA_DIR": str(settings.data_dir),
        "TUNES_CHECKPOINT_EVERY": "5",
        "TUNES_DEVICE": "cpu",
    }
    child = subprocess.Popen([sys.executable, "-c", WORKER], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120

    # killed once a checkpoint exists and the record has its ETA (set once the first steps set the pace)
    def ready() -> bool:
        return checkpoint.exists() and runtime.studio.get_tune("alice", tune.id).eta_seconds is not None

    while not ready() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), child.stderr.read().decode()[-3000:] if child.poll() is not None else "no checkpoint"
    child.send_signal(signal.SIGKILL)
    child.wait()
    interrupted = runtime.studio.get_tune("alice", tune.id)
    assert interrupted.status == "training", "the dead worker left it running"
    assert interrupted.progress > 0 and interrupted.eta_seconds > 0, "progress is written to the record"

    # a new worker process would do exactly this on start
    queue.requeue_interrupted(runtime.db)
    runtime.worker.drain()

    finished = runtime.studio.get_tune("alice", tune.id)
    assert finished.status == "trained" and finished.attempts == 2
    metadata = json.loads((runtime.store.fetch(finished.artifact_location) / "lora_metadata.json").read_text())
    assert metadata["resumed_from_step"] >= 5 and metadata["steps"] == 40
    [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
    assert prompt.status == "done" and len(prompt.images) == 1
    runtime.close()
