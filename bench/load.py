"""Status polling under load, over loopback HTTP, while a tiny training runs in a worker process.

    python -m bench.load --workdir /tmp/b [--clients 8] [--many-clients 100] [--interval 1] [--seconds 20]

The server is `python app.py` as `make run` starts it: the web process (REST routes and the Gradio app on one
uvicorn server) and the local worker process it spawns and supervises (`python -m studio.worker`, one per
`TUNES_WORKER_DEVICES` entry; here one, on `--device`), which runs the trainings. The clients run in this
process (threads, each with a client of its own), so neither their work nor the training takes the web
process's GIL. All three processes share the machine's cores, which clients in use would not: the server runs at
a lower priority (`--server-nice`, web and worker alike), this process freezes its startup objects out of the
garbage collector, and `gradio_client` skips loading the CA bundle for each call (the server is plain HTTP),
so that the clients' own waiting is not what is measured; the records say what the clients cost.

The server is seeded over REST with finished `fast` tunes and a `tiny` training that keeps the worker busy.
Windows of `--seconds` follow: the training alone; `--clients` REST clients (httpx, an API key) calling back to
back, alternating `GET /tunes/{id}` and `GET /tunes?limit=20`; `--many-clients` REST clients each calling
`GET /tunes/{id}` once every `--interval` seconds (a tune's watchers; the UI polls every 1.5-2 s); `--clients`
`gradio_client` clients calling back to back, alternating `/get_tune` and `/list_tunes`; the training alone again.

Figures: the training's steps per second in every window; per interface and call p50 and p99 latency, calls per
second, errors and the web process's CPU time per call (the web process only: the worker is its child and its
CPU is not in that figure); the resident memory (VmRSS) of the web process, which loads no model, and of the
worker, and whether each has torch loaded (`libtorch` mapped).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, bench_main, child_env, context, percentiles_ms, progress, record
from bench.service import astronaut_photos
from storage.records import TuneStatus

PAGE = 20
SEED_TUNES = 20
TRAIN_STEPS = 20_000  # far more than the windows last: the training is deleted at the end
OWNER = "local"  # the server's one user when nobody signs in (TUNES_LOCAL_USER's default)
HERD_S = 0.5  # the clients are released this long before the window opens, and wait for it
MARK_POLL_S = 0.02  # how often a window's edge polls the training's progress (written every 0.5 s)


# --- the processes, from /proc (Linux; elsewhere the figures that need it are None) ---


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time of process `pid` so far (its own threads; not its children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int | None, field: str = "VmRSS") -> float | None:
    """A memory line of /proc/<pid>/status (`VmRSS`: resident now, `VmHWM`: its peak) in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except (OSError, TypeError, ValueError):
        pass
    return None


def torch_loaded(pid: int | None) -> bool | None:
    """Whether the process has torch's library mapped (it imported torch), from /proc/<pid>/maps."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except (OSError, TypeError):
        return None


def worker_pids(parent: int) -> list[int]:
    """The `studio.worker` processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"studio.worker" in command:
            found.append(int(entry.name))
    return sorted(found)


