"""The studio's own cost per Hugging Face job (`TUNES_TRAIN_ON=hf-jobs`), against the test fake Hub.

    python -m bench.jobs --workdir /tmp/b [--jobs 3] [--steps 20] [--images 4]

The Hub is `tests.fakehub.FakeHub`, served from a process of its own (`python -m bench.jobs --serve-hub`, started
by this one): its Jobs API runs each job, `python -m studio.job`, as a local subprocess of that process, the
"remote machine" (its data folder holds the `tiny` model, built before the first job, as an image would). So this
process is the studio alone: `studio.hf_jobs.JobsBackend` with its records, driven tick by tick as its own thread
drives it (a tick at submission, then one every `_TICK_S`), and its CPU time is the studio's. Loopback HTTP to
the fake: network latency to the real Hub is not in any figure.

Each job trains a `tiny` tune of `--steps` steps on 4 photos and renders its one prompt (`--images` images, 2
steps) in the same job. Figures, medians over `--jobs` jobs: the submission in parts (claiming the tune, the
crops, the training-set push, the `run_job` call); the time from the submission to the first progress on the tune
record, split by the fake's timestamps (job running, its first progress line logged, that line on the record);
the studio's CPU while the job runs (its log-following thread and its ticks); and the fetch of the rendered
images when the job completes, per image.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import ROOT, bench_main, child_env, median, progress, record, spread
from bench.service import astronaut_photos

if TYPE_CHECKING:
    from studio.hf_jobs import JobsBackend

OWNER = "bench"
NAMESPACE = "studio"  # an organisation of the fake Hub's user
CLASS_NAME = "woman"
WAIT_LIMIT_S = 600.0  # a job not finished by then is stuck
HUB_START_LIMIT_S = 300.0  # the remote machine builds the tiny model before it answers (once per workdir)


@dataclass
class JobMarks:
    """What one job's submission and run took, as the studio saw it (`time.time()` and CPU seconds)."""

    tick_started: float = 0.0
    crops: tuple[float, float] = (0.0, 0.0)
    run_job: tuple[float, float] = (0.0, 0.0)
    run_cpu: float = 0.0  # process CPU when `run_job` returned
    job_id: str = ""
    first_line_received: float | None = None  # the first progress line reached the studio's log reader
    first_progress_recorded: float | None = None  # ... and was on the tune record
    log_lines: int = 0
    log_thread_cpu: float | None = None
    ticks: int = 0
    tick_cpu: float = 0.0  # the main thread's CPU in the ticks while the job ran
    completed_seen: float | None = None
    completed_cpu: float = 0.0  # process CPU when the studio saw COMPLETED
    fetch: tuple[float, float] = (0.0, 0.0)
    fetch_cpu: float = 0.0
    images: int = 0
    finished: float = 0.0  # the tune was trained, the job forgotten


