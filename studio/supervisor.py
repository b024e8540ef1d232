"""Starts and watches the local worker processes of `python app.py`: one per `TUNES_WORKER_DEVICES` entry.

Each worker is `python -m studio.worker --id wN --device D --parent <this pid>` on the same data folder and
environment. A worker that exits while the server runs is started again after a back-off (1 s, doubling to
`MAX_BACKOFF_S`; back to 1 s once a run lasted `HEALTHY_S`). Unless `OMP_NUM_THREADS` is set, the workers
share all cores but one between their torch threads (`worker_threads`), leaving one to the web. `stop` sends
SIGTERM (a training saves a checkpoint and goes back to the queue without counting an attempt), waits, then
kills what is left. A worker also stops by
itself when this process is gone, so a SIGKILLed server leaves no orphan training.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.settings import Settings

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
MAX_BACKOFF_S = 60.0
HEALTHY_S = 60.0
_WATCH_EVERY_S = 0.5


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this id runs (an earlier worker, or an earlier Jobs backend)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def worker_threads(cores: int, workers: int) -> int:
    """Torch CPU threads per worker: the cores but one, shared out. The spare core serves the web: torch's threads
    wait for each other after every operation, so a training that shares every core with the web server's
    requests stalls on each one (measured in bench/README.md: 60% of its idle speed under 100 pollers with both
    cores, 105% with one)."""
    return max(1, (cores - 1) // max(1, workers))


@dataclass
class WorkerProcess:
    """One supervised worker: its id, device, current process and restarts."""

    id: str
    device: str
    process: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    next_start: float = 0.0
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """The local worker processes of one server.

    Args:
        settings: `local_workers` says how many and on which devices.
        env: the workers' environment (default: this process's).
    """

    def __init__(self, settings: Settings, *, env: dict[str, str] | None = None):
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self.workers = [WorkerProcess(f"w{index}", device) for index, device in enumerate(settings.local_workers)]
        if self.workers and "OMP_NUM_THREADS" not in self.env:
            self.env["OMP_NUM_THREADS"] = str(worker_threads(os.cpu_count() or 1, len(self.workers)))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start every worker, and a thread that restarts those that exit."""
        with self._lock:
            for worker in self.workers:
                self._launch(worker)
        self._watcher = threading.Thread(target=self._watch, name="tunes-supervisor", daemon=True)
        self._watcher.start()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every worker, wait up to `timeout` seconds for them, then SIGKILL the rest."""
        self._stop.set()
        with self._lock:
            running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
            for process in running:
                process.terminate()
            deadline = time.monotonic() + timeout
            for process in running:
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("worker pid %s did not stop in %.0f s; killing it", process.pid, timeout)
                    process.kill()
                    process.wait(5)
        if self._watcher is not None:
            self._watcher.join(5)

    def _launch(self, worker: WorkerProcess) -> None:
        command = [sys.executable, "-m", "studio.worker", "--id", worker.id, "--device", worker.device]
        command += ["--parent", str(os.getpid())]
        worker.process = subprocess.Popen(command, cwd=ROOT, env=self.env)
        worker.started = time.monotonic()
        log.info("worker %s started on %s (pid %s)", worker.id, worker.device, worker.process.pid)

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_EVERY_S):
            with self._lock:
                if self._stop.is_set():
                    return
                for worker in self.workers:
                    self._tend(worker, time.monotonic())

    def _tend(self, worker: WorkerProcess, now: float) -> None:
        """Notice an exit and schedule the restart; start it once its back-off has passed."""
        process = worker.process
        if process is not None and process.poll() is not None:
            worker.exits.append(process.returncode)
            if now - worker.started >= HEALTHY_S:
                worker.backoff_s = 1.0
            worker.next_start = now + worker.backoff_s
            worker.process = None
            log.warning(
                "worker %s exited with %s; restarting in %.0f s", worker.id, process.returncode, worker.backoff_s
            )
            worker.backoff_s = min(worker.backoff_s * 2, MAX_BACKOFF_S)
        if worker.process is None and now >= worker.next_start:
            worker.restarts += 1
            self._launch(worker)
