"""The service's own costs, through `studio.service.Studio` in one process with its worker thread running.

    python -m bench.service --workdir /tmp/b

Figures: how long a `fast`-branch tune (no training, placeholder images) takes to come back as a client
polling every 10 ms sees it, with and without a prompt; how long the `create_tune` call itself takes
(photo checking included); and the latency of the polling calls (`get_tune`, `list_tunes`) from one
thread and from 8 at once. These are in-process calls: no HTTP, no serialisation to JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import bench_main, context, median, percentiles_ms, progress, record, spread
from storage.records import TUNE_UNUSABLE, PromptStatus, TuneStatus

if TYPE_CHECKING:
    from studio.runtime import Runtime
    from studio.service import Studio

OWNER = "bench"
BRANCH = "fast"
CLASS_NAME = "woman"
POLL_EVERY_S = 0.01
PAGE = 20  # list_tunes(limit=...)
WAIT_LIMIT_S = 60.0  # a tune or prompt not finished by then means the worker is stuck


def astronaut_photos() -> list[tuple[str, bytes]]:
    """Four distinct JPEGs of one real face (~512 px): the photo, its mirror image, a crop, a brighter crop.

    Distinct, so that the photo check reports none of them as a near-duplicate of another.
    """
    from PIL import Image, ImageEnhance
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    variants = [
        photo,
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        photo.crop((0, 0, 400, 400)).resize((512, 512)),
        ImageEnhance.Brightness(photo.crop((60, 0, 460, 400))).enhance(1.3).resize((480, 480)),
    ]
    photos = []
    for index, image in enumerate(variants):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        photos.append((f"astronaut-{index}.jpg", buffer.getvalue()))
    return photos


def _poll(status: Callable[[], tuple[str, str | None]], wanted: str, what: str) -> None:
    """Call `status` every POLL_EVERY_S until it returns `wanted`.

    Raises:
        RuntimeError: the job ended in another state (failed, cancelled). TimeoutError: not done in time.
    """
    deadline = time.monotonic() + WAIT_LIMIT_S
    while True:
        current, error = status()
        if current == wanted:
            return
        if current in (*TUNE_UNUSABLE, PromptStatus.FAILED):
            raise RuntimeError(f"{what} is {current}, not {wanted}: {error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} is still {current} after {WAIT_LIMIT_S:.0f} s (waiting for {wanted})")
        time.sleep(POLL_EVERY_S)


def _turnaround(studio: Studio, photos: list[tuple[str, bytes]], title: str, *, prompt: bool) -> tuple[float, float]:
    """Create one tune (with one prompt or none) and poll until it is trained, or its prompt done.

    Returns the seconds the create_tune call took and the seconds until the poll saw the result.
    """
    from studio.requests import PromptCreate, TuneCreate

    prompts = [PromptCreate("{{subject}}", num_images=1)] if prompt else []
    request = TuneCreate(title=title, name=CLASS_NAME, images=photos, branch=BRANCH, prompts=prompts)
    started = time.perf_counter()
    tune = studio.create_tune(OWNER, request).tune
    called = time.perf_counter() - started
    if prompt:
        prompt_id = studio.list_prompts(OWNER, tune_id=tune.id, limit=1)[0].id

        def status() -> tuple[str, str | None]:
            found = studio.get_prompt(OWNER, prompt_id)
            return found.status, found.error

        _poll(status, PromptStatus.DONE, f"prompt {prompt_id} of tune {title!r}")
    else:

        def status() -> tuple[str, str | None]:
            found = studio.get_tune(OWNER, tune.id)
            return found.status, found.error

        _poll(status, TuneStatus.TRAINED, f"tune {title!r}")
    return called, time.perf_counter() - started


def _fill(runtime: Runtime, total: int) -> list[int]:
    """Bring the owner's tunes up to `total` with trained copies of the newest one; returns all their ids.

    Copies are written through the database (no photo check: ~1 s saved per tune on 2 CPU cores); each
    keeps the copied tune's photo report and other fields, so a row costs what a created one costs to read.
    """
    tunes = runtime.db.list_tunes(OWNER, limit=total, offset=0)
    template = dataclasses.asdict(tunes[0])
    for key in ("id", "owner", "created_at", "updated_at"):
        template.pop(key)
    with runtime.db.transaction() as conn:
        for index in range(len(tunes), total):
            runtime.db.insert_tune(conn, OWNER, {**template, "title": f"copy {index}", "status": TuneStatus.TRAINED})
    return [tune.id for tune in runtime.db.list_tunes(OWNER, limit=total, offset=0)]


def _timed_calls(call: Callable[[int], Any], count: int, latencies: list[float]) -> None:
    for index in range(count):
        started = time.perf_counter()
        call(index)
        latencies.append(time.perf_counter() - started)


def _latencies(call: Callable[[int], Any], *, threads: int, calls_per_thread: int) -> tuple[list[float], float]:
    """Per-call seconds of `call(i)` from `threads` threads started together, and the calls per second."""
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def work(latencies: list[float]) -> None:
        start.wait()
        _timed_calls(call, calls_per_thread, latencies)

    workers = [threading.Thread(target=work, args=(latencies,)) for latencies in per_thread]
    for worker in workers:
        worker.start()
    start.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return [value for latencies in per_thread for value in latencies], threads * calls_per_thread / elapsed


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure the service on the fast branch and return the records."""
    # 1. Imports and the run context first, so that neither is timed
    from pipelines.settings import Settings
    from studio.runtime import open_runtime

    context(args.device)
    records: list[dict[str, Any]] = []
    photos = astronaut_photos()
    settings = Settings(data_dir=Path(args.workdir) / "data", device=args.device)

    def add(bench: str, value: float, unit: str, **params: Any) -> None:
        records.append(record(bench, value, unit, device=args.device, **params))

    runtime = open_runtime(settings, start_worker=True)
    try:
        # 2. One untimed tune with a prompt: first-use costs (face detector, placeholder renderer) are paid here
        progress("service: warm-up tune")
        _turnaround(runtime.studio, photos, "warm-up", prompt=True)

        # 3. Turnaround of fresh tunes, without and with one prompt
        for prompt in (False, True):
            progress(f"service: {args.tunes} fast tunes, {int(prompt)} prompt(s) each")
            found = [
                _turnaround(runtime.studio, photos, f"tune {i} with {int(prompt)} prompt(s)", prompt=prompt)
                for i in range(args.tunes)
            ]
            call_s, done_s = [c for c, _ in found], [d for _, d in found]
            shape = {"branch": BRANCH, "photos": len(photos), "prompts": int(prompt)}
            add("service.create_tune_call", median(call_s), "s", **shape, **spread(call_s))
            figure = "service.fast_prompt_turnaround" if prompt else "service.fast_turnaround"
            waited = {"num_images": 1} if prompt else {}
            waited |= {"poll_ms": POLL_EVERY_S * 1000, "after_call_s": round(median([d - c for c, d in found]), 4)}
            add(figure, median(done_s), "s", **shape, **waited, **spread(done_s))

        # 4. Polling calls, with `args.db_tunes` tunes in the database and the worker idle
        tune_ids = _fill(runtime, args.db_tunes)
        studio = runtime.studio
        calls: dict[str, Callable[[int], Any]] = {
            "get_tune": lambda i: studio.get_tune(OWNER, tune_ids[i % len(tune_ids)]),
            "list_tunes": lambda i: studio.list_tunes(OWNER, limit=PAGE),
        }
        for threads, per_thread in ((1, args.calls), (args.concurrency, args.calls_per_thread)):
            for name, call in calls.items():
                progress(f"service: {threads} thread(s) x {per_thread} {name} calls")
                seconds, rate = _latencies(call, threads=threads, calls_per_thread=per_thread)
                stats = percentiles_ms(seconds)
                page = {"limit": PAGE} if name == "list_tunes" else {}
                add(
                    "service.poll_latency",
                    stats.pop("value"),
                    "ms",
                    call=name,
                    **page,
                    tunes=len(tune_ids),
                    concurrency=threads,
                    calls_per_s=round(rate, 1),
                    **stats,
                )
    finally:
        runtime.close()
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="data dir of the run (database, photos)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--tunes", type=int, default=10, help="timed tunes per turnaround figure")
    parser.add_argument("--db-tunes", type=int, default=50, help="tunes in the database for the polling figures")
    parser.add_argument("--calls", type=int, default=2000, help="calls of each kind from one thread")
    parser.add_argument("--concurrency", type=int, default=8, help="threads calling at once")
    parser.add_argument("--calls-per-thread", type=int, default=300, help="calls of each kind per concurrent thread")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
