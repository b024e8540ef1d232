"""Status polling under load, over loopback HTTP, while a tiny training runs on the same server.

    python -m bench.load --workdir /tmp/b [--clients 8] [--seconds 20]

The whole server (REST routes and the Gradio app, one process, its worker thread) is started as
`python app.py` serves it. N clients poll for a bounded time: first N REST clients (httpx, an API key)
alternating `GET /tunes/{id}` and `GET /tunes?limit=20`, then N `gradio_client` clients alternating the
`/get_tune` and `/list_tunes` endpoints. Figures per interface and call: p50 and p99 latency, calls per
second, errors; and the training's steps per second during each window (the worker shares the CPU).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import bench_main, context, percentiles_ms, progress, record
from bench.service import astronaut_photos

PAGE = 20
SEED_TUNES = 20
TRAIN_STEPS = 20_000  # far more than a window lasts: the training is cancelled at the end


def _seed(runtime, owner: str) -> list[int]:
    """`SEED_TUNES` finished fast-branch tunes to poll, then a tiny training that keeps the worker busy."""
    from studio.requests import TuneCreate

    photos = astronaut_photos()
    ids = []
    for index in range(SEED_TUNES):
        request = TuneCreate(title=f"load {index}", name="woman", images=photos, branch="fast")
        ids.append(runtime.studio.create_tune(owner, request).tune.id)
    deadline = time.monotonic() + 120
    while any(runtime.studio.get_tune(owner, i).status != "trained" for i in ids):
        if time.monotonic() > deadline:
            raise RuntimeError("the seeded fast tunes did not finish in 120 s")
        time.sleep(0.1)
    training = TuneCreate(title="load training", name="woman", images=photos, branch="tiny", steps=TRAIN_STEPS)
    tune_id = runtime.studio.create_tune(owner, training).tune.id
    while runtime.studio.get_tune(owner, tune_id).progress <= 0:  # past model loading: steps are running
        if time.monotonic() > deadline + 300:
            raise RuntimeError("the tiny training did not start")
        time.sleep(0.2)
    return [*ids, tune_id]


def _window(make_call: Callable[[], Callable[[int], Any]], clients: int, seconds: float):
    """Run `clients` threads, each calling its own `call(i)` until the window closes.

    Returns:
        {"get": [s...], "list": [s...]} latencies of successful calls, errors, and the elapsed time.
    """
    latencies: dict[str, list[float]] = {"get": [], "list": []}
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    until = [0.0]

    def client() -> None:
        call = make_call()
        start.wait()
        index = 0
        while time.monotonic() < until[0]:
            kind = "get" if index % 2 == 0 else "list"
            began = time.perf_counter()
            try:
                call(index)
            except Exception as error:  # counted, not fatal: the figure is how often it happens
                with lock:
                    errors.append(type(error).__name__)
            else:
                with lock:
                    latencies[kind].append(time.perf_counter() - began)
            index += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    until[0] = time.monotonic() + seconds
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    return latencies, errors, time.monotonic() - began


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start the server, seed it, and measure both interfaces under load."""
    from app import serving
    from pipelines.settings import Settings
    from pipelines.tiny import build_tiny_sd15
    from studio.runtime import open_runtime

    context(args.device)
    data = Path(args.workdir) / "data"
    build_tiny_sd15(data / "models" / "tiny-sd15")
    settings = Settings(data_dir=data, device=args.device, default_branch="fast", api_rate_per_minute=10**6)
    runtime = open_runtime(settings)
    try:
        with serving(runtime) as url:
            return _measure(runtime, url, args)
    finally:
        newest = runtime.studio.list_tunes(settings.local_user, limit=1)  # the training, if seeding got that far
        if newest and newest[0].status in ("queued", "training"):
            runtime.studio.cancel_tune(settings.local_user, newest[0].id)
        runtime.close()


def _measure(runtime, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Seed the running server, then poll it through each interface for a window; returns the records."""
    import httpx
    from gradio_client import Client

    owner = runtime.settings.local_user
    progress(f"load: seeding {SEED_TUNES} fast tunes and starting a tiny training")
    ids = _seed(runtime, owner)
    key = runtime.studio.create_api_key(owner)
    records: list[dict[str, Any]] = []

    def rest_client() -> Callable[[int], Any]:
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

        def call(index: int) -> Any:
            path = f"/tunes/{ids[index % len(ids)]}" if index % 2 == 0 else f"/tunes?limit={PAGE}"
            return http.get(path).raise_for_status()

        return call

    def gradio_client() -> Callable[[int], Any]:
        client = Client(url, verbose=False)

        def call(index: int) -> Any:
            if index % 2 == 0:
                return client.predict(tune_id=ids[index % len(ids)], api_name="/get_tune")
            return client.predict(limit=PAGE, api_name="/list_tunes")

        return call

    for interface, make_call in (("rest", rest_client), ("gradio_client", gradio_client)):
        progress(f"load: {args.clients} {interface} clients for {args.seconds:.0f} s while training")
        before = runtime.studio.get_tune(owner, ids[-1]).progress
        latencies, errors, elapsed = _window(make_call, args.clients, args.seconds)
        trained = (runtime.studio.get_tune(owner, ids[-1]).progress - before) * TRAIN_STEPS
        for kind, seconds in latencies.items():
            stats = percentiles_ms(seconds)
            records.append(
                record(
                    "load.poll_latency",
                    stats.pop("value"),
                    "ms",
                    device=args.device,
                    interface=interface,
                    call="get_tune" if kind == "get" else f"list_tunes(limit={PAGE})",
                    clients=args.clients,
                    seconds=round(elapsed, 1),
                    calls_per_s=round(len(seconds) / elapsed, 1),
                    errors=len(errors),
                    error_kinds=sorted(set(errors)),
                    training_steps_per_s=round(trained / elapsed, 2),
                    **stats,
                )
            )
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="data dir of the run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients per interface")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each polling window")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