@dataclass
class Probe:
    """Times the backend's steps by wrapping its methods and its Hub client on the instance (the code is the
    backend's own; each wrapper only stamps the clock around it)."""

    marks: JobMarks = field(default_factory=JobMarks)

    def attach(self, backend: JobsBackend) -> None:
        api = backend.api
        backend._training_images = self._timed(backend._training_images, "crops")
        backend._fetch_renders = self._fetched(backend._fetch_renders)
        backend._completed = self._completed(backend._completed)
        backend._follow_logs = self._followed(backend._follow_logs)
        api.run_job = self._started(api.run_job)
        api.fetch_job_logs = self._logs(api.fetch_job_logs)

    def _timed(self, method: Callable, name: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                return method(*args, **kwargs)
            finally:
                setattr(self.marks, name, (started, time.time()))

        return timed

    def _started(self, run_job: Callable) -> Callable:
        def started(*args: Any, **kwargs: Any) -> Any:
            begun = time.time()
            job = run_job(*args, **kwargs)
            self.marks.run_job, self.marks.run_cpu, self.marks.job_id = (
                (begun, time.time()),
                time.process_time(),
                job.id,
            )
            return job

        return started

    def _logs(self, fetch_job_logs: Callable) -> Callable:
        def logs(*args: Any, **kwargs: Any) -> Iterator[str]:
            for line in fetch_job_logs(*args, **kwargs):
                self.marks.log_lines += 1
                first = self.marks.first_line_received is None and line.startswith('{"event": "progress"')
                if first:
                    self.marks.first_line_received = time.time()
                yield line
                if first:  # the backend asks for the next line once it has handled this one
                    self.marks.first_progress_recorded = time.time()

        return logs

    def _followed(self, follow: Callable) -> Callable:
        def followed(*args: Any, **kwargs: Any) -> None:
            started = time.thread_time()
            try:
                follow(*args, **kwargs)
            finally:
                self.marks.log_thread_cpu = time.thread_time() - started

        return followed

    def _completed(self, completed: Callable) -> Callable:
        def seen(*args: Any, **kwargs: Any) -> None:
            self.marks.completed_seen, self.marks.completed_cpu = time.time(), time.process_time()
            completed(*args, **kwargs)

        return seen

    def _fetched(self, fetch: Callable) -> Callable:
        def fetched(*args: Any, **kwargs: Any) -> dict:
            started, cpu = time.time(), time.process_time()
            rendered = fetch(*args, **kwargs)
            self.marks.fetch, self.marks.fetch_cpu = (started, time.time()), time.process_time() - cpu
            self.marks.images = sum(len(images) for images in rendered.values())
            return rendered

        return fetched


# --- the remote machine: the fake Hub in a process of its own ---


def serve_hub(remote_dir: Path, job_threads: int, device: str) -> None:
    """Build the `tiny` model into the remote machine's data folder, serve a fake Hub whose jobs run there, print
    its URL on stdout, and serve until stdin closes."""
    from pipelines.tiny import build_tiny_sd15
    from tests.fakehub import FakeHub

    build_tiny_sd15(remote_dir / "models" / "tiny-sd15")
    hub = FakeHub().start()
    hub.job_extra_env = {"TUNES_DATA_DIR": str(remote_dir), "OMP_NUM_THREADS": str(job_threads), "TUNES_DEVICE": device}
    print(hub.url, flush=True)
    try:
        sys.stdin.read()
    finally:
        hub.stop()


class RemoteHub:
    """The fake Hub's process, started with `python -m bench.jobs --serve-hub`; a context manager."""

    def __init__(self, remote_dir: Path, job_threads: int, device: str):
        command = [sys.executable, "-m", "bench.jobs", "--serve-hub", "--workdir", str(remote_dir)]
        command += ["--job-threads", str(job_threads), "--device", device]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        found: list[str] = []
        started = threading.Event()

        def read() -> None:  # the first line is the URL; the rest is drained, so the pipe never fills
            assert self.process.stdout is not None
            found.append(self.process.stdout.readline().strip())
            started.set()
            for _ in self.process.stdout:
                pass

        threading.Thread(target=read, name="fake-hub-stdout", daemon=True).start()
        started.wait(HUB_START_LIMIT_S)
        if not found or not found[0].startswith("http"):
            self.close()
            raise RuntimeError(f"the fake Hub did not start within {HUB_START_LIMIT_S:.0f} s (see stderr)")
        self.url = found[0]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()  # the hub stops its jobs and exits
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RemoteHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def point_at(url: str, hf_home: Path) -> None:
    """Send huggingface_hub and `datasets` in this process to the fake at `url`, online (`make bench` sets
    HF_HUB_OFFLINE=1), over LFS (the fake does not speak Xet), as the tests' `fake_hub` fixture does. Call it before
    `datasets` is imported: it reads its settings once, at import."""
    if "datasets.config" in sys.modules:
        raise RuntimeError("`datasets` was imported before the fake Hub's address was known")
    os.environ.update(
        HF_ENDPOINT=url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_HOME=str(hf_home), HF_DATASETS_OFFLINE="0"
    )
    # stderr is for the bench's progress lines: no bars or notices from `datasets` pushing a training set
    os.environ.update(HF_DATASETS_DISABLE_PROGRESS_BARS="1", DATASETS_VERBOSITY="error")
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent, disable_progress_bars

    disable_progress_bars()  # `python -m bench` sets HF_HUB_DISABLE_PROGRESS_BARS; `python -m bench.jobs` may not
    constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET = url, False, True
    constants.HUGGINGFACE_CO_URL_TEMPLATE = url + "/{repo_id}/resolve/{revision}/{filename}"
    _detect_agent._registry = _detect_agent._EMPTY_REGISTRY  # else the first request fetches a registry


def log_timestamps(url: str, token: str, job_id: str) -> list[tuple[float, str]]:
    """The ended job's log as the fake Hub stamped it: (`time.time()` the line was read from the job, the line)."""
    import httpx

    response = httpx.get(
        f"{url}/api/jobs/{NAMESPACE}/{job_id}/logs", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    response.raise_for_status()
    return parse_log_events(response.text)


def parse_log_events(text: str) -> list[tuple[float, str]]:
    """(time, line) of each `data:` event of a log stream (server-sent events; comments skipped)."""
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            event = json.loads(line[len("data: ") :])
            stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            events.append((stamp, event["data"]))
    return events


# --- the bench ---


def _run_one(
    backend: JobsBackend, probe: Probe, tick_s: float, title: str, args: argparse.Namespace, photos: list
) -> JobMarks:
    """Create a tune with one prompt, tick the backend until its job is over, and return what it took."""
    from storage.records import TuneStatus
    from studio.requests import PromptCreate, TuneCreate

    prompt = PromptCreate("{{subject}} in a garden", num_images=args.images, steps=2, seed=7)
    request = TuneCreate(title=title, name=CLASS_NAME, images=photos, branch="tiny", steps=args.steps, prompts=[prompt])
    tune = backend.studio.create_tune(OWNER, request).tune
    probe.marks = marks = JobMarks()
    # 1. The submission: the tick that claims the tune, prepares, pushes and starts the job
    marks.tick_started = time.time()
    backend.tick()
    if not marks.job_id:
        raise RuntimeError(f"no job was started: {backend.studio.get_tune(OWNER, tune.id).error}")
    # 2. The job runs: a tick every `tick_s`, as the backend's thread does, until the job is over
    deadline = time.monotonic() + WAIT_LIMIT_S
    while backend.followed:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {marks.job_id} still running after {WAIT_LIMIT_S:.0f} s")
        time.sleep(tick_s)
        cpu = time.thread_time()
        backend.tick()
        if marks.completed_seen is None:
            marks.ticks += 1
            marks.tick_cpu += time.thread_time() - cpu
    marks.finished = time.time()
    ended = backend.studio.get_tune(OWNER, tune.id)
    if ended.status != TuneStatus.TRAINED:
        raise RuntimeError(f"tune {tune.id} ended {ended.status}: {ended.error}")
    return marks


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run `args.jobs` jobs against the fake Hub and return the records."""
    workdir = Path(args.workdir)
    progress("jobs: starting the fake Hub (the remote machine builds the tiny model first)")
    with RemoteHub(workdir / "remote", args.job_threads, args.device) as hub:
        point_at(hub.url, workdir / "studio-hf-home")
        # 1. Imports after the Hub's address is set (`datasets` reads it at import), then warm-ups
        from huggingface_hub import HfApi

        from pipelines.settings import Settings
        from storage.training_sets import delete_training_set, push_training_set
        from studio import hf_jobs
        from studio.runtime import open_runtime
        from tests.fakehub import FAKE_TOKEN

        settings = Settings(
            data_dir=workdir / "studio",
            device="cpu",
            hf_token=FAKE_TOKEN,
            hub_namespace=NAMESPACE,
            train_on="hf-jobs",
            jobs_image="tune-studio:bench",
            worker_devices=("none",),  # no local GPU: as on a Space's CPU machine
        )
        photos = astronaut_photos()
        # what only a process's first training set pays (importing `datasets`, its first dataset)
        from PIL import Image

        warm = f"{NAMESPACE}/bench-warm-up-photos"
        push_training_set([Image.new("RGB", (64, 64))], "warm up", repo_id=warm, token=FAKE_TOKEN)
        delete_training_set(warm, token=FAKE_TOKEN)
        runtime = open_runtime(settings, start_worker=False)
        api = HfApi(endpoint=hub.url, token=FAKE_TOKEN)
        backend = hf_jobs.JobsBackend(runtime.studio, runtime.store, api=api)
        probe = Probe()
        probe.attach(backend)
        found: list[tuple[JobMarks, list[tuple[float, str]], Any]] = []
        try:
            backend.check_flavor()
            for index in range(args.jobs):
                progress(f"jobs: job {index + 1}/{args.jobs} (tiny, {args.steps} steps, {args.images} images)")
                marks = _run_one(backend, probe, hf_jobs._TICK_S, f"job {index}", args, photos)
                info = api.inspect_job(job_id=marks.job_id, namespace=NAMESPACE)
                found.append((marks, log_timestamps(hub.url, FAKE_TOKEN, marks.job_id), info))
        finally:
            backend.stop()
            runtime.close()
    return _records(found, args, tick_s=hf_jobs._TICK_S)


def _records(found: list, args: argparse.Namespace, *, tick_s: float) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    shape = {"branch": "tiny", "steps": args.steps, "images": args.images, "jobs": len(found)}

    def add(bench: str, values: list[float], unit: str, scale: float = 1.0, **params: Any) -> None:
        scaled = [value * scale for value in values]
        records.append(record(bench, median(scaled), unit, device=args.device, **params, **shape, **spread(scaled)))

    marks = [m for m, _, _ in found]
    # 1. The submission, in parts
    add("jobs.submit", [m.crops[0] - m.tick_started for m in marks], "s", part="claim")
    add("jobs.submit", [m.crops[1] - m.crops[0] for m in marks], "s", part="crops")
    add("jobs.submit", [m.run_job[0] - m.crops[1] for m in marks], "s", part="push_training_set")
    add("jobs.submit", [m.run_job[1] - m.run_job[0] for m in marks], "s", part="run_job")
    # 2. From the job's start to its first progress on the record, by the fake's clock in between
    running, first_line, to_record, to_reader = [], [], [], []
    for m, logs, info in found:
        stamp = next(t for t, line in logs if line.startswith('{"event": "progress"'))
        running.append(info.started_at.timestamp() - m.run_job[1])
        first_line.append(stamp - m.run_job[1])
        to_reader.append(m.first_line_received - stamp)
        to_record.append(m.first_progress_recorded - stamp)
    started = [m.first_progress_recorded - m.run_job[1] for m in marks]
    add(
        "jobs.first_progress",
        started,
        "s",
        running_after_s=round(median(running), 4),
        first_line_after_s=round(median(first_line), 4),
        line_to_reader_ms=round(median(to_reader) * 1000, 2),
        line_to_record_ms=round(median(to_record) * 1000, 2),
    )
    add("jobs.submit_to_first_progress", [m.first_progress_recorded - m.tick_started for m in marks], "s")
    # 3. The studio's CPU while the job ran: its log reader and its ticks
    wall = [m.completed_seen - m.run_job[1] for m in marks]
    cpu = [m.completed_cpu - m.run_cpu for m in marks]
    add(
        "jobs.follow_cpu",
        cpu,
        "ms",
        scale=1000,
        job_s=round(median(wall), 2),
        cpu_cores=round(median([c / w for c, w in zip(cpu, wall, strict=True)]), 5),
        cpu_ms_per_min=round(median([c / w * 60_000 for c, w in zip(cpu, wall, strict=True)]), 2),
        log_thread_ms=round(median([m.log_thread_cpu or 0.0 for m in marks]) * 1000, 2),
        log_ms_per_line=round(median([(m.log_thread_cpu or 0.0) / max(m.log_lines, 1) for m in marks]) * 1000, 3),
        log_lines=int(median([m.log_lines for m in marks])),
        ticks=int(median([m.ticks for m in marks])),
        tick_cpu_ms=round(median([m.tick_cpu / max(m.ticks, 1) for m in marks]) * 1000, 3),
        tick_s=tick_s,
    )
    # 4. At completion: the rendered images, per image, and the whole end of the tune
    per_image = [(m.fetch[1] - m.fetch[0]) / max(m.images, 1) for m in marks]
    add(
        "jobs.fetch_renders",
        per_image,
        "s/image",
        fetch_s=round(median([m.fetch[1] - m.fetch[0] for m in marks]), 4),
        fetch_cpu_s=round(median([m.fetch_cpu for m in marks]), 4),
        completed_to_trained_s=round(median([m.finished - m.completed_seen for m in marks]), 4),
    )
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="data folders of the studio and the remote machine")
    parser.add_argument("--device", default="cpu", help="where the jobs train and render (TUNES_DEVICE of the jobs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads of this process (it runs no model)")
    parser.add_argument("--jobs", type=int, default=3, help="jobs in a row, one tune each")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each tune")
    parser.add_argument("--images", type=int, default=4, help="images its prompt renders in the job")
    parser.add_argument("--job-threads", type=int, default=1, help="OMP_NUM_THREADS of each job (default 1)")
    parser.add_argument("--serve-hub", action="store_true", help="be the fake Hub's process (used by the bench)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_hub:
        serve_hub(Path(args.workdir), args.job_threads, args.device)
        return
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
