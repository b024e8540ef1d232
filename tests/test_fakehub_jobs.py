"""The fake Hub's Jobs API, driven by the real `HfApi` client: jobs really run (local subprocesses), stream their
logs, and end COMPLETED, ERROR or CANCELED as on Hugging Face Jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from tests.fakehub import FAKE_TOKEN, FAKE_USER, SECRET_PLACEHOLDER, FakeHub, fake_hub_fixture  # noqa: F401

NAMESPACE = "studio"
IMAGE = "hf.co/spaces/studio/tune-studio"
SECRET = "hf_JobSecret0123456789abcdefghijklmnop"


@pytest.fixture
def api(fake_hub: FakeHub) -> HfApi:
    return HfApi(endpoint=fake_hub.url, token=FAKE_TOKEN)


def run(api: HfApi, code: str, **options):
    return api.run_job(image=IMAGE, command=["python", "-c", code], namespace=NAMESPACE, **options)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a killed orphan may linger as one until init reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_job_runs_its_command_with_its_environment_streams_its_logs_and_completes(api, fake_hub):
    code = (
        "import os, sys\n"
        "print('loading the training set')\n"
        "print('greeting:', os.environ['GREETING'])\n"
        "print('token given:', os.environ['HF_TOKEN'] == os.environ['EXPECTED'])\n"
        "print('hub:', os.environ['HF_ENDPOINT'], os.environ['HF_HUB_OFFLINE'])\n"
        "print('cwd has the project:', os.path.isfile('pipelines/errors.py'))\n"
        "print('to stderr', file=sys.stderr)\n"
    )
    job = run(api, code, env={"GREETING": "hello", "EXPECTED": SECRET}, secrets={"HF_TOKEN": SECRET}, flavor="l40sx1")

    assert job.status.stage in ("SCHEDULING", "RUNNING") and job.flavor == "l40sx1"
    assert job.space_id == "studio/tune-studio" and job.owner.name == NAMESPACE
    logs = list(api.fetch_job_logs(job_id=job.id, namespace=NAMESPACE, follow=True))
    assert logs == [
        "loading the training set",
        "greeting: hello",
        "token given: True",
        f"hub: {fake_hub.url} 0",
        "cwd has the project: True",
        "to stderr",
    ]
    done = api.inspect_job(job_id=job.id, namespace=NAMESPACE)
    assert done.status.stage == "COMPLETED" and done.started_at and done.finished_at
    assert done.environment == {"GREETING": "hello", "EXPECTED": SECRET}
    # The secret is the job's, not the API's: names only in every answer, the value in the process.
    assert done.secrets == {"HF_TOKEN": SECRET_PLACEHOLDER}
    answers = [job, done, *api.list_jobs(namespace=NAMESPACE)]
    assert all(info.secrets == {"HF_TOKEN": SECRET_PLACEHOLDER} for info in answers)
    [submitted] = fake_hub.submitted_jobs()
    assert submitted.secrets == {"HF_TOKEN": SECRET} and submitted.env["HF_TOKEN"] == SECRET
    assert submitted.exit_code == 0 and submitted.wait_gone(timeout=5)


def test_the_job_does_not_inherit_the_test_process_hub_or_studio_settings(api, fake_hub, monkeypatch):
    monkeypatch.setenv("TUNES_DATA_DIR", "/somewhere/of/the/studio")
    monkeypatch.setenv("HF_TOKEN", "hf_the_studio_token_not_the_job_one")
    fake_hub.job_extra_env["OMP_NUM_THREADS"] = "1"
    names = ("TUNES_DATA_DIR", "HF_TOKEN", "OMP_NUM_THREADS")
    code = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"
    job = run(api, code)
    [line] = list(api.fetch_job_logs(job_id=job.id, namespace=NAMESPACE, follow=True))
    assert json.loads(line) == {"TUNES_DATA_DIR": None, "HF_TOKEN": None, "OMP_NUM_THREADS": "1"}


def test_without_a_namespace_the_job_runs_in_the_token_owners(api, fake_hub):
    job = api.run_job(image="python:3.12", command=["python", "-c", "print('hi')"])
    assert job.owner.name == FAKE_USER and job.docker_image == "python:3.12" and job.flavor == "cpu-basic"
    assert fake_hub.calls("GET", "/api/whoami-v2")
    assert api.wait_for_job(job.id, poll_interval=0.05, timeout=30).status.stage == "COMPLETED"
    assert list(api.fetch_job_logs(job_id=job.id)) == ["hi"]


def test_a_command_that_exits_3_ends_the_job_in_error_with_its_logs(api, fake_hub):
    job = run(api, "import sys; print('step 1', flush=True); sys.exit(3)")
    done = api.wait_for_job(job.id, namespace=NAMESPACE, poll_interval=0.05, timeout=30)
    assert done.status.stage == "ERROR" and "exit code: 3" in done.status.message
    assert list(api.fetch_job_logs(job_id=job.id, namespace=NAMESPACE)) == ["step 1"]
    assert fake_hub.job(job.id).exit_code == 3


def test_cancel_while_running_kills_the_whole_process_group(api, fake_hub):
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    job = run(api, code)
    fake = fake_hub.job(job.id)
    fake.wait("RUNNING")
    logs = api.fetch_job_logs(job_id=job.id, namespace=NAMESPACE, follow=True)
    first = next(iter(logs))
    child = int(first.split()[1])
    assert alive(fake.pid) and alive(child)

    api.cancel_job(job_id=job.id, namespace=NAMESPACE)
    assert api.inspect_job(job_id=job.id, namespace=NAMESPACE).status.stage == "CANCELED"
    assert fake.wait_gone(timeout=15), "the job's process was reaped"
    assert not alive(fake.pid) and not alive(child)
    # cancelling again, or a finished job, changes nothing
    api.cancel_job(job_id=job.id, namespace=NAMESPACE)
    assert api.inspect_job(job_id=job.id, namespace=NAMESPACE).status.stage == "CANCELED"


def test_a_held_job_stays_scheduling_until_released_or_cancelled(api, fake_hub):
    fake_hub.hold_jobs = True
    waiting = run(api, "print('ran')")
    cancelled = run(api, "print('never')")
    for job in (waiting, cancelled):
        info = api.inspect_job(job_id=job.id, namespace=NAMESPACE)
        assert info.status.stage == "SCHEDULING" and info.started_at is None

    api.cancel_job(job_id=cancelled.id, namespace=NAMESPACE)
    fake_hub.hold_jobs = False
    assert api.wait_for_job(waiting.id, namespace=NAMESPACE, poll_interval=0.05, timeout=30).status.stage == "COMPLETED"
    assert api.inspect_job(job_id=cancelled.id, namespace=NAMESPACE).status.stage == "CANCELED"
    assert fake_hub.job(cancelled.id).pid is None, "a job cancelled while scheduling never runs"


def test_fail_next_job_fails_only_the_next_one_without_running_it(api, fake_hub):
    fake_hub.fail_next_job("Job failed: no machine of this flavor could be started")
    failed, fine = run(api, "print('not me')"), run(api, "print('me')")
    info = api.wait_for_job(failed.id, namespace=NAMESPACE, poll_interval=0.05, timeout=30)
    assert (info.status.stage, info.status.message) == (
        "ERROR",
        "Job failed: no machine of this flavor could be started",
    )
    assert fake_hub.job(failed.id).pid is None
    assert api.wait_for_job(fine.id, namespace=NAMESPACE, poll_interval=0.05, timeout=30).status.stage == "COMPLETED"


def test_a_job_past_its_timeout_is_stopped_in_error(api, fake_hub):
    job = run(api, "import time; print('working', flush=True); time.sleep(120)", timeout=1)
    info = api.wait_for_job(job.id, namespace=NAMESPACE, poll_interval=0.05, timeout=30)
    assert info.status.stage == "ERROR" and "timed out" in info.status.message
    assert fake_hub.job(job.id).wait_gone(timeout=15)


def test_logs_without_follow_and_with_tail(api, fake_hub):
    job = run(api, "for i in range(5): print('line', i)")
    api.wait_for_job(job.id, namespace=NAMESPACE, poll_interval=0.05, timeout=30)
    assert list(api.fetch_job_logs(job_id=job.id, namespace=NAMESPACE)) == [f"line {i}" for i in range(5)]
    assert list(api.fetch_job_logs(job_id=job.id, namespace=NAMESPACE, tail=2)) == ["line 3", "line 4"]


def test_the_hardware_list_has_flavors_and_prices(api):
    hardware = {flavor.name: flavor for flavor in api.list_jobs_hardware()}
    assert {"cpu-basic", "a10g-small", "l40sx1", "a100-large", "h200"} <= set(hardware)
    assert hardware["cpu-basic"].accelerator is None and hardware["cpu-basic"].unit_cost_micro_usd == 167
    a10g = hardware["a10g-small"]
    assert (a10g.accelerator.model, a10g.unit_label) == ("A10G", "minute")
    assert a10g.unit_cost_usd * 60 == pytest.approx(1.00, abs=0.001)  # dollars per hour
    assert hardware["h200"].unit_cost_usd > hardware["a100-large"].unit_cost_usd > a10g.unit_cost_usd


def test_unknown_flavors_unknown_jobs_and_bad_tokens_are_refused(api, fake_hub):
    with pytest.raises(HfHubHTTPError, match=r"Invalid flavor 'a10g-smol'.*a10g-small") as refused:
        run(api, "print()", flavor="a10g-smol")
    assert refused.value.response.status_code == 400 and not fake_hub.submitted_jobs()
    with pytest.raises(HfHubHTTPError) as missing:
        api.inspect_job(job_id="0" * 24, namespace=NAMESPACE)
    assert missing.value.response.status_code == 404
    job = run(api, "print()")
    with pytest.raises(HfHubHTTPError) as elsewhere:
        api.inspect_job(job_id=job.id, namespace="someone-else")
    assert elsewhere.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as unauthorized:
        HfApi(endpoint=fake_hub.url, token="hf_wrong").inspect_job(job_id=job.id, namespace=NAMESPACE)
    assert unauthorized.value.response.status_code == 401


def test_jobs_are_listed_by_stage_and_label(api, fake_hub):
    fake_hub.hold_jobs = True
    held = run(api, "print()", labels={"tune": "12"})
    run(api, "print()", labels={"tune": "13"})
    assert [job.id for job in api.list_jobs(namespace=NAMESPACE, labels={"tune": "12"})] == [held.id]
    assert len(list(api.list_jobs(namespace=NAMESPACE, status="SCHEDULING"))) == 2
    assert list(api.list_jobs(namespace=NAMESPACE, status="RUNNING")) == []


def test_stopping_the_hub_kills_running_jobs(api, fake_hub):
    job = run(api, "import time; time.sleep(120)")
    fake = fake_hub.job(job.id)
    fake.wait("RUNNING")
    fake_hub.stop()  # what the fixture does after each test (stopping twice is fine)
    assert fake.wait_gone(timeout=5) and not alive(fake.pid)
    assert not fake_hub._workdir.exists()
