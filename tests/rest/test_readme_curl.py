"""The README's REST examples work as written: every ```bash block of its "REST API" section runs, in order,
with `bash -euo pipefail` against the whole server on a fresh data folder, with only `TUNES_URL`,
`TUNES_KEY` and the photos `me-1.jpg` … `me-4.jpg` provided."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from pipelines.settings import Settings
from storage.db import Database
from studio.service import Studio
from tests.conftest import astronaut_photos, served_app

README = Path(__file__).resolve().parents[2] / "README.md"


def rest_section(readme: str) -> str:
    """The README from `## REST API` up to the next `## ` heading."""
    start = readme.index("\n## REST API\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else len(readme)]


def bash_blocks(section: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture
def server(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", device="cpu", default_branch="fast")
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.data_dir / "tunes.db")
    try:
        key = Studio(settings, db).create_api_key("alice")
    finally:
        db.close()
    with served_app(settings) as url:
        yield url.rstrip("/"), key


def test_every_curl_in_the_examples_fails_loudly():
    blocks = bash_blocks(rest_section(README.read_text()))
    calls = [line for block in blocks for line in block.splitlines() if line.lstrip().startswith("curl ")]
    assert len(blocks) >= 5 and calls
    assert all("--fail-with-body -sS" in line for line in calls), "each curl needs --fail-with-body -sS"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (Debian: apt-get install curl)")
def test_the_examples_run_as_written_and_leave_what_they_say(server, tmp_path):
    url, key = server
    blocks = bash_blocks(rest_section(README.read_text()))
    folder = tmp_path / "client"
    folder.mkdir()
    for index, photo in enumerate(astronaut_photos(), start=1):
        photo.save(folder / f"me-{index}.jpg", quality=92)
    env = {**os.environ, "TUNES_URL": url, "TUNES_KEY": key}

    outputs = []
    for block in blocks:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block], cwd=folder, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"failed:\n{block}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        outputs.append(done.stdout)

    # the first example made tune 1 with its characteristic, as the README says a fresh server does
    created = json.loads(outputs[0])
    assert (created["id"], created["title"], created["characteristics"]) == (1, "Me, summer", {"eye_color": "green"})
    assert '"text":"{{subject}} in a watercolour portrait"' in "".join(outputs), "the JSON prompt was queued"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        [pack_tune] = client.get("/tunes").json()
        assert pack_tune["title"] == "Me, headshots", "the pack tune is there"
        assert client.get("/tunes/1").status_code == 404, "the last example deleted tune 1"
        assert client.get(f"/tunes/{pack_tune['id']}/prompts").json(), "the pack's prompts were queued"
