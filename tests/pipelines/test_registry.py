"""Branches know their defaults; models come from a local folder, the Hub cache, or are built (tiny)."""

from __future__ import annotations

import pytest

from pipelines.errors import ModelUnavailableError, ValidationError
from pipelines.registry import BRANCHES, get_branch, resolve_model_dir
from pipelines.settings import Settings


def test_branch_defaults():
    assert set(BRANCHES) == {"sd15", "sdxl1", "flux1", "tiny", "tiny-flux", "fast"}
    assert get_branch("sd15").token == "sks" and get_branch("tiny").token == "sks"
    assert get_branch("sdxl1").token == "ohwx" and get_branch("flux1").token == "ohwx"
    assert get_branch("sd15").resolution == 512 and get_branch("sdxl1").resolution == 1024
    assert all(b.rank > 0 and b.steps > 0 for b in BRANCHES.values() if b.trainable)
    assert get_branch("fast").is_mock and get_branch("flux1").trainable and get_branch("tiny-flux").family == "flux"


def test_unknown_branch_lists_the_known_ones():
    with pytest.raises(ValidationError, match="`branch` is not a known branch; choose one of sd15, sdxl1"):
        get_branch("sd3")


def test_tiny_is_built_on_first_use_and_reused(tmp_path):
    settings = Settings(data_dir=tmp_path)
    folder = resolve_model_dir(settings, get_branch("tiny"))
    assert folder == tmp_path / "models" / "tiny-sd15"
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    assert size_mb < 20
    assert resolve_model_dir(settings, get_branch("tiny")) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.joinpath("models").iterdir()] == ["tiny-sd15"], "no temp folder left behind"


def test_a_real_branch_uses_a_local_folder_from_settings(tmp_path, tiny_sd15_dir):
    settings = Settings(data_dir=tmp_path, base_model_sd15=str(tiny_sd15_dir))
    assert resolve_model_dir(settings, get_branch("sd15")) == tiny_sd15_dir


def test_unreachable_weights_say_how_to_provide_them_and_hide_the_token(tmp_path):
    settings = Settings(data_dir=tmp_path, hf_token="hf_do_not_print_me")
    with pytest.raises(ModelUnavailableError) as error:
        resolve_model_dir(settings, get_branch("sdxl1"))
    message = str(error.value)
    assert "TUNES_BASE_MODEL_SDXL1" in message and "HF_TOKEN" in message
    assert "hf_do_not_print_me" not in message


def test_a_folder_that_is_not_a_diffusers_model_is_named(tmp_path):
    (tmp_path / "weights").mkdir()
    settings = Settings(data_dir=tmp_path, base_model_sd15=str(tmp_path / "weights"))
    with pytest.raises(ModelUnavailableError, match=r"has no model_index\.json"):
        resolve_model_dir(settings, get_branch("sd15"))


def test_the_mock_branch_has_no_model(tmp_path):
    with pytest.raises(ValidationError, match="mock branch"):
        resolve_model_dir(Settings(data_dir=tmp_path), get_branch("fast"))
