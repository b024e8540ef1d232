"""SIGKILL the whole server (`python app.py`) mid-training and mid-generation, restart it on the same data folder:
the tune resumes from its checkpoint, every prompt ends with exactly its images, nothing is duplicated. The web
process never loads torch (its worker process trains and generates), and its worker stops with it, on Ctrl-C or
when the web process alone is killed."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import astronaut_photos, settings_with_tiny, wait_for

ROOT = Path(__file__).resolve().parents[2]
STEPS, CHECKPOINT_EVERY = 16, 4  # killed after the first checkpoint, 12 steps before the end


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python app.py` in its own process group on one data folder; `kill()` is SIGKILL of the whole group."""

    def __init__(self, data_dir: Path, log_dir: Path):
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.runs = 0
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TUNES_DATA_DIR": str(data_dir),
            "TUNES_DEFAULT_BRANCH": "tiny",
            "TUNES_CHECKPOINT_EVERY": str(CHECKPOINT_EVERY),
            "TUNES_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "TUNES_API_RATE_PER_MINUTE": "100000",  # the test polls often
            # one torch thread: on a small runner shared with other work, more threads wait on each other
            "OMP_NUM_THREADS": "1",
        }

    def create_key(self, user: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "admin", "create-key", user],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.strip()

    def start(self, key: str) -> str:
        self.runs += 1
        port = _free_port()
        log = (self.log_dir / f"server-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env={**self.env, "GRADIO_SERVER_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill takes everything it started
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                answer = httpx.get(f"{url}/tunes", headers={"Authorization": f"Bearer {key}"}, timeout=5)
            except httpx.TransportError:
                return False
            return answer.status_code == 200

        wait_for(ready, bool, timeout=90, what="the server to answer")
        return url

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def log_tail(self) -> str:
        path = self.log_dir / f"server-{self.runs}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def server(tmp_path, tiny_sd15_dir) -> Iterator[Server]:
    settings = settings_with_tiny(tmp_path, tiny_sd15_dir)  # the tiny model linked into data/models
    running = Server(settings.data_dir, tmp_path)
    yield running
    running.stop()


def row(data_dir: Path, query: str, *params: object) -> sqlite3.Row | None:
    """One row straight from the database file (read-only), as the next server process will see it."""
    with sqlite3.connect(f"file:{data_dir / 'tunes.db'}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(query, params).fetchone()


def test_a_killed_server_resumes_training_and_finishes_every_prompt_exactly_once_and_its_worker_stops_with_it(
    server, tmp_path
):
    key = server.create_key("alice")
    auth = {"Authorization": f"Bearer {key}"}
    photos = [("tune[images][]", (f"me-{i}.jpg", _jpeg(p), "image/jpeg")) for i, p in enumerate(astronaut_photos())]
    fields = [
        ("tune[title]", "Me"),
        ("tune[name]", "woman"),
        ("tune[steps]", str(STEPS)),
        ("tune[prompts_attributes][][text]", "{{subject}} as an astronaut"),
        ("tune[prompts_attributes][][num_images]", "2"),
        ("tune[prompts_attributes][][steps]", "2"),
        ("tune[prompts_attributes][][text]", "{{subject}} in a garden"),
        ("tune[prompts_attributes][][num_images]", "3"),
        ("tune[prompts_attributes][][steps]", "2"),
    ]
    form = [(name, (None, value)) for name, value in fields]  # ordered text fields: each prompt's fields together

    # 1. Create a tiny tune with two prompts; kill the server once training has passed a checkpoint
    url = server.start(key)
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        created = client.post("/tunes", files=form + photos)
        assert created.status_code == 201, created.text
        tune = created.json()
        assert tune["branch"] == "tiny" and tune["steps"] == STEPS
        checkpoint = server.data_dir / "training" / str(tune["id"]) / "checkpoint.pt"
        # the files and the database are polled (cheaply, often): the kill must land before training ends
        wait_for(checkpoint.exists, bool, every=0.02, what="a training checkpoint")
        polled = client.get(f"/tunes/{tune['id']}").json()
        assert polled["status"] == "training" and polled["progress"] > 0, polled
    server.kill()
    killed = row(server.data_dir, "SELECT status, attempts FROM tunes WHERE id = ?", tune["id"])
    assert (killed["status"], killed["attempts"]) == ("training", 1), "the kill interrupted the training"

    # 2. Restart on the same data folder: the tune resumes, trains, and its prompts run
    url = server.start(key)
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        again = client.post("/tunes", files=form + photos)  # a client retrying its lost request
        assert again.status_code == 200 and again.json()["id"] == tune["id"], "the same title is the same tune"
        trained = wait_for(
            lambda: client.get(f"/tunes/{tune['id']}").json(),
            lambda t: t["status"] in ("trained", "failed"),
            timeout=240,
            what="the tune to train",
        )
        assert trained["status"] == "trained", trained["error"]
        prompts = wait_for(
            lambda: client.get(f"/tunes/{tune['id']}/prompts").json(),
            lambda ps: all(p["status"] in ("done", "failed") for p in ps),
            timeout=120,
            what="the prompts to finish",
        )
        assert sorted(p["num_images"] for p in prompts) == [2, 3]
        for prompt in prompts:
            assert prompt["status"] == "done", prompt["error"]
            assert len(prompt["images"]) == prompt["num_images"] == len(set(prompt["images"]))
        [only] = client.get("/tunes").json()
        assert only["id"] == tune["id"], "one tune, not two"
        assert len(client.get("/prompts").json()) == 2, "two prompts, not more"

        record = row(server.data_dir, "SELECT attempts, artifact_location FROM tunes WHERE id = ?", tune["id"])
        assert record["attempts"] == 2, "trained in two runs: the killed one and the resumed one"
        metadata = json.loads((Path(record["artifact_location"]) / "lora_metadata.json").read_text())
        assert metadata["steps"] == STEPS and metadata["resumed_from_step"] >= CHECKPOINT_EVERY, metadata

        # 3. Kill it again while a prompt is generating; the restarted server finishes it with exactly its images
        queued = client.post(
            f"/tunes/{tune['id']}/prompts",
            json={"prompt": {"text": "{{subject}} on the moon", "num_images": 3, "steps": 8, "seed": 7}},
        )
        assert queued.status_code == 201, queued.text
        prompt_id = queued.json()["id"]
        wait_for(
            lambda: row(server.data_dir, "SELECT status FROM prompts WHERE id = ?", prompt_id)["status"],
            lambda status: status != "queued",
            every=0.02,
            what="the prompt to start generating",
        )
    server.kill()
    interrupted = row(server.data_dir, "SELECT status, attempts FROM prompts WHERE id = ?", prompt_id)
    assert (interrupted["status"], interrupted["attempts"]) == ("generating", 1), "the kill interrupted it"

    url = server.start(key)
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        prompt = wait_for(
            lambda: client.get(f"/tunes/{tune['id']}/prompts/{prompt_id}").json(),
            lambda p: p["status"] in ("done", "failed"),
            timeout=120,
            what="the interrupted prompt to finish",
        )
        assert prompt["status"] == "done", prompt["error"]
        assert len(prompt["images"]) == 3 == len(set(prompt["images"]))
        for link in prompt["images"]:
            assert client.get(link).headers["content-type"] == "image/png"
        assert len(client.get("/prompts").json()) == 3 and len(client.get("/tunes").json()) == 1
    assert row(server.data_dir, "SELECT attempts FROM prompts WHERE id = ?", prompt_id)["attempts"] == 2
    images = row(server.data_dir, "SELECT COUNT(*) AS n, COUNT(DISTINCT path) AS paths FROM images")
    assert (images["n"], images["paths"]) == (2 + 3 + 3, 2 + 3 + 3), "every image stored once"
    files = sorted(path.name for path in (server.data_dir / "images" / str(prompt_id)).iterdir())
    assert len(files) == 3 and all(name.endswith(".png") for name in files), "no half-written files left"

    # 4. All the training and generating was done by the server's worker process: the web process never loaded
    # torch. Ctrl-C stops the worker with it; a web process SIGKILLed alone does not leave its worker behind.
    web = server.process.pid
    assert "libtorch" not in Path(f"/proc/{web}/maps").read_text(), "the web process loaded torch"
    [worker_pid] = [int(pid) for pid in _children(web)]
    server.process.send_signal(signal.SIGINT)  # Ctrl-C
    server.process.wait(30)
    wait_for(lambda: _running(worker_pid), lambda alive: not alive, timeout=30, what="the worker to stop")
    assert row(server.data_dir, "SELECT stopped_at FROM workers WHERE id = 'w0'")["stopped_at"] is not None

    server.start(key)
    [worker_pid] = [int(pid) for pid in _children(server.process.pid)]
    wait_for(
        lambda: row(server.data_dir, "SELECT pid FROM workers WHERE id = 'w0' AND stopped_at IS NULL"),
        lambda found: found is not None and found["pid"] == worker_pid,
        timeout=120,
        what="the new worker to serve",
    )
    os.kill(server.process.pid, signal.SIGKILL)  # the web process alone, not its group
    server.process.wait(30)
    wait_for(lambda: _running(worker_pid), lambda alive: not alive, timeout=30, what="the orphan worker to stop")


def _children(pid: int) -> list[str]:
    return wait_for(
        lambda: Path(f"/proc/{pid}/task/{pid}/children").read_text().split(),
        lambda found: len(found) == 1,
        what="the worker process",
    )


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
