"""Status polling under load, over loopback HTTP, while a tiny training runs on the same server.

    python -m bench.load --workdir /tmp/b [--clients 8] [--seconds 20]

The server is `python app.py` in a process of its own (REST routes and the Gradio app on one uvicorn
server, its worker thread), as `make run` starts it; the clients run in this process, so their own work
does not take the server's GIL (they do share the machine's cores). The server is seeded over REST with
finished `fast` tunes and a `tiny` training that keeps its worker busy. First the training runs alone for
a window, then N clients poll for a window through each interface: REST clients (httpx, an API key)
alternating `GET /tunes/{id}` and `GET /tunes?limit=20`, then `gradio_client` clients alternating the
`/get_tune` and `/list_tunes` endpoints. Figures per interface and call: p50 and p99 latency, calls per
second, errors, the server process's CPU time per call; and the training's steps per second in each window.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, bench_main, child_env, context, percentiles_ms, progress, record
from bench.service import astronaut_photos
from storage.records import TuneStatus

PAGE = 20
SEED_TUNES = 20
TRAIN_STEPS = 20_000  # far more than the windows last: the training is deleted at the end
OWNER = "local"  # the server's one user when nobody signs in (TUNES_LOCAL_USER's default)


class Server:
    """`python app.py` on a free loopback port with its own data folder; `stop()` ends it."""

    def __init__(self, data_dir: Path, log: Path, *, device: str):
        self.env = {
            **child_env(),
            "TUNES_DATA_DIR": str(data_dir),
            "TUNES_DEFAULT_BRANCH": "fast",
            "TUNES_API_RATE_PER_MINUTE": str(10**6),  # the pollers are not to be rate-limited
            "TUNES_LOCAL_USER": OWNER,
            "TUNES_DEVICE": device,
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        self.log = log
        self.process: subprocess.Popen | None = None
        self.url = ""

    def create_key(self) -> str:
        command = [sys.executable, "-m", "admin", "create-key", OWNER]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def start(self, key: str) -> str:
        import httpx

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "app.py"],
                cwd=ROOT,
                env={**self.env, "GRADIO_SERVER_PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/tunes", headers={"Authorization": f"Bearer {key}"}).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within 180 s; see {self.log}")
            time.sleep(0.2)

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time of the server process so far (Linux /proc), or None elsewhere."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # uvicorn's clean shutdown
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _seed(http) -> list[int]:
    """`SEED_TUNES` finished fast-branch tunes to poll, then a tiny training that keeps the worker busy;
    returns their ids, the training's last."""
    photos = [("tune[images][]", (name, data, "image/jpeg")) for name, data in astronaut_photos()]

    def create(title: str, **fields: Any) -> int:
        form = {"tune[title]": title, "tune[name]": "woman", **{f"tune[{k}]": str(v) for k, v in fields.items()}}
        answer = http.post("/tunes", data=form, files=photos, timeout=120)
        answer.raise_for_status()
        return answer.json()["id"]

    ids = [create(f"load {index}", branch="fast") for index in range(SEED_TUNES)]

    def seeded_trained() -> bool:
        return all(_tune(http, i)["status"] == TuneStatus.TRAINED for i in ids)

    _wait("the seeded fast tunes to finish", seeded_trained, 120)
    training = create("load training", branch="tiny", steps=TRAIN_STEPS)
    _wait("the tiny training to start its steps", lambda: _tune(http, training)["progress"] > 0, 300)
    return [*ids, training]


def _delete_training(http) -> None:
    """Delete the long training if it exists (also when seeding failed after creating it); best effort."""
    import httpx

    try:
        for tune in http.get("/tunes", params={"limit": 100}).json():
            if tune["title"] == "load training":
                http.delete(f"/tunes/{tune['id']}")
    except (httpx.HTTPError, ValueError, TypeError, KeyError) as error:
        progress(f"load: could not delete the training ({error}); the data folder may resume it")


