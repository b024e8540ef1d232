"""A small fake Hugging Face Hub, served over real HTTP on 127.0.0.1 for the real `huggingface_hub` client.

It implements what huggingface_hub 2.4 (and `datasets` 5.2 on top of it) sends for model and dataset repos —
create, check, list, update, upload, download, delete — and the Jobs API, whose jobs really run: as local
subprocesses of this repository, the "remote machine" (see `FakeHubHandler` for the routes, `FakeJob` for a job).
Everything lives in memory; every request is checked for the bearer token (401 otherwise), recorded, and can fail
on demand (`fail_next`). Uploads: small text files travel inline in the commit; binary, large or
`.gitattributes`-tracked files go through the LFS batch API (the real Hub offers Xet storage instead; the fixture
turns the client's Xet path off, which makes it use LFS, its documented fallback).

Use the `fake_hub` fixture: it starts a server, lets the library (and `datasets`) go online for the test only,
and points them at the server. Importing the fixture function registers it in a test module (its Python name
differs from the fixture's, so test parameters named `fake_hub` do not shadow the import):

    from tests.fakehub import fake_hub_fixture  # noqa: F401

Jobs (test hooks on `FakeHub`): `hold_jobs = True` keeps new jobs in SCHEDULING until it is set back to False;
`fail_next_job(message)` makes the next job end in ERROR without running; `submitted_jobs()` lists every job with
the environment and secrets it was given (the API never answers secret values); `job(id)` finds one, and
`FakeJob.wait(stage...)` / `FakeJob.wait_gone()` wait for a stage or for its processes to be gone;
`job_extra_env` adds test-only variables to every job; `hardware` is the flavor list the API serves and checks.
Not faked: the image (every job runs this checkout with this interpreter), metrics, scheduled jobs, reruns.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

FAKE_TOKEN = "hf_FakeHubToken0123456789abcdefXYZ"
FAKE_USER = "fake-user"  # whom the token belongs to (`whoami`); it is a member of the organisations in FAKE_ORGS
FAKE_ORGS = ("studio",)
REPO_ROOT = Path(__file__).resolve().parents[1]
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
DATASET_GITATTRIBUTES = GITATTRIBUTES + b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub sends files this large to LFS whatever their name
SECRET_PLACEHOLDER = "<encrypted>"  # what a job's secret values read as in the API's answers
TERMINAL_STAGES = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
# Environment variables of the test process a job does not inherit: the remote machine has its own.
NOT_INHERITED = ("HF_", "HUGGINGFACE_", "HUGGING_FACE_", "TUNES_", "PYTEST_", "GRADIO_")

# name, pretty name, CPU, RAM, accelerator (model, quantity, VRAM) or None, USD per hour
HARDWARE: tuple[tuple[str, str, str, str, tuple[str, str, str] | None, float], ...] = (
    ("cpu-basic", "CPU Basic", "2 vCPU", "16 GB", None, 0.01),
    ("cpu-upgrade", "CPU Upgrade", "8 vCPU", "32 GB", None, 0.03),
    ("t4-small", "Nvidia T4 - small", "4 vCPU", "15 GB", ("T4", "1", "16 GB"), 0.40),
    ("t4-medium", "Nvidia T4 - medium", "8 vCPU", "30 GB", ("T4", "1", "16 GB"), 0.60),
    ("l4x1", "1x Nvidia L4", "8 vCPU", "30 GB", ("L4", "1", "24 GB"), 0.80),
    ("l4x4", "4x Nvidia L4", "48 vCPU", "186 GB", ("L4", "4", "96 GB"), 3.80),
    ("a10g-small", "Nvidia A10G - small", "4 vCPU", "15 GB", ("A10G", "1", "24 GB"), 1.00),
    ("a10g-large", "Nvidia A10G - large", "12 vCPU", "46 GB", ("A10G", "1", "24 GB"), 1.50),
    ("a10g-largex2", "2x Nvidia A10G - large", "24 vCPU", "92 GB", ("A10G", "2", "48 GB"), 3.00),
    ("a10g-largex4", "4x Nvidia A10G - large", "48 vCPU", "184 GB", ("A10G", "4", "96 GB"), 5.00),
    ("l40sx1", "1x Nvidia L40S", "8 vCPU", "62 GB", ("L40S", "1", "48 GB"), 1.80),
    ("l40sx4", "4x Nvidia L40S", "48 vCPU", "382 GB", ("L40S", "4", "192 GB"), 8.30),
    ("l40sx8", "8x Nvidia L40S", "192 vCPU", "1534 GB", ("L40S", "8", "384 GB"), 23.50),
    ("a100-large", "Nvidia A100 - large", "12 vCPU", "142 GB", ("A100", "1", "80 GB"), 2.50),
    ("a100x4", "4x Nvidia A100", "48 vCPU", "568 GB", ("A100", "4", "320 GB"), 10.00),
    ("a100x8", "8x Nvidia A100", "96 vCPU", "1136 GB", ("A100", "8", "640 GB"), 20.00),
    ("h200", "1x Nvidia H200", "23 vCPU", "256 GB", ("H200", "1", "141 GB"), 5.00),
    ("h200x2", "2x Nvidia H200", "46 vCPU", "512 GB", ("H200", "2", "282 GB"), 10.00),
    ("h200x4", "4x Nvidia H200", "92 vCPU", "1024 GB", ("H200", "4", "564 GB"), 20.00),
    ("h200x8", "8x Nvidia H200", "184 vCPU", "2048 GB", ("H200", "8", "1128 GB"), 40.00),
)


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file: what the Hub answers as ETag and tree `oid` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-LFS pointer file git keeps in place of an LFS file's content."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def hardware_json(
    name: str, pretty: str, cpu: str, ram: str, gpu: tuple[str, str, str] | None, usd_hour: float
) -> dict:
    """One entry of `GET /api/jobs/hardware`: prices per minute in micro-dollars, as the Hub answers them."""
    micro_per_minute = round(usd_hour * 1_000_000 / 60)
    accelerator = None
    if gpu is not None:
        model, quantity, vram = gpu
        accelerator = {"type": "gpu", "model": model, "quantity": quantity, "vram": vram, "manufacturer": "Nvidia"}
    return {
        "name": name,
        "prettyName": pretty,
        "cpu": cpu,
        "ram": ram,
        "ephemeralStorage": "50 GB" if gpu is None else "200 GB",
        "accelerator": accelerator,
        "unitCostMicroUSD": micro_per_minute,
        "unitCostUSD": micro_per_minute / 1_000_000,
        "unitLabel": "minute",
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool


@dataclass(frozen=True)
class FakeCommit:
    oid: str
    summary: str
    changed: tuple[str, ...]  # paths added or deleted by this commit
    files: dict[str, bytes]  # the whole tree after it
    lfs: frozenset[str] = frozenset()  # which of `files` are stored in LFS


@dataclass
class FakeRepo:
    repo_id: str  # "<namespace>/<name>" for models, "datasets/<namespace>/<name>" for datasets
    private: bool
    commits: list[FakeCommit] = field(default_factory=list)
    locked_public: bool = False  # settings calls are accepted but ignored (like an org policy would)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"))

    @property
    def head(self) -> FakeCommit:
        return self.commits[-1]

    @property
    def files(self) -> dict[str, bytes]:
        return self.head.files

    def at(self, revision: str) -> FakeCommit | None:
        if revision == "main":
            return self.head
        return next((commit for commit in self.commits if commit.oid == revision), None)

    def lfs_patterns(self) -> list[str]:
        """The patterns `.gitattributes` sends to LFS."""
        text = self.files.get(".gitattributes", b"").decode(errors="replace")
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line and line.split()]


@dataclass
class _Fault:
    path_substring: str
    status: int
    times: int
    method: str | None
    message: str
    disconnect: bool


@dataclass
class FakeJob:
    """A job as submitted (`spec`, secrets included: tests may read them, the API never answers them) and as run.

    The job runs `command + arguments` as a subprocess of its own session (its process group), cwd the repository
    root, `python` meaning this interpreter; see `FakeHub.job_environment` for its environment. Stages: SCHEDULING
    (while `hub.hold_jobs`) -> RUNNING -> COMPLETED (exit 0) | ERROR (other exit, a `fail_next_job`, or past its
    `timeoutSeconds`) | CANCELED (cancel: the process group gets SIGTERM, then SIGKILL after `hub.kill_grace_s`).
    """

    id: str
    namespace: str
    spec: dict
    created_at: str = field(default_factory=_now)
    stage: str = "SCHEDULING"
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, line), as the log stream sends them
    env: dict[str, str] = field(default_factory=dict)  # the environment the process got
    pid: int | None = None
    exit_code: int | None = None
    fail_with: str | None = None
    _gone: threading.Event = field(default_factory=threading.Event, repr=False)
    _process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.spec.get("environment") or {})

    @property
    def secrets(self) -> dict[str, str]:
        return dict(self.spec.get("secrets") or {})

    @property
    def command(self) -> list[str]:
        return [*(self.spec.get("command") or []), *(self.spec.get("arguments") or [])]

    @property
    def flavor(self) -> str:
        return self.spec.get("flavor") or "cpu-basic"

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL_STAGES

    @property
    def log_lines(self) -> list[str]:
        return [line for _, line in self.logs]

    def wait(self, *stages: str, timeout: float = 30.0) -> str:
        """Wait until the job is in one of `stages` (default: any terminal stage); returns the stage."""
        wanted = stages or TERMINAL_STAGES
        deadline = time.monotonic() + timeout
        while self.stage not in wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {self.stage}, not {'/'.join(wanted)}, after {timeout}s")
            time.sleep(0.02)
        return self.stage

    def wait_gone(self, timeout: float = 30.0) -> bool:
        """Wait until the job's process has been reaped and every process it started is gone (True), or it never
        started."""
        if self._process is None and self.terminal:
            return True
        return self._gone.wait(timeout)

    def to_json(self, hub: FakeHub) -> dict:
        """The JobInfo the API answers: the spec as sent, but secret values replaced by a placeholder."""
        payload: dict = {
            "id": self.id,
            "createdAt": self.created_at,
            "command": self.spec.get("command"),
            "arguments": self.spec.get("arguments") or [],
            "environment": self.environment,
            "secrets": dict.fromkeys(self.secrets, SECRET_PLACEHOLDER),
            "flavor": self.flavor,
            "status": {"stage": self.stage, "message": self.message},
            "owner": hub.owner_json(self.namespace),
            "initiator": {"type": "user", "id": hub.owner_json(hub.user)["id"], "name": hub.user},
            "durations": self._durations(),
        }
        for key in ("spaceId", "dockerImage", "labels", "timeoutSeconds", "volumes", "expose", "network"):
            if self.spec.get(key) is not None:
                payload[key] = self.spec[key]
        if "attempts" in self.spec:
            payload["retry"] = int(self.spec["attempts"]) - 1
        if self.started_at:
            payload["startedAt"] = self.started_at
        if self.finished_at:
            payload["finishedAt"] = self.finished_at
        return payload

    def _durations(self) -> dict:
        def seconds(start: str | None, end: str | None) -> int | None:
            if start is None:
                return None
            stop = _parse(end) if end else datetime.now(UTC)
            return int((stop - _parse(start)).total_seconds())

        scheduled_until = self.started_at or self.finished_at
        return {
            "schedulingSecs": seconds(self.created_at, scheduled_until) if scheduled_until else None,
            "runningSecs": seconds(self.started_at, self.finished_at),
            "totalSecs": seconds(self.created_at, self.finished_at),
        }


def _parse(timestamp: str) -> datetime:
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class FakeHub:
    """In-memory Hub state plus the HTTP server that serves it. Thread-safe; start with `start()`."""

    def __init__(self, *, token: str = FAKE_TOKEN, user: str = FAKE_USER, orgs: tuple[str, ...] = FAKE_ORGS):
        self.token = token
        self.user = user
        self.orgs = orgs
        self.repos: dict[str, FakeRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content uploaded through the LFS batch API
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[str, FakeJob] = {}
        self.hardware: list[dict] = [hardware_json(*row) for row in HARDWARE]
        self.job_extra_env: dict[str, str] = {}  # added to every job's environment (test-only settings)
        self.kill_grace_s = 3.0  # between SIGTERM and SIGKILL when a job is cancelled or times out
        self.keepalive_s = 1.0  # a log stream with nothing new sends a comment this often (the Hub: 30 s)
        self._hold_jobs = False
        self._job_faults: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified whenever a job changes
        self._stopping = threading.Event()
        self._workdir = Path(tempfile.mkdtemp(prefix="fakehub-jobs-"))
        self._server = _Server(("127.0.0.1", 0), FakeHubHandler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; every job still running is killed (its whole process group) and reaped. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            self._changed.notify_all()
            running = [job for job in self.jobs.values() if job._process is not None]
        for job in running:
            _kill_group(job, signal.SIGKILL)
            job._gone.wait(10)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        shutil.rmtree(self._workdir, ignore_errors=True)

    # --- setting the scene -------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        files: dict[str, bytes] | None = None,
        locked_public: bool = False,
        repo_type: str = "model",
    ) -> FakeRepo:
        """A repo that exists before the test runs (public by default: the case the store must fix)."""
        with self._lock:
            repo = self._create(_key(repo_type, repo_id), private=private)
            repo.locked_public = locked_public
            if files:
                self._commit(repo, "Existing files", added=files, deleted=())
            return repo

    def fail_next(
        self,
        path_substring: str,
        *,
        status: int = 500,
        times: int = 1,
        method: str | None = None,
        message: str = "Internal Error - We're working hard to fix this as soon as possible!",
        disconnect: bool = False,
    ) -> None:
        """Answer the next `times` requests whose path contains `path_substring` with `status` (checked before
        the token), or close the connection without answering when `disconnect` is set."""
        with self._lock:
            self._faults.append(_Fault(path_substring, status, times, method, message, disconnect))

    @property
    def hold_jobs(self) -> bool:
        """While True, new jobs stay in SCHEDULING (no machine free); setting it back to False starts them."""
        return self._hold_jobs

    @hold_jobs.setter
    def hold_jobs(self, value: bool) -> None:
        with self._lock:
            self._hold_jobs = value
            self._changed.notify_all()

    def fail_next_job(self, message: str = "Job failed: the machine could not be provisioned", *, times: int = 1):
        """The next `times` jobs end in ERROR with `message` when they would start, without running."""
        with self._lock:
            self._job_faults.extend([message] * times)

    # --- reading what happened ---------------------------------------------------------------------------

    def calls(self, method: str | None = None, path_contains: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [
                request
                for request in self.requests
                if (method is None or request.method == method) and path_contains in request.path
            ]

    def user_commits(self, repo_id: str) -> list[FakeCommit]:
        """Commits made through the API (not the repo's initial `.gitattributes` commit)."""
        with self._lock:
            return list(self.repos[repo_id].commits[1:])

    def submitted_jobs(self) -> list[FakeJob]:
        """Every job submitted, oldest first, with its spec (environment and secrets as sent)."""
        with self._lock:
            return list(self.jobs.values())

    def job(self, job_id: str) -> FakeJob:
        with self._lock:
            return self.jobs[job_id]

    def job_environment(self, job: FakeJob) -> dict[str, str]:
        """The environment of a job's process: a copy of this process's without its Hub, studio and test
        settings (`NOT_INHERITED`), plus what the machine provides (the repository on PYTHONPATH, the Hub's
        endpoint, online, a fresh HF_HOME), `job_extra_env`, then the job's environment and secrets."""
        env = {name: value for name, value in os.environ.items() if not name.startswith(NOT_INHERITED)}
        home = self._workdir / job.id / "hf-home"
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            HF_ENDPOINT=self.url,
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_XET="1",  # this fake speaks LFS, not Xet
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HOME=str(home),
        )
        env.update(self.job_extra_env)
        env.update({name: str(value) for name, value in job.environment.items()})
        env.update({name: str(value) for name, value in job.secrets.items()})
        return env

    def owner_json(self, namespace: str) -> dict:
        kind = "user" if namespace == self.user else "org"
        return {"id": hashlib.md5(namespace.encode()).hexdigest()[:24], "name": namespace, "type": kind}

    # --- state changes (under the lock) ------------------------------------------------------------------

    def _create(self, repo_id: str, *, private: bool) -> FakeRepo:
        repo = FakeRepo(repo_id=repo_id, private=private)
        self.repos[repo_id] = repo
        attributes = DATASET_GITATTRIBUTES if repo_id.startswith("datasets/") else GITATTRIBUTES
        self._commit(repo, "initial commit", added={".gitattributes": attributes}, deleted=())
        return repo

    def _commit(
        self,
        repo: FakeRepo,
        summary: str,
        *,
        added: dict[str, bytes],
        deleted: tuple[str, ...],
        lfs: frozenset[str] = frozenset(),
    ) -> str:
        files = dict(repo.commits[-1].files) if repo.commits else {}
        stored_in_lfs = set(repo.commits[-1].lfs) if repo.commits else set()
        for path in deleted:
            files = {name: data for name, data in files.items() if name != path and not name.startswith(path + "/")}
        files.update(added)
        stored_in_lfs = {path for path in stored_in_lfs if path in files and path not in added} | set(lfs)
        parent = repo.commits[-1].oid if repo.commits else ""
        oid = hashlib.sha1(f"{parent}\n{summary}\n{len(repo.commits)}".encode()).hexdigest()
        repo.commits.append(FakeCommit(oid, summary, tuple(added) + deleted, files, frozenset(stored_in_lfs)))
        return oid

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path_substring in path and fault.method in (None, method) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _upload_url(self, oid: str) -> str:
        """Where an LFS object is PUT: a "presigned" URL, valid without the token (like a storage bucket's)."""
        signature = hmac.new(self.token.encode(), oid.encode(), hashlib.sha256).hexdigest()
        return f"{self.url}/fake-lfs-storage/{oid}?signature={signature}"

    def _signed(self, oid: str, signature: str) -> bool:
        expected = hmac.new(self.token.encode(), oid.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    # --- jobs --------------------------------------------------------------------------------------------

    def _submit(self, namespace: str, spec: dict) -> FakeJob:
        with self._lock:
            job = FakeJob(id=secrets.token_hex(12), namespace=namespace, spec=spec)
            if self._job_faults:
                job.fail_with = self._job_faults.pop(0)
            self.jobs[job.id] = job
        threading.Thread(target=self._run_job, args=(job,), name=f"fake-job-{job.id}", daemon=True).start()
        return job

    def _run_job(self, job: FakeJob) -> None:
        # 1. Scheduling: wait for a machine (the test's hold), unless cancelled meanwhile.
        with self._lock:
            while self._hold_jobs and job.stage == "SCHEDULING" and not self._stopping.is_set():
                self._changed.wait(0.2)
            if job.stage != "SCHEDULING" or self._stopping.is_set():
                return
            if job.fail_with is not None:
                self._finish(job, "ERROR", job.fail_with)
                return
            # 2. Start the process while holding the lock, so a cancel sees either no process or a running one.
            job.env = self.job_environment(job)
            command = job.command
            if command and command[0] in ("python", "python3"):
                command = [sys.executable, *command[1:]]
            try:
                job._process = subprocess.Popen(
                    command,
                    cwd=REPO_ROOT,
                    env=job.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: cancel kills children too
                    text=True,
                    errors="replace",
                )
            except OSError as error:
                self._finish(job, "ERROR", f"Job failed to start: {error}")
                return
            job.pid = job._process.pid
            job.stage, job.started_at = "RUNNING", _now()
            job.logs.append((job.started_at, f"===== Job started at {job.started_at} ====="))
            self._changed.notify_all()
        timeout = job.spec.get("timeoutSeconds")
        timer = threading.Timer(float(timeout), self._time_out, args=(job,)) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        # 3. Every output line (stdout and stderr together) is a log event.
        assert job._process.stdout is not None
        for line in job._process.stdout:
            with self._lock:
                job.logs.append((_now(), line.rstrip("\n")))
                self._changed.notify_all()
        job.exit_code = job._process.wait()
        if timer is not None:
            timer.cancel()
        _kill_group(job, signal.SIGKILL)  # the machine goes away with its main process: so does all it started
        _wait_group_gone(job.pid, timeout=5.0)
        # 4. The stage follows the exit code, unless the job was cancelled or timed out meanwhile.
        with self._lock:
            if not job.terminal:
                if job.exit_code == 0:
                    self._finish(job, "COMPLETED", None)
                else:
                    self._finish(job, "ERROR", f"Job failed with exit code: {job.exit_code}")
        job._gone.set()

    def _finish(self, job: FakeJob, stage: str, message: str | None) -> None:
        with self._lock:
            job.stage, job.message, job.finished_at = stage, message, _now()
            self._changed.notify_all()

    def _cancel(self, job: FakeJob) -> None:
        with self._lock:
            if job.terminal:
                return
            self._finish(job, "CANCELED", None)
            running = job._process is not None
        if running:
            _stop_gracefully(job, self.kill_grace_s)

    def _time_out(self, job: FakeJob) -> None:
        with self._lock:
            if job.terminal:
                return
            self._finish(job, "ERROR", f"Job timed out after {job.spec.get('timeoutSeconds')} seconds")
        _stop_gracefully(job, self.kill_grace_s)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that gave up (a timeout a test provoked) is not news
        super().handle_error(request, client_address)


def _kill_group(job: FakeJob, sig: signal.Signals) -> None:
    if job.pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(job.pid, sig)


def _wait_group_gone(pgid: int, *, timeout: float) -> bool:
    """Wait until no live process (zombies do not count) is left in the process group `pgid`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_in_group(entry, pgid) for entry in Path("/proc").glob("[0-9]*")):
            return True
        time.sleep(0.02)
    return False


def _in_group(proc: Path, pgid: int) -> bool:
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False  # gone meanwhile
    return int(fields[2]) == pgid and fields[0] not in ("Z", "X")


def _stop_gracefully(job: FakeJob, grace_s: float) -> None:
    """SIGTERM to the job's process group, SIGKILL if it is still there after `grace_s` (in the background)."""
    _kill_group(job, signal.SIGTERM)

    def kill_later() -> None:
        if not job._gone.wait(grace_s):
            _kill_group(job, signal.SIGKILL)

    threading.Thread(target=kill_later, name=f"fake-job-kill-{job.id}", daemon=True).start()


def _key(repo_type: str | None, repo_id: str) -> str:
    """How a repo is keyed in `FakeHub.repos`: datasets carry a `datasets/` prefix."""
    return f"datasets/{repo_id}" if repo_type == "dataset" else repo_id


class FakeHubHandler(BaseHTTPRequestHandler):
    """Routes (repo ids are `<namespace>/<name>`, revisions `main` or a commit oid; dataset repos use the same
    routes under `/api/datasets/` and `/datasets/` instead of `/api/models/` and `/`):

    POST   /api/repos/create                          {name, organization, visibility, type} -> 200 {url} | 409
    DELETE /api/repos/delete                          {name, organization, type} -> 200 | 404 RepoNotFound
    GET    /api/models                                list: `author`, `search` (substring of the id), `limit`
    GET    /api/models/{repo}[/revision/{rev}]        info: id, sha, private, siblings
    PUT    /api/models/{repo}/settings                {visibility: private|public}
    POST   /api/validate-yaml                         {content, repoType} -> no errors
    POST   /api/models/{repo}/preupload/{rev}         "lfs" for binary, >= 10 MB or .gitattributes-tracked files
    POST   /{repo}.git/info/lfs/objects/batch         LFS upload actions ("basic": one PUT), none if known
    PUT    /fake-lfs-storage/{sha256}?signature=      the LFS object (no token: a presigned storage URL)
    POST   /api/models/{repo}/commit/{rev}            NDJSON: header, then file / lfsFile / deletedFile lines
    GET    /api/models/{repo}/tree/{rev}[/{path}]     files (and folders unless recursive); 404 for no such folder
    POST   /api/models/{repo}/paths-info/{rev}        {paths: [...]} -> the entries that exist
    HEAD   /{repo}/resolve/{rev}/{path}               ETag (sha256 for LFS files), X-Repo-Commit, Content-Length
    GET    /{repo}/resolve/{rev}/{path}               the bytes (Range honoured)
    GET    /api/whoami-v2                             the token's user (FAKE_USER) and its organisations
    GET    /api/jobs/hardware                         flavors with prices (`FakeHub.hardware`)
    POST   /api/jobs/{namespace}                      a job spec -> JobInfo (400 for an unknown flavor)
    GET    /api/jobs/{namespace}                      JobInfo list (`stage`, `label` filters)
    GET    /api/jobs/{namespace}/{id}                 JobInfo | 404
    POST   /api/jobs/{namespace}/{id}/cancel          -> 200 (a finished job stays as it is)
    GET    /api/jobs/{namespace}/{id}/logs            server-sent events `data: {"data", "timestamp"}`: the lines
                                                      so far (the last `tail`), then live ones until the job ends
    """

    protocol_version = "HTTP/1.0"  # one request per connection: no pooled socket outlives a test's server

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # requests are recorded, not printed
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # --- dispatch ----------------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        segments = [unquote(part) for part in split.path.split("/")[1:]]
        self._query = parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorized = self.headers.get("Authorization") == f"Bearer {self.hub.token}"
        presigned = method == "PUT" and segments[:1] == ["fake-lfs-storage"] and len(segments) == 2
        if presigned:  # storage URLs carry their credentials in the signature, not the token
            authorized = self.hub._signed(segments[1], self._query.get("signature", [""])[0])
        with self.hub._lock:
            self.hub.requests.append(RecordedRequest(method, split.path, self._query, authorized))
        fault = self.hub._take_fault(method, split.path)
        if fault is not None:
            if fault.disconnect:
                self.close_connection = True
                return
            return self._error(fault.status, fault.message)
        if presigned:
            return self._store_lfs_object(segments[1], body) if authorized else self._error(403, "Bad signature")
        if not authorized:
            return self._error(401, "Invalid credentials in Authorization header", header_message=True)
        if segments[:2] in (["api", "jobs"], ["api", "whoami-v2"]):
            return self._jobs_route(method, segments[2:], body)  # not under the lock: log streams last
        with self.hub._lock:
            self._route(method, segments, body)

    def _route(self, method: str, segments: list[str], body: bytes) -> None:
        # dataset repos use the same routes under /api/datasets/ and /datasets/; they are stored as "datasets/<id>"
        prefix = ""
        if segments[:2] == ["api", "datasets"]:
            segments, prefix = ["api", "models", *segments[2:]], "datasets/"
        elif segments[:1] == ["datasets"]:
            segments, prefix = segments[1:], "datasets/"
        self._prefix = prefix
        match (method, segments):
            case ("POST", ["api", "repos", "create"]):
                return self._create_repo(json.loads(body))
            case ("DELETE", ["api", "repos", "delete"]):
                return self._delete_repo(json.loads(body))
            case ("POST", ["api", "validate-yaml"]):
                return self._json({"errors": [], "warnings": []})
            case ("GET", ["api", "models"]):
                return self._list_repos(prefix)
            case ("GET", ["api", "models", namespace, name]):
                return self._model_info(f"{prefix}{namespace}/{name}", "main")
            case ("GET", ["api", "models", namespace, name, "revision", revision]):
                return self._model_info(f"{prefix}{namespace}/{name}", revision)
            case ("PUT", ["api", "models", namespace, name, "settings"]):
                return self._settings(f"{prefix}{namespace}/{name}", json.loads(body))
            case ("POST", ["api", "models", namespace, name, "preupload", revision]):
                return self._preupload(f"{prefix}{namespace}/{name}", revision, json.loads(body))
            case ("POST", [namespace, name, "info", "lfs", "objects", "batch"]) if name.endswith(".git"):
                return self._lfs_batch(f"{prefix}{namespace}/{name.removesuffix('.git')}", json.loads(body))
            case ("POST", ["api", "models", namespace, name, "commit", revision]):
                return self._commit(f"{prefix}{namespace}/{name}", revision, body)
            case ("GET", ["api", "models", namespace, name, "tree", revision, *path]):
                return self._tree(f"{prefix}{namespace}/{name}", revision, "/".join(path))
            case ("POST", ["api", "models", namespace, name, "paths-info", revision]):
                return self._paths_info(f"{prefix}{namespace}/{name}", revision, body)
            case ("GET" | "HEAD", [namespace, name, "resolve", revision, *path]) if path:
                return self._resolve(method, f"{prefix}{namespace}/{name}", revision, "/".join(path))
        return self._not_found(method)

    def _not_found(self, method: str) -> None:
        return self._error(404, f"Sorry, we can't find the page you are looking for ({method} {self.path}).")

    # --- repo routes -------------------------------------------------------------------------------------

    def _create_repo(self, payload: dict) -> None:
        if payload.get("type") not in (None, "model", "dataset"):
            return self._error(400, "the fake Hub only hosts model and dataset repos")
        repo_id = _key(payload.get("type"), f"{payload.get('organization')}/{payload['name']}")
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            return self._json({"error": "You already created this model repo", "url": url}, status=409)
        self.hub._create(repo_id, private=payload.get("visibility") == "private")
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, payload: dict) -> None:
        repo_id = _key(payload.get("type"), f"{payload.get('organization')}/{payload['name']}")
        if self.hub.repos.pop(repo_id, None) is None:
            return self._repo_not_found()
        return self._json({})

    def _list_repos(self, prefix: str) -> None:
        author = self._query.get("author", [None])[0]
        search = (self._query.get("search", [""])[0]).lower()
        limit = int(self._query.get("limit", ["1000"])[0])
        found = []
        for repo_id, repo in sorted(self.hub.repos.items()):
            if not repo_id.startswith(prefix) or (not prefix and repo_id.startswith("datasets/")):
                continue
            public_id = repo_id.removeprefix(prefix)
            if author is not None and public_id.split("/")[0] != author:
                continue
            if search and search not in public_id.lower():
                continue
            found.append(self._info_json(repo, repo.head, siblings=False))
        return self._json(found[:limit])

    def _info_json(self, repo: FakeRepo, commit: FakeCommit, *, siblings: bool = True) -> dict:
        public_id = repo.repo_id.removeprefix("datasets/")
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": public_id,
            "author": public_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "createdAt": repo.created_at,
            "lastModified": repo.created_at,
            "tags": [],
            "downloads": 0,
            "likes": 0,
        }
        if not repo.repo_id.startswith("datasets/"):
            info["modelId"] = public_id
        if siblings:
            info["siblings"] = [{"rfilename": path} for path in sorted(commit.files)]
        return info

    def _model_info(self, repo_id: str, revision: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return self._json(self._info_json(repo, commit))

    def _settings(self, repo_id: str, payload: dict) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        if "visibility" in payload and not repo.locked_public:
            repo.private = payload["visibility"] == "private"
        return self._json({})

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        current = commit.files if commit is not None else {}
        patterns = repo.lfs_patterns()
        files = []
        for item in payload["files"]:
            path = item["path"]
            sample = base64.b64decode(item.get("sample") or "")
            lfs = (
                int(item.get("size") or 0) >= LFS_MIN_SIZE
                or b"\0" in sample
                or any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in patterns)
            )
            existing = current.get(path)
            files.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(existing) if existing is not None else None,
                }
            )
        return self._json({"files": files, "commitOid": repo.head.oid})

    def _lfs_batch(self, repo_id: str, payload: dict) -> None:
        if repo_id not in self.hub.repos:
            return self._repo_not_found()
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            return self._error(400, "the fake Hub only takes LFS uploads through the basic transfer")
        objects = []
        for item in payload["objects"]:
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.hub.lfs_objects:  # a known object needs no upload
                entry["actions"] = {"upload": {"href": self.hub._upload_url(item["oid"]), "header": {}}}
            objects.append(entry)
        return self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _store_lfs_object(self, oid: str, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "the uploaded content does not match its sha256")
        with self.hub._lock:
            self.hub.lfs_objects[oid] = body
        return self._send(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        if revision != "main":
            return self._error(400, "the fake Hub only commits to main")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "the first line of a commit must be its header")
        added: dict[str, bytes] = {}
        lfs: set[str] = set()
        deleted: list[str] = []
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file" and value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                content = self.hub.lfs_objects.get(value["oid"])
                if content is None or len(content) != value["size"]:
                    return self._error(
                        422,
                        f"Your push was rejected because an LFS pointer pointed to a file that does not exist "
                        f"({value['path']})",
                    )
                added[value["path"]] = content
                lfs.add(value["path"])
            elif line["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"].rstrip("/"))
            else:
                return self._error(400, f"the fake Hub does not support {line['key']!r} commit lines")
        summary = lines[0]["value"]["summary"]
        oid = self.hub._commit(repo, summary, added=added, deleted=tuple(deleted), lfs=frozenset(lfs))
        url = f"{self.hub.url}/{repo_id}/commit/{oid}"
        return self._json({"success": True, "commitOid": oid, "commitUrl": url})

    def _entry(self, commit: FakeCommit, path: str) -> dict:
        data = commit.files[path]
        if path in commit.lfs:
            pointer = lfs_pointer(data)
            return {
                "type": "file",
                "oid": git_blob_oid(pointer),
                "size": len(data),
                "path": path,
                "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)},
            }
        return {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}

    def _tree(self, repo_id: str, revision: str, prefix: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        recursive = self._query.get("recursive", ["False"])[0].lower() == "true"
        base = f"{prefix}/" if prefix else ""
        if base and not any(path.startswith(base) for path in commit.files):
            return self._error(404, f"{prefix} does not exist on {revision}", code="EntryNotFound")
        entries: dict[str, dict] = {}
        for path in sorted(commit.files):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            folders = [base + "/".join(parts[: depth + 1]) for depth in range(len(parts) - 1)]
            for folder in folders if recursive else folders[:1]:
                entries.setdefault(folder, {"type": "directory", "oid": git_blob_oid(folder.encode()), "path": folder})
            if recursive or len(parts) == 1:
                entries[path] = self._entry(commit, path)
        return self._json(list(entries.values()))

    def _paths_info(self, repo_id: str, revision: str, body: bytes) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        found = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                found.append(self._entry(commit, path))
            elif any(name.startswith(path + "/") for name in commit.files):
                found.append({"type": "directory", "oid": git_blob_oid(path.encode()), "path": path})
        return self._json(found)

    def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        if path not in commit.files:
            return self._error(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        etag = hashlib.sha256(data).hexdigest() if path in commit.lfs else git_blob_oid(data)
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
        }
        if path in commit.lfs:  # the Hub redirects these to storage; the linked headers say what will come
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        status, data = self._range(data, headers)
        return self._send(status, data, headers, head=method == "HEAD")

    def _range(self, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Apply a `Range: bytes=a-b` header (what resumed and partial reads send)."""
        wanted = self.headers.get("Range", "")
        if not wanted.startswith("bytes=") or "," in wanted:
            return 200, data
        start_text, _, end_text = wanted[len("bytes=") :].partition("-")
        if start_text:
            start, end = int(start_text), int(end_text) if end_text else len(data) - 1
        else:  # the last N bytes
            start, end = max(0, len(data) - int(end_text)), len(data) - 1
        end = min(end, len(data) - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return 206, data[start : end + 1]

    # --- jobs routes -------------------------------------------------------------------------------------

    def _jobs_route(self, method: str, segments: list[str], body: bytes) -> None:
        if self.path.split("?")[0].rstrip("/") == "/api/whoami-v2":
            return self._whoami() if method == "GET" else self._not_found(method)
        match (method, segments):
            case ("GET", ["hardware"]):
                return self._json(self.hub.hardware)
            case ("POST", [namespace]):
                return self._run_job(namespace, json.loads(body or b"{}"))
            case ("GET", [namespace]):
                return self._list_jobs(namespace)
            case ("GET", [namespace, job_id]):
                job = self._find_job(namespace, job_id)
                return self._job_not_found(job_id) if job is None else self._json(job.to_json(self.hub))
            case ("POST", [namespace, job_id, "cancel"]):
                job = self._find_job(namespace, job_id)
                if job is None:
                    return self._job_not_found(job_id)
                self.hub._cancel(job)
                return self._json({})
            case ("GET", [namespace, job_id, "logs"]):
                job = self._find_job(namespace, job_id)
                return self._job_not_found(job_id) if job is None else self._stream_logs(job)
        return self._not_found(method)

    def _whoami(self) -> None:
        hub = self.hub
        return self._json(
            {
                "type": "user",
                "id": hub.owner_json(hub.user)["id"],
                "name": hub.user,
                "fullname": "Fake User",
                "isPro": False,
                "orgs": [{"type": "org", "name": org, "id": hub.owner_json(org)["id"]} for org in hub.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
            }
        )

    def _run_job(self, namespace: str, spec: dict) -> None:
        flavors = [hardware["name"] for hardware in self.hub.hardware]
        flavor = spec.get("flavor") or "cpu-basic"
        if flavor not in flavors:
            return self._error(400, f"Invalid flavor {flavor!r}: must be one of {', '.join(flavors)}")
        if not spec.get("command") or not (spec.get("dockerImage") or spec.get("spaceId")):
            return self._error(400, "A job needs a command and a dockerImage or a spaceId")
        job = self.hub._submit(namespace, spec)
        with self.hub._lock:
            return self._json(job.to_json(self.hub))

    def _list_jobs(self, namespace: str) -> None:
        stages = set(self._query.get("stage", []))
        labels = dict(label.split("=", 1) for label in self._query.get("label", []) if "=" in label)
        with self.hub._lock:
            found = [
                job.to_json(self.hub)
                for job in self.hub.jobs.values()
                if job.namespace == namespace
                and (not stages or job.stage in stages)
                and all((job.spec.get("labels") or {}).get(key) == value for key, value in labels.items())
            ]
        return self._json(found)

    def _find_job(self, namespace: str, job_id: str) -> FakeJob | None:
        with self.hub._lock:
            job = self.hub.jobs.get(job_id)
        return job if job is not None and job.namespace == namespace else None

    def _job_not_found(self, job_id: str) -> None:
        return self._error(404, f"Job {job_id} not found")

    def _stream_logs(self, job: FakeJob) -> None:
        """The job's log lines as server-sent events: those so far (the last `tail` of them), then each new one
        until the job is in a terminal stage and every line is sent; a comment every `keepalive_s` meanwhile."""
        hub = self.hub
        tail = self._query.get("tail", [None])[0]
        with hub._lock:
            index = max(0, len(job.logs) - int(tail)) if tail is not None else 0
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Request-Id", f"fake-{len(hub.requests)}")
        self.end_headers()
        try:
            while True:
                with hub._lock:
                    if index == len(job.logs) and not job.terminal and not hub._stopping.is_set():
                        hub._changed.wait(hub.keepalive_s)
                    events = job.logs[index:]
                    index += len(events)
                    done = (job.terminal and index == len(job.logs)) or hub._stopping.is_set()
                chunk = "".join(f"data: {json.dumps({'data': line, 'timestamp': stamp})}\n\n" for stamp, line in events)
                self.wfile.write((chunk or ": keep-alive\n\n").encode())
                self.wfile.flush()
                if done:
                    return
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away

    # --- responses ---------------------------------------------------------------------------------------

    def _repo_not_found(self) -> None:
        return self._error(404, "Repository not found", code="RepoNotFound")

    def _error(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        header_message: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        if header_message:
            extra["X-Error-Message"] = message
        return self._json({"error": message}, status=status, headers=extra)

    def _json(self, payload: object, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        return self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, body: bytes, headers: dict[str, str], *, head: bool = False) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", f"fake-{len(self.hub.requests)}")
        self.end_headers()
        if not head:
            self.wfile.write(body)


@pytest.fixture(name="fake_hub")
def fake_hub_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running `FakeHub`; huggingface_hub (and `datasets`) are online for this test only, and their default
    endpoint is the fake."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    session_endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    hub = FakeHub().start()
    # conftest.py turns the library offline for the whole session; 2.4 reads `constants.HF_HUB_OFFLINE` on
    # every request (`is_offline_mode()`), so the module attribute is what counts, the variable is for children.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # The fake is also the default endpoint, so a call that forgets `endpoint=` lands here, recorded, instead of
    # on huggingface.co. Both names move together: `hf_hub_url` swaps `ENDPOINT` for `endpoint=` inside the template.
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    # The fake speaks LFS, the client's fallback when Xet is off (the real Hub stores uploads in Xet).
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    # Building request headers would otherwise fetch the "agent harnesses" registry from the Hub once.
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
    datasets_loaded = "datasets.config" in sys.modules
    if datasets_loaded:
        _point_datasets_at(hub.url, online=True, set_attribute=monkeypatch.setattr)
    try:
        yield hub
    finally:
        hub.stop()
        if not datasets_loaded and "datasets.config" in sys.modules:
            # imported during the test, it read this test's settings; leave it as a fresh import would be
            _point_datasets_at(session_endpoint, online=False, set_attribute=setattr)


def _point_datasets_at(endpoint: str, *, online: bool, set_attribute: Callable[[object, str, object], None]) -> None:
    """`datasets` copies the endpoint and offline mode into `datasets.config` when imported: set them."""
    import datasets.config

    set_attribute(datasets.config, "HF_ENDPOINT", endpoint)
    set_attribute(datasets.config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
    set_attribute(datasets.config, "HF_HUB_OFFLINE", not online)
    set_attribute(datasets.config, "HF_DATASETS_OFFLINE", not online)
