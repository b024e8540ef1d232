"""Schema-based fuzzing of every REST operation (schemathesis, in process over ASGI): no 500s, and every
answer matches the OpenAPI document (status codes, content types, bodies).

Each operation gets its own copy of one seeded data folder (a trained `fast` tune made from real photos,
its prompt with two images, a second tune), so ids such as 1 and 2 exist, and a fuzzed DELETE of one
operation never takes the records away from the next.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pipelines.settings import Settings
from rest.routes import build_rest_api
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import Runtime, open_runtime
from tests.conftest import astronaut_photos

OWNER = "alice"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = {
    "GET /tunes",
    "POST /tunes",
    "GET /tunes/{tune_id}",
    "DELETE /tunes/{tune_id}",
    "POST /tunes/{tune_id}/prompts",
    "GET /tunes/{tune_id}/prompts",
    "GET /tunes/{tune_id}/prompts/{prompt_id}",
    "DELETE /tunes/{tune_id}/prompts/{prompt_id}",
    "GET /prompts",
    "POST /prompts/{prompt_id}/likes",
    "DELETE /prompts/{prompt_id}/likes",
    "GET /packs",
    "GET /p/{pack_id}",
    "POST /p/{pack_id}/tunes",
    "GET /images/{image_id}",
    "GET /tunes/{tune_id}/ckpt",
}


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _settings(data_dir: Path) -> Settings:
    # the rate limit would answer 429 long before the fuzzer is done; the limiter has its own tests
    return Settings(data_dir=data_dir, device="cpu", default_branch="fast", api_rate_per_minute=1_000_000)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, str]:
    """A data folder with tune 1 (trained, prompt 1 with images 1-2), tune 2 (queued) and an API key."""
    data_dir = tmp_path_factory.mktemp("fuzz-seed") / "data"
    runtime = open_runtime(_settings(data_dir), start_worker=False)
    try:
        photos = [(f"me-{i}.jpg", _jpeg(photo)) for i, photo in enumerate(astronaut_photos())]
        request = TuneCreate(
            title="me", name="woman", images=photos, branch="fast", prompts=[PromptCreate("{{subject}}", num_images=2)]
        )
        runtime.studio.create_tune(OWNER, request)
        runtime.worker.drain()
        runtime.studio.create_tune(OWNER, TuneCreate(title="me again", name="woman", images=photos, branch="fast"))
        key = runtime.studio.create_api_key(OWNER)
    finally:
        runtime.close()
    return data_dir, key


class Servers:
    """One REST app per operation, each on its own copy of the seeded data folder (made on first use)."""

    def __init__(self, seed_dir: Path, root: Path):
        self.seed_dir, self.root = seed_dir, root
        self.runtimes: dict[str, Runtime] = {}
        self.apps: dict[str, object] = {}

    def app_for(self, label: str):
        if label not in self.apps:
            data_dir = self.root / f"op-{len(self.apps)}"
            shutil.copytree(self.seed_dir, data_dir)
            runtime = open_runtime(_settings(data_dir), start_worker=False)
            self.runtimes[label] = runtime
            self.apps[label] = build_rest_api(runtime.studio)
        return self.apps[label]

    def close(self) -> None:
        for runtime in self.runtimes.values():
            runtime.close()


@pytest.fixture(scope="module")
def servers(seeded, tmp_path_factory) -> Iterator[Servers]:
    servers = Servers(seeded[0], tmp_path_factory.mktemp("fuzz-ops"))
    yield servers
    servers.close()


@pytest.fixture(scope="module")
def api_schema(servers):
    return schemathesis.openapi.from_asgi("/openapi.json", servers.app_for("schema"))


@pytest.fixture(scope="module")
def auth(seeded) -> dict[str, str]:
    return {"Authorization": f"Bearer {seeded[1]}"}


def test_the_fuzzer_sees_every_operation(api_schema):
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == OPERATIONS


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_no_operation_answers_500_or_off_schema(case, servers, auth):
    case.call_and_validate(app=servers.app_for(case.operation.label), headers=auth, checks=CHECKS)
