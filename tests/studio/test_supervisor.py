"""The supervisor of `python app.py` restarts a worker that exits, with a growing back-off, and leaves a core to
the web process."""

from __future__ import annotations

import subprocess
import sys

from pipelines.settings import Settings
from studio.supervisor import HEALTHY_S, MAX_BACKOFF_S, Supervisor, worker_threads


def exited(code: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    process.wait()
    return process


def test_a_worker_that_keeps_dying_is_restarted_after_a_doubling_back_off(tmp_path, monkeypatch):
    supervisor = Supervisor(Settings(data_dir=tmp_path, worker_devices=("cpu", "cuda:1")), env={})
    launched = []
    monkeypatch.setattr(supervisor, "_launch", lambda worker: launched.append((worker.id, worker.device)))
    assert [(w.id, w.device) for w in supervisor.workers] == [("w0", "cpu"), ("w1", "cuda:1")]
    worker = supervisor.workers[0]

    waits = []
    now = 100.0
    for _ in range(8):
        worker.process, worker.started = exited(3), now
        supervisor._tend(worker, now)  # noticed: restart scheduled, not yet started
        assert worker.process is None and launched == []
        waits.append(worker.next_start - now)
        now = worker.next_start
        supervisor._tend(worker, now)  # its time has come
        assert launched.pop() == ("w0", "cpu")
    assert waits == [1, 2, 4, 8, 16, 32, MAX_BACKOFF_S, MAX_BACKOFF_S] and worker.exits == [3] * 8

    worker.process, worker.started = exited(1), now
    supervisor._tend(worker, now + HEALTHY_S)  # it had run a while: back to a short wait
    assert worker.next_start - (now + HEALTHY_S) == 1


def test_no_local_worker_with_none_and_one_on_the_device_by_default(tmp_path):
    assert Supervisor(Settings(data_dir=tmp_path, worker_devices=("none",)), env={}).workers == []
    [only] = Supervisor(Settings(data_dir=tmp_path, device="cpu"), env={}).workers
    assert (only.id, only.device) == ("w0", "cpu")


def test_workers_share_all_cores_but_one_unless_told_otherwise(tmp_path):
    assert [worker_threads(cores, 1) for cores in (1, 2, 16)] == [1, 1, 15]
    assert worker_threads(16, 4) == 3
    supervisor = Supervisor(Settings(data_dir=tmp_path, device="cpu"), env={"OMP_NUM_THREADS": "6"})
    assert supervisor.env["OMP_NUM_THREADS"] == "6"
