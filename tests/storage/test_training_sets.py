"""A tune's training set travels as a private `datasets` image dataset (`image`, `text`): the real `datasets` and
huggingface_hub push it to, load it from and delete it on a fake Hub."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import constants
from PIL import Image

from pipelines.errors import ArtifactError, ValidationError
from storage.training_sets import (
    delete_training_set,
    load_training_set,
    push_training_set,
    sweep,
    training_set_repo,
)
from tests.conftest import astronaut_photos
from tests.fakehub import FAKE_TOKEN, FakeHub, fake_hub_fixture  # noqa: F401 (registers `fake_hub`)

NAMESPACE = "studio"
CAPTION = "photo of sks woman"
REPO_ID = training_set_repo(NAMESPACE, 7)


@pytest.fixture
def photo_files(tmp_path: Path) -> list[Path]:
    """Four real photos as the studio keeps a tune's photos: PNG files in one folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for index, photo in enumerate(astronaut_photos()):
        path = folder / f"{index:02d}.png"
        photo.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub's download cache, in the test's folder."""
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def dataset_repo(hub: FakeHub, repo_id: str = REPO_ID):
    return hub.repos.get(f"datasets/{repo_id}")


def test_the_photos_and_caption_go_to_a_private_parquet_repo_and_come_back_pixel_for_pixel(
    fake_hub, photo_files, hub_cache
):
    assert REPO_ID == "studio/tune-7-photos"
    assert push_training_set(photo_files, CAPTION, repo_id=REPO_ID, token=FAKE_TOKEN) == REPO_ID

    repo = dataset_repo(fake_hub)
    assert repo.private
    [shard] = [path for path in repo.files if path.endswith(".parquet")]
    assert shard.startswith("data/train-") and shard in repo.head.lfs, "parquet shards travel through LFS"
    table = pq.read_table(io.BytesIO(repo.files[shard]))
    assert table.column_names == ["image", "text"]
    # each photo byte for byte, named by its file name only (no folder of the studio's machine)
    assert table.column("image")[0].as_py() == {"bytes": photo_files[0].read_bytes(), "path": "00.png"}
    card = yaml.safe_load(repo.files["README.md"].decode().split("---\n")[1])
    features = {feature["name"]: feature["dtype"] for feature in card["dataset_info"]["features"]}
    assert features == {"image": "image", "text": "string"}, "what the diffusers scripts read with --dataset_name"

    loaded = load_training_set(REPO_ID, token=FAKE_TOKEN)
    assert [caption for _, caption in loaded] == [CAPTION] * 4
    for (image, _), path in zip(loaded, photo_files, strict=True):
        assert np.array_equal(pixels(image), pixels(Image.open(path)))
    assert not list(hub_cache.rglob("*.parquet")), "no copy of the photos is left in the download cache"
    assert all(request.authorized for request in fake_hub.requests)


def test_images_with_one_caption_each_and_a_second_push_replaces_the_first(fake_hub, hub_cache):
    photos = astronaut_photos()
    push_training_set(photos, CAPTION, repo_id=REPO_ID, token=FAKE_TOKEN)
    captions = ["photo of sks woman smiling", "photo of sks woman outdoors"]
    push_training_set(photos[2:], captions, repo_id=REPO_ID, token=FAKE_TOKEN)

    loaded = load_training_set(REPO_ID, token=FAKE_TOKEN)
    assert [caption for _, caption in loaded] == captions
    assert all(
        np.array_equal(pixels(image), pixels(photo)) for (image, _), photo in zip(loaded, photos[2:], strict=True)
    )
    assert len([path for path in dataset_repo(fake_hub).files if path.endswith(".parquet")]) == 1


def test_a_public_repo_of_that_name_is_not_filled_with_photos(fake_hub, photo_files):
    fake_hub.add_repo(REPO_ID, repo_type="dataset", private=False)
    with pytest.raises(ArtifactError, match="is public, so the training photos were not pushed"):
        push_training_set(photo_files, CAPTION, repo_id=REPO_ID, token=FAKE_TOKEN)
    repo = dataset_repo(fake_hub)
    assert repo is not None and set(repo.files) == {".gitattributes"}, "someone else's repo: left as it was"
    assert not fake_hub.calls("POST", "/commit/")


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/repos/create", 403, "You don't have the rights to create a dataset under the namespace"),
        ("/preupload/", 403, "Forbidden: you have exceeded your storage quota"),
        ("/commit/", 403, "Forbidden: you have exceeded your storage quota"),
    ],
)
def test_a_hub_that_refuses_the_push_gives_a_clear_error_and_leaves_no_repo(
    fake_hub, photo_files, path, status, message
):
    fake_hub.fail_next(path, status=status, message=message)
    with pytest.raises(ArtifactError) as refused:
        push_training_set(photo_files, CAPTION, repo_id=REPO_ID, token=FAKE_TOKEN)
    text = str(refused.value)
    assert REPO_ID in text and message in text and f"HTTP {status}" in text
    assert "Check that the token is valid and may write to 'studio'" in text
    assert FAKE_TOKEN not in text and refused.value.location == REPO_ID
    assert dataset_repo(fake_hub) is None, "no repo (and no photo) is left on the Hub"
    assert bool(fake_hub.calls("DELETE", "/api/repos/delete")) == (path != "/api/repos/create"), "created, so deleted"


def test_errors_never_carry_the_token(fake_hub, photo_files):
    wrong = "hf_WrongToken0123456789abcdefghijkl"
    with pytest.raises(ArtifactError) as refused:
        push_training_set(photo_files, CAPTION, repo_id=REPO_ID, token=wrong)
    assert "HTTP 401" in str(refused.value) and wrong not in str(refused.value)
    chain, cause = [], refused.value
    while cause is not None:
        chain.append(f"{cause!r} {cause}")
        cause = cause.__cause__ or cause.__context__
    assert not any(wrong in text for text in chain)


def test_loading_a_missing_or_foreign_dataset_says_so(fake_hub, hub_cache):
    with pytest.raises(ArtifactError, match="does not exist") as missing:
        load_training_set(REPO_ID, token=FAKE_TOKEN)
    assert missing.value.missing

    import datasets

    datasets.Dataset.from_dict({"label": [1, 2]}).push_to_hub(REPO_ID, private=True, token=FAKE_TOKEN)
    with pytest.raises(ArtifactError, match="is not a training set: it has no image, text column"):
        load_training_set(REPO_ID, token=FAKE_TOKEN)


def test_delete_removes_the_repo_and_a_missing_one_is_fine(fake_hub, photo_files):
    push_training_set(photo_files[:1], CAPTION, repo_id=REPO_ID, token=FAKE_TOKEN)
    delete_training_set(REPO_ID, token=FAKE_TOKEN)
    assert dataset_repo(fake_hub) is None
    delete_training_set(REPO_ID, token=FAKE_TOKEN)

    fake_hub.add_repo(REPO_ID, repo_type="dataset", private=True)
    fake_hub.fail_next("/api/repos/delete", status=500, times=5)
    with pytest.raises(ArtifactError, match=f"Could not delete the Hugging Face Hub dataset repo {REPO_ID}: HTTP 500"):
        delete_training_set(REPO_ID, token=FAKE_TOKEN)


def test_sweep_deletes_only_this_studios_leftover_training_sets(fake_hub):
    for name in ("tune-1-photos", "tune-2-photos", "tune-3-photos", "holiday-photos", "tune-4-captions"):
        fake_hub.add_repo(f"{NAMESPACE}/{name}", repo_type="dataset", private=True)
    fake_hub.add_repo("elsewhere/tune-5-photos", repo_type="dataset", private=True)
    fake_hub.add_repo(f"{NAMESPACE}/tune-6-photos")  # a model repo, whatever its name

    assert sweep(NAMESPACE, set(), token=FAKE_TOKEN, min_age=timedelta(hours=1)) == [], "too young to be leftovers"
    deleted = sweep(NAMESPACE, {f"{NAMESPACE}/tune-2-photos", "tune-3-photos"}, token=FAKE_TOKEN)

    assert deleted == [f"{NAMESPACE}/tune-1-photos"]
    assert sorted(fake_hub.repos) == [
        "datasets/elsewhere/tune-5-photos",
        "datasets/studio/holiday-photos",
        "datasets/studio/tune-2-photos",
        "datasets/studio/tune-3-photos",
        "datasets/studio/tune-4-captions",
        "studio/tune-6-photos",
    ]


def test_sweep_reports_a_hub_that_cannot_list_and_skips_a_repo_it_cannot_delete(fake_hub):
    fake_hub.add_repo(f"{NAMESPACE}/tune-1-photos", repo_type="dataset", private=True)
    fake_hub.add_repo(f"{NAMESPACE}/tune-2-photos", repo_type="dataset", private=True)
    fake_hub.fail_next("/api/datasets", status=403, method="GET", message="Forbidden")
    with pytest.raises(ArtifactError, match="Could not list the datasets of 'studio' on the Hugging Face Hub"):
        sweep(NAMESPACE, set(), token=FAKE_TOKEN)

    fake_hub.fail_next("/api/repos/delete", status=403, message="Forbidden")
    assert sweep(NAMESPACE, set(), token=FAKE_TOKEN) == [f"{NAMESPACE}/tune-2-photos"]
    assert sweep(NAMESPACE, set(), token=FAKE_TOKEN) == [f"{NAMESPACE}/tune-1-photos"], "the next sweep gets it"


@pytest.mark.parametrize(
    ("photos", "caption", "repo_id", "field"),
    [
        ([], CAPTION, REPO_ID, "photos"),
        (["missing.png"], CAPTION, REPO_ID, "photos[0]"),
        (None, "  ", REPO_ID, "caption"),
        (None, ["one caption", "for two photos"], REPO_ID, "caption"),
        (None, [""], REPO_ID, "caption[0]"),
        (None, CAPTION, "no-namespace", "repo_id"),
        (None, CAPTION, "studio/../etc", "repo_id"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(fake_hub, photo_files, photos, caption, repo_id, field):
    photos = photo_files[:1] if photos is None else photos
    with pytest.raises(ValidationError) as refused:
        push_training_set(photos, caption, repo_id=repo_id, token=FAKE_TOKEN)
    assert refused.value.field == field
    assert fake_hub.requests == []


def test_a_job_on_the_hub_loads_the_training_set_with_its_secret_token(fake_hub, photo_files):
    """What the training job does on its rented machine (here: a subprocess the fake Hub runs)."""
    from huggingface_hub import HfApi

    push_training_set(photo_files, CAPTION, repo_id=REPO_ID, token=FAKE_TOKEN)
    code = (
        "import os\n"
        "from storage.training_sets import load_training_set\n"
        "rows = load_training_set(os.environ['TRAINING_SET'], token=os.environ['HF_TOKEN'])\n"
        "print(len(rows), rows[0][0].size, rows[0][1])\n"
    )
    api = HfApi(endpoint=fake_hub.url, token=FAKE_TOKEN)
    job = api.run_job(
        image="hf.co/spaces/studio/tune-studio",
        command=["python", "-c", code],
        env={"TRAINING_SET": REPO_ID},
        secrets={"HF_TOKEN": FAKE_TOKEN},
        namespace=NAMESPACE,
    )
    logs = list(api.fetch_job_logs(job_id=job.id, namespace=NAMESPACE, follow=True))
    assert api.inspect_job(job_id=job.id, namespace=NAMESPACE).status.stage == "COMPLETED", logs
    assert logs[-1] == f"4 (512, 512) {CAPTION}"
