"""Training on Hugging Face Jobs through the REST API of the real server (`python app.py`, `TUNES_TRAIN_ON=hf-jobs`),
with the fake Hub's Jobs API running the job as a local process: the studio is SIGKILLed while its job trains and
restarted; it re-attaches to the job by id (one job in total), the tune ends trained with its prompt's images, the
photo dataset is gone from the Hub, and stock diffusers loads the LoRA from the tune's private repo."""

from __future__ import annotations

import httpx
import torch

from pipelines.train import LORA_WEIGHTS_NAME
from tests.conftest import astronaut_photos, settings_with_tiny, wait_for
from tests.fakehub import FAKE_TOKEN, fake_hub_fixture  # noqa: F401 (registers `fake_hub`)
from tests.faults.test_server_kill import Server, _jpeg, row
from tests.pipelines.test_train import stock_latents


def test_a_studio_killed_while_its_job_trains_reattaches_and_the_lora_loads_in_stock_diffusers(
    tmp_path, tiny_sd15_dir, fake_hub, monkeypatch
):
    settings = settings_with_tiny(tmp_path, tiny_sd15_dir)
    server = Server(settings.data_dir, tmp_path)
    server.env.update(
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=fake_hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN=FAKE_TOKEN,
        TUNES_HUB_NAMESPACE="studio",
        TUNES_TRAIN_ON="hf-jobs",
        TUNES_JOBS_IMAGE="tune-studio:test",
        TUNES_WORKER_DEVICES="none",  # no local GPU: the prompts go to the job too
    )
    fake_hub.job_extra_env = {"TUNES_DATA_DIR": str(settings.data_dir), "OMP_NUM_THREADS": "1"}  # the tiny model
    key = server.create_key("alice")
    auth = {"Authorization": f"Bearer {key}"}
    photos = [("tune[images][]", (f"me-{i}.jpg", _jpeg(p), "image/jpeg")) for i, p in enumerate(astronaut_photos())]
    fields = [
        ("tune[title]", "Me"),
        ("tune[name]", "woman"),
        ("tune[steps]", "10"),  # the studio is killed once the job runs, whatever its length
        ("tune[prompts_attributes][][text]", "{{subject}} as an astronaut"),
        ("tune[prompts_attributes][][num_images]", "2"),
        ("tune[prompts_attributes][][steps]", "2"),
    ]
    form = [(name, (None, value)) for name, value in fields]
    try:
        # 1. Create the tune through REST; kill the studio once its job runs
        url = server.start(key)
        with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
            created = client.post("/tunes", files=form + photos)
            assert created.status_code == 201, created.text
            tune = created.json()
            job = wait_for(fake_hub.submitted_jobs, bool, timeout=60, what="the job to be submitted")[0]
            job.wait("RUNNING", timeout=60)
        # the studio writes the job id once `run_job` has answered, which can be just after the job runs
        query = "SELECT status, job_id, training_set FROM tunes WHERE id = ?"
        wait_for(lambda: row(server.data_dir, query, tune["id"])["job_id"], bool, what="the job id on the record")
        server.kill()
        killed = row(server.data_dir, query, tune["id"])
        assert (killed["status"], killed["job_id"]) == ("training", job.id), "the job id is on the record"

        # 2. Restart: the studio follows the same job to its end, fetches the images, deletes the photos
        url = server.start(key)
        with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
            trained = wait_for(
                lambda: client.get(f"/tunes/{tune['id']}").json(),
                lambda t: t["status"] in ("trained", "failed"),
                timeout=240,
                what="the tune to train",
                every=0.5,
            )
            assert trained["status"] == "trained", (trained["error"], job.log_lines[-20:])
            [prompt] = client.get(f"/tunes/{tune['id']}/prompts").json()
            assert prompt["status"] == "done" and len(prompt["images"]) == 2, prompt
            for link in prompt["images"]:
                assert client.get(link).headers["content-type"] == "image/png"
            assert FAKE_TOKEN not in str(trained) + str(prompt)
    finally:
        server.stop()
    assert [j.id for j in fake_hub.submitted_jobs()] == [job.id], "one job in total"
    assert job.stage == "COMPLETED" and FAKE_TOKEN not in "\n".join(job.log_lines)
    record = row(server.data_dir, "SELECT attempts, artifact_location FROM tunes WHERE id = ?", tune["id"])
    assert record["attempts"] == 1
    assert f"datasets/{killed['training_set']}" not in fake_hub.repos, "the photos are gone from the Hub"
    repo_id = record["artifact_location"].removeprefix("hub://")
    assert fake_hub.repos[repo_id].private

    # 3. Stock diffusers loads the LoRA straight from the tune's private repo, as the model card shows
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    base = stock_latents(tiny_sd15_dir, seeds=(0,))
    tuned = stock_latents(tiny_sd15_dir, repo_id, seeds=(0,), weight_name=LORA_WEIGHTS_NAME)
    assert not torch.allclose(base, tuned, atol=1e-4), "the LoRA from the Hub had no effect"
