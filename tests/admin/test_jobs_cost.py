"""`python -m admin jobs-cost`: each GPU flavor of the Hub's Jobs hardware list with its price per hour and the cost
of one tune, read from the fake Hub's list (prices per minute in micro-dollars, as the Hub answers them); the token
never appears."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from huggingface_hub import HfApi

from admin.operations import TUNE_JOB_MINUTES, jobs_costs
from pipelines.errors import ValidationError
from tests.fakehub import FAKE_TOKEN, HARDWARE, fake_hub_fixture  # noqa: F401 (registers `fake_hub`)


def test_each_gpu_flavor_costs_its_hourly_price_times_the_tunes_minutes(fake_hub):
    hardware = HfApi(endpoint=fake_hub.url, token=FAKE_TOKEN).list_jobs_hardware()
    costs = {cost.flavor: cost for cost in jobs_costs(hardware, minutes=30)}
    assert "cpu-basic" not in costs and "cpu-upgrade" not in costs, "a CPU flavor cannot train"
    assert list(costs) == [name for name, *_, gpu, _ in HARDWARE if gpu is not None], "the Hub's order"
    a10g, h200x2 = costs["a10g-small"], costs["h200x2"]
    assert (a10g.gpu, a10g.gpu_memory) == ("1x A10G", "24 GB") and h200x2.gpu == "2x H200"
    assert a10g.usd_per_hour == pytest.approx(1.00, abs=0.001) and a10g.usd_per_tune == pytest.approx(0.50, abs=0.001)
    assert costs["h200"].row() == ["h200", "1x H200", "141 GB", "5.00", "2.50"]
    assert jobs_costs(hardware)[0].minutes == TUNE_JOB_MINUTES
    with pytest.raises(ValidationError, match="minutes"):
        jobs_costs(hardware, minutes=0)


def test_the_command_prints_the_table_and_never_the_token(fake_hub):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_TOKEN": FAKE_TOKEN}  # the fixture set HF_ENDPOINT, online

    def command(*args: str, token: str = FAKE_TOKEN) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "admin", "jobs-cost", *args],
            env={**env, "HF_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=60,
        )

    shown = command("--minutes", "15")
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.split() == ["flavor", "GPU", "GPU", "memory", "USD", "per", "hour", "USD", "per", "tune"]
    assert ["l40sx1", "1x", "L40S", "48", "GB", "1.80", "0.45"] in [row.split() for row in rows]
    assert "15 min of job time" in shown.stderr and "TUNES_JOBS_FLAVOR: a10g-small" in shown.stderr

    refused = command(token="hf_NotTheFakeHubsToken0123456789")
    assert refused.returncode == 1 and "Could not read the Hugging Face Jobs hardware list: HTTP 401" in refused.stderr
    for result in (shown, refused):
        assert FAKE_TOKEN not in result.stdout + result.stderr
    assert "hf_NotTheFakeHubsToken0123456789" not in refused.stdout + refused.stderr
