"""Shared fixtures. Levels: bare settings in a tmp data dir; tiny models built once per session."""

from __future__ import annotations

import os
import tempfile

# Before anything imports huggingface_hub or gradio: no network, no telemetry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Each test process has its own Gradio file cache (servers it starts inherit it). Gradio names an upload's copy by
# its content, so two processes uploading the same photo shared one file, and one's sweep of old copies
# (`ui.files.UIFiles`) deleted the other's upload mid-test.
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="gradio-tests-")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one torch thread each, or their threads fight for the cores
    # (a tiny training ran 10x slower); servers and workers the tests start inherit it
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance
from skimage import data

from pipelines.settings import Settings
from pipelines.tiny import build_tiny_flux, build_tiny_sd15, build_tiny_sdxl
from pipelines.tiny import synthetic_subject as subject_image

# Files whose tests run real processes or long trainings, longest first: collected first, so `--dist loadfile`
# starts them first and the quick files fill in around them (last, one of them kept a worker busy a minute after
# the other was done).
SLOW_FILES = (
    "tests/faults/test_server_kill.py",
    "tests/studio/test_hf_jobs.py",
    "tests/faults/test_worker_processes.py",
    "tests/test_browser_hf_jobs.py",
    "tests/test_browser.py",
    "tests/faults/test_hf_jobs_restart.py",
    "tests/test_browser_create.py",
    "tests/pipelines/test_train.py",
    "tests/test_browser",  # the other browser files
    "tests/test_app.py",
    "tests/admin/test_scheduler.py",
)


def pytest_configure(config: pytest.Config) -> None:
    # xdist hands out files by their number of tests unless told not to, which put these few-test files last
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, slow in enumerate(SLOW_FILES) if item.nodeid.startswith(slow)), len(SLOW_FILES))

    items.sort(key=rank)  # stable: file order kept otherwise


@pytest.fixture(scope="session")
def tiny_sd15_dir(tmp_path_factory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("models") / "tiny-sd15")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


def settings_with_tiny(folder: Path, tiny_sd15_dir: Path) -> Settings:
    """Settings on a fresh data dir where the `tiny` model is already built (linked, not rebuilt)."""
    models = folder / "data" / "models"
    models.mkdir(parents=True)
    (models / "tiny-sd15").symlink_to(tiny_sd15_dir, target_is_directory=True)
    return Settings(data_dir=folder / "data", device="cpu")


@pytest.fixture
def settings(tmp_path, tiny_sd15_dir) -> Settings:
    return settings_with_tiny(tmp_path, tiny_sd15_dir)


@pytest.fixture
def no_card_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process worker writes model cards without sample images. The two 25-step samples are most of the
    time of a short tiny training on CPU; for tests that prove nothing about the card (their failure never fails
    a tune). Tests of the card and its images (the Hub, the Create tab) keep them."""
    from studio.worker import InProcessWorker

    monkeypatch.setattr(InProcessWorker, "_samples", lambda self, tune, lora_dir, prompt: ())


@dataclass(frozen=True)
class Sample:
    """A training image as the trainer takes it (same fields as `pipelines.photos.TrainingImage`)."""

    image: Image.Image
    caption: str
    source: str = "synthetic"
    kind: str = "full"


@pytest.fixture
def subject_samples() -> list[Sample]:
    return [Sample(subject_image(i), "sks thing") for i in range(4)]


def astronaut_photos() -> list[Image.Image]:
    """Four distinct photos of one real face: crops, a mirror image and a brightness change (no near-duplicates)."""
    photo = Image.fromarray(data.astronaut())
    return [
        photo,
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        photo.crop((0, 0, 400, 400)).resize((512, 512)),
        ImageEnhance.Brightness(photo.crop((60, 0, 460, 400))).enhance(1.3).resize((480, 480)),
    ]


@contextmanager
def served_app(settings: Settings) -> Iterator[str]:
    """The whole server (REST routes, Gradio app, worker thread) on a free local port; yields its URL."""
    from app import serving
    from studio.runtime import open_runtime

    runtime = open_runtime(settings)
    try:
        with serving(runtime) as url:
            yield url
    finally:
        runtime.close()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names in the returned dict resolve to their listed addresses (and are counted); others resolve for real."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in table:
            return real(host, port, *args, **kwargs)
        table.setdefault("_calls", []).append(host)
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in table[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def wait_for(
    read: Callable[[], Any], done: Callable[[Any], bool], *, what: str = "the condition", timeout: float = 60.0,
    every: float = 0.1,
) -> Any:  # fmt: skip
    """Poll `read()` every `every` seconds until `done(value)` and return that value (the worker and servers run
    in the background); after `timeout` seconds fail the test, naming `what` and the last value read."""
    deadline = time.monotonic() + timeout
    while not done(value := read()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}; last: {value!r}")
        time.sleep(every)
    return value


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One Debian Chromium for a browser test module; each person gets a context of their own
    (`tests.test_browser.person`)."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