class Server:
    """`python app.py` (web process plus its local worker) on a free loopback port with its own data folder."""

    def __init__(self, data_dir: Path, log: Path, *, device: str, threads: int | None = None, nice: int = 0):
        self.env = {
            **child_env(),
            "TUNES_DATA_DIR": str(data_dir),
            "TUNES_DEFAULT_BRANCH": "fast",
            "TUNES_API_RATE_PER_MINUTE": str(10**6),  # the pollers are not to be rate-limited
            "TUNES_LOCAL_USER": OWNER,
            "TUNES_DEVICE": device,
            "TUNES_WORKER_DEVICES": device,  # one local worker, whatever the environment says
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        if threads:  # `--threads`: the worker's torch uses that many (it reads OMP_NUM_THREADS at import)
            self.env["OMP_NUM_THREADS"] = self.env["MKL_NUM_THREADS"] = str(threads)
        self.nice = nice
        self.log = log
        self.process: subprocess.Popen | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def worker(self) -> int | None:
        """The pid of the (first) worker process now, or None when there is none."""
        found = worker_pids(self.pid) if self.pid is not None else []
        return found[0] if found else None

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
                preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,  # the worker inherits it
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

    def stop(self) -> None:
        """SIGINT, as Ctrl-C: uvicorn shuts down and the web process stops its workers."""
        if self.process is None or self.process.poll() is not None:
            return
        workers = worker_pids(self.process.pid)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in workers:  # normally stopped by the web process; they also stop once their parent is gone
            with contextlib.suppress(OSError):
                if b"studio.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():  # still ours, not a reused pid
                    os.kill(pid, signal.SIGKILL)


# --- seeding ---


def _create(http, title: str, **fields: Any) -> int:
    """A tune from the four astronaut photos over REST; returns its id."""
    photos = [("tune[images][]", (name, data, "image/jpeg")) for name, data in astronaut_photos()]
    form = {"tune[title]": title, "tune[name]": "woman", **{f"tune[{k}]": str(v) for k, v in fields.items()}}
    answer = http.post("/tunes", data=form, files=photos, timeout=120)
    answer.raise_for_status()
    return answer.json()["id"]


def _seed(http) -> list[int]:
    """`SEED_TUNES` finished fast-branch tunes to poll; returns their ids."""
    ids = [_create(http, f"load {index}", branch="fast") for index in range(SEED_TUNES)]

    def seeded_trained() -> bool:
        return all(_tune(http, i)["status"] == TuneStatus.TRAINED for i in ids)

    _wait("the seeded fast tunes to finish", seeded_trained, 120)
    return ids


def _start_training(http) -> int:
    """A tiny training far longer than the windows, once its steps have begun; returns its id."""
    training = _create(http, "load training", branch="tiny", steps=TRAIN_STEPS)
    _wait("the tiny training to start its steps", lambda: _tune(http, training)["progress"] > 0, 300)
    return training


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


def _training_speed(http, training: int, start: float, end: float) -> float:
    """The training's steps per second between `start` and `end` (monotonic), from its record's progress.

    The worker writes the progress every 0.5 s (at the end of a step), so this polls every `MARK_POLL_S` just
    after `start` until the first write and in the last 0.75 s until the last write before `end` (or the first
    after it), and divides the steps between those two writes by the time between them. Reading the progress
    once at each edge would put up to half a second of error on each; polling it throughout would load the web
    process with 50 calls a second."""

    def next_write(after: float, until: float) -> tuple[float, float] | None:
        """The last progress write seen between `after` and `until` (the first one past `until` if none)."""
        last, seen = _tune(http, training)["progress"], None
        while True:
            time.sleep(MARK_POLL_S)
            now, at = _tune(http, training)["progress"], time.monotonic()
            if now != last and at > after:
                seen, last = (now * TRAIN_STEPS, at), now
            if at >= until and (seen is not None or at > until + 10):
                return seen

    first = next_write(start, start)  # the first write after the window opened
    time.sleep(max(0.0, end - 0.75 - time.monotonic()))
    last = next_write(max(start, end - 0.75), end)
    if first is None or last is None or last[1] <= first[1]:
        return 0.0  # no step for 10 s: stalled
    return (last[0] - first[0]) / (last[1] - first[1])


# --- the windows ---


@dataclass(frozen=True)
class Window:
    """`clients` clients of `interface` (none: the training alone) for one window; `interval_s` 0: each calls
    back to back, alternating a tune and the list; otherwise each reads a tune once every `interval_s`."""

    interface: str
    clients: int
    interval_s: float = 0.0


@dataclass
class Outcome:
    latencies: dict[str, list[float]]  # by call kind, seconds, successful calls only
    errors: list[str]
    elapsed: float
    start_lag: list[float]  # paced clients: how late a call started after its due time, when it was waiting


def _window(
    make_call: Callable[[], Callable[[int], Any]],
    window: Window,
    seconds: float,
    *,
    snapshot: Callable[[], Any],
    during: Callable[[float, float], Any],
) -> tuple[Outcome, Any, Any, Any]:
    """Run `window.clients` threads, each calling its own `call(i)` until the window closes (0 clients: none).

    `call(i)` reads a tune for even `i` and the list for odd `i`; paced clients only read tunes (even `i`), each
    on a schedule of its own (their first calls spread evenly over one interval). The window opens once every
    client is made (`make_call`: a gradio_client `Client` fetches the app's config), so that is not measured.
    `snapshot()` runs when the window opens and again when the last call has returned; `during(start, end)` runs
    in a thread of its own meanwhile. Returns the outcome, both snapshots and what `during` returned."""
    out = Outcome({"get": [], "list": []}, [], 0.0, [])
    lock = threading.Lock()
    ready = threading.Barrier(window.clients + 1)
    go = threading.Event()
    edges = [0.0, 0.0]  # the window's start and end
    finished = [0.0]  # when the last client's last call returned

    def client(number: int) -> None:
        call = make_call()
        ready.wait()
        go.wait()
        time.sleep(max(0.0, edges[0] - time.monotonic()))
        due = edges[0] + window.interval_s * number / max(window.clients, 1)
        index = 0
        while True:
            if window.interval_s:
                index = 2 * number  # a tune of its own
                if due >= edges[1]:
                    break
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                    with lock:
                        out.start_lag.append(time.monotonic() - due)
                due += window.interval_s
            elif time.monotonic() >= edges[1]:
                break
            kind = "get" if index % 2 == 0 else "list"
            began = time.perf_counter()
            try:
                call(index)
            except Exception as error:  # counted, not fatal: the figure is how often it happens
                with lock:
                    out.errors.append(type(error).__name__)
            else:
                with lock:
                    out.latencies[kind].append(time.perf_counter() - began)
            index += 1
        with lock:
            finished[0] = max(finished[0], time.monotonic())

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(window.clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    opens = time.monotonic() + HERD_S
    edges[:] = [opens, opens + seconds]
    go.set()  # every client wakes at once: that herd is over when the window opens
    time.sleep(max(0.0, opens - time.monotonic()))
    before = snapshot()
    result: list[Any] = []
    watcher = threading.Thread(target=lambda: result.append(during(*edges)), daemon=True)
    watcher.start()
    time.sleep(max(0.0, edges[1] - time.monotonic()))
    for thread in threads:
        thread.join()
    after = snapshot()
    watcher.join()
    out.elapsed = (finished[0] if threads else edges[1]) - edges[0]
    return out, before, after, result[0] if result else 0.0


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start the server, seed it, and measure the training alone and the interfaces polling it."""
    import httpx

    from pipelines.tiny import build_tiny_sd15

    context(args.device)
    workdir = Path(args.workdir)
    build_tiny_sd15(workdir / "data" / "models" / "tiny-sd15")
    server = Server(
        workdir / "data", workdir / "server.log", device=args.device, threads=args.threads, nice=args.server_nice
    )
    key = server.create_key()
    progress("load: starting `python app.py` (web process and one worker process)")
    url = server.start(key)
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    try:
        progress(f"load: seeding {SEED_TUNES} fast tunes")
        ids = _seed(http)
        web_seeded, worker_idle = memory_mib(server.pid), memory_mib(server.worker())  # no model loaded yet
        progress("load: starting a tiny training")
        training = _start_training(http)
        records = _measure(server, http, [*ids, training], key, args)
        web = _memory_record(server, args.device, "web", after_seeding_mib=web_seeded)
        worker = _memory_record(server, args.device, "worker", idle_mib=worker_idle)  # while it trains
        return [web, worker, *records]
    finally:
        try:
            _delete_training(http)  # a later run on this data folder must not resume the long training
        finally:
            http.close()
            server.stop()


def _memory_record(server: Server, device: str, which: str, **extra: Any) -> dict[str, Any]:
    """`load.web_rss` or `load.worker_rss`: the process's VmRSS now, its peak, and whether torch is loaded."""
    pid = server.pid if which == "web" else server.worker()
    rss = memory_mib(pid)
    extra = {key: None if value is None else round(value, 1) for key, value in extra.items()}
    return record(
        f"load.{which}_rss",
        float("nan") if rss is None else rss,
        "MiB",
        device=device,
        peak_mib=_rounded(memory_mib(pid, "VmHWM"), 1),
        torch_loaded=torch_loaded(pid),
        **extra,
    )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _measure(server: Server, http, ids: list[int], key: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The training alone, then each set of clients, then the training alone again; returns the records."""
    import httpx
    from gradio_client import Client

    opened: list[Any] = []

    def rest_client() -> Callable[[int], Any]:
        client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        opened.append(client)

        def call(index: int) -> Any:
            path = f"/tunes/{ids[index // 2 % len(ids)]}" if index % 2 == 0 else f"/tunes?limit={PAGE}"
            return client.get(path).raise_for_status()

        return call

    def gradio_client() -> Callable[[int], Any]:
        client = Client(f"{server.url}/", verbose=False, ssl_verify=args.gradio_verify)
        opened.append(client)

        def call(index: int) -> Any:
            if index % 2 == 0:
                return client.predict(tune_id=ids[index // 2 % len(ids)], api_name="/get_tune")
            return client.predict(limit=PAGE, api_name="/list_tunes")

        return call

    makers = {"none": rest_client, "rest": rest_client, "gradio_client": gradio_client}
    # this process imported torch, diffusers and transformers (the records' context, the tiny model): a full
    # garbage collection over their objects stalls every client for ~0.5 s; they live to the end, so skip them
    gc.collect()
    gc.freeze()
    windows = (
        Window("none", 0),
        Window("rest", args.clients),
        Window("rest", args.many_clients, args.interval),
        Window("gradio_client", args.clients),
        Window("none", 0),
    )
    measured: list[Measured] = []
    for window in windows:
        pace = f"each every {window.interval_s:g} s" if window.interval_s else "back to back"
        who = f"{window.clients} {window.interface} clients ({pace})" if window.clients else "no clients"
        progress(f"load: {who} for {args.seconds:g} s while training")
        worker_pid = server.worker()  # a restarted worker is another process: its CPU time is then not counted
        outcome, before, after, speed = _window(
            makers[window.interface],
            window,
            args.seconds,
            snapshot=lambda pid=worker_pid: (cpu_seconds(server.pid), cpu_seconds(pid), time.process_time()),
            during=lambda start, end: _training_speed(http, ids[-1], start, end),
        )
        for client in opened:
            client.close()
        opened.clear()
        web, worker, own = (None if b is None or a is None else a - b for b, a in zip(before, after, strict=True))
        measured.append(Measured(window, outcome, speed, web, worker, own))
    conditions = {"server_nice": args.server_nice, "gradio_ssl_verify": args.gradio_verify}
    return _records(measured, args.device, conditions)


@dataclass
class Measured:
    """One window: its outcome, the training's steps/s, and the CPU seconds of the web process, the worker and
    this process (the clients) meanwhile."""

    window: Window
    outcome: Outcome
    speed: float
    web_cpu: float | None
    worker_cpu: float | None
    client_cpu: float | None


def _records(measured: list[Measured], device: str, conditions: dict[str, Any]) -> list[dict[str, Any]]:
    """The training alone (the mean of the windows without clients), then each window with clients: the
    training's speed and its share of the speed alone, and a latency record per call kind."""
    alone = [m for m in measured if not m.window.clients]
    idle = sum(m.speed for m in alone) / len(alone)
    web_idle = [m.web_cpu for m in alone if m.web_cpu is not None]
    worker = [m.worker_cpu for m in alone if m.worker_cpu is not None]
    seconds = sum(m.outcome.elapsed for m in alone)
    records = [
        record(
            "load.training_speed",
            idle,
            "steps/s",
            device=device,
            interface="none",
            clients=0,
            seconds=round(seconds, 1),
            server_nice=conditions["server_nice"],
            windows=[round(m.speed, 3) for m in alone],
            server_cpu_s=round(sum(web_idle), 2) if web_idle else None,
            worker_cpu_cores=round(sum(worker) / seconds, 2) if len(worker) == len(alone) else None,
        )
    ]
    for m in measured:
        if m.window.clients:
            records += _window_records(m, device, idle=idle, conditions=conditions)
    return records


def _window_records(m: Measured, device: str, *, idle: float, conditions: dict[str, Any]) -> list[dict[str, Any]]:
    """The training's speed during a window with clients, and a latency record per call kind."""
    window, elapsed = m.window, m.outcome.elapsed
    calls = sum(len(seconds) for seconds in m.outcome.latencies.values())
    common = {"interface": window.interface, "clients": window.clients, "interval_s": window.interval_s}
    common["server_nice"] = conditions["server_nice"]
    if window.interface == "gradio_client":
        common["ssl_verify"] = conditions["gradio_ssl_verify"]
    cores = {
        f"{name}_cpu_cores": None if cpu is None else round(cpu / elapsed, 2)
        for name, cpu in (("web", m.web_cpu), ("worker", m.worker_cpu), ("client", m.client_cpu))
    }
    web_ms = None if m.web_cpu is None or not calls else round(m.web_cpu / calls * 1000, 2)
    client_ms = None if m.client_cpu is None or not calls else round(m.client_cpu / calls * 1000, 2)
    lag = percentiles_ms(m.outcome.start_lag) if m.outcome.start_lag else None
    records = [
        record(
            "load.training_speed",
            m.speed,
            "steps/s",
            device=device,
            **common,
            seconds=round(elapsed, 1),
            of_idle=round(m.speed / idle, 3) if idle else None,
            server_cpu_s=None if m.web_cpu is None else round(m.web_cpu, 2),
            **cores,
        )
    ]
    for kind, seconds in m.outcome.latencies.items():
        if not seconds:
            continue
        stats = percentiles_ms(seconds)
        name = "get_tune" if kind == "get" else f"list_tunes(limit={PAGE})"
        records.append(
            record(
                "load.poll_latency",
                stats.pop("value"),
                "ms",
                device=device,
                call=f"{name} every {window.interval_s:g} s" if window.interval_s else name,
                **common,
                seconds=round(elapsed, 1),
                calls_per_s=round(len(seconds) / elapsed, 1),
                errors=len(m.outcome.errors),
                error_kinds=sorted(set(m.outcome.errors)),
                training_steps_per_s=round(m.speed, 2),
                server_cpu_ms_per_call=web_ms,
                client_cpu_ms_per_call=client_ms,
                **cores,
                start_lag_p50_ms=None if lag is None else round(lag["value"], 2),
                start_lag_p99_ms=None if lag is None else lag["p99"],
                **stats,
            )
        )
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="data dir of the run")
    parser.add_argument("--device", default="cpu", help="the worker's device")
    parser.add_argument("--threads", type=int, help="torch CPU threads, here and in the worker (default: one per core)")
    parser.add_argument("--clients", type=int, default=8, help="back-to-back clients per interface")
    parser.add_argument("--many-clients", type=int, default=100, help="paced REST clients")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a paced client's calls")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window")
    parser.add_argument(
        "--server-nice",
        type=int,
        default=10,
        help="niceness of the server's processes (web and worker alike), so that the clients, which share its "
        "cores here but would not in use, get a core when they need one (0: same priority)",
    )
    parser.add_argument(
        "--gradio-verify",
        action="store_true",
        help="gradio_client's default ssl_verify=True: it then loads the CA bundle for each call (~70 ms CPU), "
        "although the server is plain HTTP",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