def _tune(http, tune_id: int) -> dict[str, Any]:
    answer = http.get(f"/tunes/{tune_id}")
    answer.raise_for_status()
    return answer.json()


def _wait(what: str, done: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(0.2)


def _window(make_call: Callable[[], Callable[[int], Any]], clients: int, seconds: float):
    """Run `clients` threads, each calling its own `call(i)` until the window closes (0 clients: just wait).

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
    if not threads:
        time.sleep(seconds)
    for thread in threads:
        thread.join()
    return latencies, errors, time.monotonic() - began


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start the server, seed it, and measure the training alone and both interfaces polling it."""
    import httpx

    from pipelines.tiny import build_tiny_sd15

    context(args.device)
    workdir = Path(args.workdir)
    build_tiny_sd15(workdir / "data" / "models" / "tiny-sd15")
    server = Server(workdir / "data", workdir / "server.log", device=args.device)
    key = server.create_key()
    progress("load: starting `python app.py`")
    url = server.start(key)
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    try:
        progress(f"load: seeding {SEED_TUNES} fast tunes and starting a tiny training")
        ids = _seed(http)
        return _measure(server, http, ids, key, args)
    finally:
        try:
            _delete_training(http)  # a later run on this data folder must not resume the long training
        finally:
            http.close()
            server.stop()


def _measure(server: Server, http, ids: list[int], key: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The training alone for a window, then each interface polling for a window; returns the records."""
    import httpx
    from gradio_client import Client

    opened: list[Any] = []

    def rest_client() -> Callable[[int], Any]:
        client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        opened.append(client)

        def call(index: int) -> Any:
            path = f"/tunes/{ids[index % len(ids)]}" if index % 2 == 0 else f"/tunes?limit={PAGE}"
            return client.get(path).raise_for_status()

        return call

    def gradio_client() -> Callable[[int], Any]:
        client = Client(f"{server.url}/", verbose=False)
        opened.append(client)

        def call(index: int) -> Any:
            if index % 2 == 0:
                return client.predict(tune_id=ids[index % len(ids)], api_name="/get_tune")
            return client.predict(limit=PAGE, api_name="/list_tunes")

        return call

    records: list[dict[str, Any]] = []
    windows = (
        ("none", rest_client, 0),
        ("rest", rest_client, args.clients),
        ("gradio_client", gradio_client, args.clients),
    )
    for interface, make_call, clients in windows:
        progress(f"load: {clients} {interface} clients for {args.seconds:.0f} s while training")
        steps_before, cpu_before = _tune(http, ids[-1])["progress"] * TRAIN_STEPS, server.cpu_seconds()
        latencies, errors, elapsed = _window(make_call, clients, args.seconds)
        steps = _tune(http, ids[-1])["progress"] * TRAIN_STEPS - steps_before
        cpu = None if cpu_before is None else server.cpu_seconds() - cpu_before
        for client in opened:
            client.close()
        opened.clear()
        common = {"device": args.device, "interface": interface, "clients": clients, "seconds": round(elapsed, 1)}
        if not clients:
            records.append(record("load.training_speed", steps / elapsed, "steps/s", **common, server_cpu_s=cpu))
            continue
        calls = sum(len(seconds) for seconds in latencies.values())
        for kind, seconds in latencies.items():
            stats = percentiles_ms(seconds)
            records.append(
                record(
                    "load.poll_latency",
                    stats.pop("value"),
                    "ms",
                    **common,
                    call="get_tune" if kind == "get" else f"list_tunes(limit={PAGE})",
                    calls_per_s=round(len(seconds) / elapsed, 1),
                    errors=len(errors),
                    error_kinds=sorted(set(errors)),
                    training_steps_per_s=round(steps / elapsed, 2),
                    server_cpu_ms_per_call=None if cpu is None or not calls else round(cpu / calls * 1000, 2),
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
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
