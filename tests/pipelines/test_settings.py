"""Settings come from the environment in one place, with errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import SettingsError
from pipelines.settings import SETTINGS_DOC, Settings


def test_defaults_match_the_design():
    settings = Settings.from_env({})
    assert settings.data_dir == Path("./data").resolve() and settings.data_dir.is_absolute()
    assert (settings.min_photos, settings.max_photos, settings.min_photo_side) == (4, 30, 256)
    assert settings.retention_days == 30 and settings.default_branch == "tiny"


def test_values_are_parsed_by_type():
    settings = Settings.from_env(
        {
            "TUNES_DATA_DIR": "/srv/tunes",
            "TUNES_MAX_PHOTOS": "12",
            "TUNES_ADMINS": "alice, bob,,",
            "TUNES_BASE_MODEL_SD15": "/models/sd15",
            "TUNES_DEVICE": "cuda:1",
        }
    )
    assert settings.data_dir == Path("/srv/tunes")
    assert settings.max_photos == 12
    assert settings.admins == ("alice", "bob")
    assert settings.base_model_override("sd15") == "/models/sd15"
    assert settings.base_model_override("tiny") is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TUNES_MAX_PHOTOS": "many"}, "TUNES_MAX_PHOTOS"),
        ({"TUNES_MIN_PHOTOS": "40"}, "TUNES_MIN_PHOTOS"),
        ({"TUNES_RETENTION_DAYS": "0"}, "TUNES_RETENTION_DAYS"),
        ({"TUNES_DEVICE": "tpu"}, "TUNES_DEVICE"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(env, variable):
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env)
    assert variable in str(error.value) and next(iter(env.values())) in str(error.value)


def test_the_hf_token_never_shows_in_repr():
    settings = Settings.from_env({"HF_TOKEN": "hf_secret_value_123"})
    assert settings.hf_token == "hf_secret_value_123"
    assert "hf_secret_value_123" not in repr(settings)


def test_every_documented_variable_maps_to_a_setting():
    attributes = set(Settings.__dataclass_fields__)
    assert {attr for attr, _ in SETTINGS_DOC.values()} == attributes
