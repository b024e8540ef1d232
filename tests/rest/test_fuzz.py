"""Schema-based fuzzing of every REST operation (schemathesis, in process over ASGI): no 500s, and every
answer matches the OpenAPI document (documented status codes, content types and bodies).

Per operation, with a valid API key: schemathesis' coverage cases (boundary and invalid values, missing
bodies, wrong content types), then Hypothesis-generated cases that fit the schema (positive), that do not
(negative), and that fit it with the path ids fixed to seeded records (random ids rarely name one). Each
operation runs on its own copy of one seeded data folder (a trained `fast` tune made from real photos with
a prompt and two images, a second tune), so a fuzzed DELETE never takes the records away from the next.

The pytest plugin's `schema.parametrize()` needs the app at import time and its fixture-based loader
(`schemathesis.pytest.from_fixture`) fails on pytest 9.2, so the operations are parametrized here; a test
keeps the list complete."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from pipelines.settings import Settings
from rest.routes import build_rest_api
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.conftest import astronaut_photos

OWNER = "alice"
EXAMPLES = 20  # per operation and mode; with derandomize the same cases every run
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    "GET /tunes",
    "POST /tunes",
    "GET /tunes/{tune_id}",
    "DELETE /tunes/{tune_id}",
    "PATCH /tunes/{tune_id}",
    "PATCH /images/{image_id}",
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
]

# any string is a valid pack id in the schema (an unknown one is a 404), so no invalid request exists
NOTHING_INVALID = {("GET /p/{pack_id}", GenerationMode.NEGATIVE)}
SEEDED_IDS = {"tune_id": 1, "prompt_id": 1, "image_id": 1, "pack_id": "corporate-headshots"}
KINDS = {
    "positive": (GenerationMode.POSITIVE, False),
    "negative": (GenerationMode.NEGATIVE, False),
    "positive-seeded-ids": (GenerationMode.POSITIVE, True),
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
    """A data folder with tune 1 (trained; prompt 1 with images 1-2), tune 2 (queued), and an API key."""
    data_dir = tmp_path_factory.mktemp("fuzz-seed") / "data"
    runtime = open_runtime(_settings(data_dir), start_worker=False)
    try:
        photos = [(f"me-{i}.jpg", _jpeg(photo)) for i, photo in enumerate(astronaut_photos())]
        first = TuneCreate(
            title="me", name="woman", images=photos, branch="fast", prompts=[PromptCreate("{{subject}}", num_images=2)]
        )
        runtime.studio.create_tune(OWNER, first)
        runtime.worker.drain()
        runtime.studio.create_tune(OWNER, TuneCreate(title="me again", name="woman", images=photos, branch="fast"))
        key = runtime.studio.create_api_key(OWNER)
    finally:
        runtime.close()
    return data_dir, key


@pytest.fixture
def app(seeded, tmp_path) -> Iterator[object]:
    """The REST app on a fresh copy of the seeded data."""
    data_dir = tmp_path / "data"
    shutil.copytree(seeded[0], data_dir)
    runtime = open_runtime(_settings(data_dir), start_worker=False)
    yield build_rest_api(runtime.studio)
    runtime.close()


@pytest.fixture
def schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def key(seeded) -> str:
    return seeded[1]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}  # a new dict each time: schemathesis adds its headers to it


def test_every_operation_is_fuzzed(schema):
    assert sorted(result.ok().label for result in schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_coverage_cases_get_no_500_and_answers_match_the_schema(schema, key, label):
    operation = schema.find_operation_by_label(label)
    cases = schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation_for(operation=operation),
    )
    count = 0
    for case in cases:
        case.call_and_validate(headers=_auth(key), checks=CHECKS)
        count += 1
    assert count > 0


def _generated(label: str, kind: str) -> bool:
    mode, seeded = KINDS[kind]
    return (label, mode) not in NOTHING_INVALID and ("{" in label or not seeded)


@pytest.mark.parametrize(
    ("label", "kind"), [(label, kind) for label in OPERATIONS for kind in KINDS if _generated(label, kind)]
)
def test_generated_cases_get_no_500_and_answers_match_the_schema(schema, key, label, kind):
    operation = schema.find_operation_by_label(label)
    mode, seeded = KINDS[kind]
    fixed = {name: SEEDED_IDS[name] for name in re.findall(r"\{(\w+)\}", label)} if seeded else None

    @given(case=operation.as_strategy(generation_mode=mode, headers=_auth(key), path_parameters=fixed))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def fuzz(case):
        case.call_and_validate(headers=_auth(key), checks=CHECKS)

    fuzz()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"[" * 100_000 + b"]" * 100_000),  # nested past Python's recursion limit
        ("application/json", b'{"tune": {"title": "\\ud800", "name": "woman"}}'),  # a lone surrogate
        ("application/json", b'{"tune": {"title": "me", "name": "woman", "characteristics": {"a": "\\udfff"}}}'),
        ("multipart/form-data", b"tune[title]=me"),  # no boundary
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nme\r\n--x--\r\n"),
    ],
)
def test_hostile_bodies_get_a_422_naming_the_body_not_a_500(app, key, content_type, body):
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/tunes", content=body, headers=_auth(key) | {"Content-Type": content_type})
    assert answer.status_code == 422, answer.text
    assert list(answer.json()["errors"]) == ["tune"]
