"""Who the caller is in each deployment mode, and how errors reach the form."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipelines.errors import ValidationError
from pipelines.settings import Settings
from studio.errors import PermissionDeniedError, SignInRequiredError
from ui.context import UIContext
from ui.create_tab import parse_characteristics
from ui.uploads import read_uploads


def context(tmp_path, **changes) -> UIContext:
    settings = Settings(data_dir=tmp_path, **changes)
    return UIContext(studio=SimpleNamespace(settings=settings), settings=settings)


def test_without_sign_in_everyone_is_the_local_user_who_runs_the_place(tmp_path):
    ctx = context(tmp_path, local_user="me")
    assert ctx.user(SimpleNamespace(username=None)) == "me"
    assert ctx.admin(None) == "me"


def test_naming_admins_takes_the_admin_role_from_the_local_user(tmp_path):
    ctx = context(tmp_path, local_user="me", admins=("root",))
    with pytest.raises(PermissionDeniedError, match="TUNES_ADMINS"):
        ctx.admin(None)


def test_accounts_use_the_signed_in_name_and_refuse_anonymous_callers(tmp_path):
    ctx = context(tmp_path, accounts=("alice:pw",), editors=("alice",))
    assert ctx.user(SimpleNamespace(username="alice")) == "alice"
    assert ctx.editor(SimpleNamespace(username="alice")) == "alice"
    with pytest.raises(SignInRequiredError):
        ctx.user(SimpleNamespace(username=None))
    with pytest.raises(PermissionDeniedError):
        ctx.admin(SimpleNamespace(username="alice"))


def test_on_a_space_the_user_is_the_hugging_face_account_from_the_oauth_session(tmp_path):
    ctx = context(tmp_path, oauth_client_id="abc")
    signed_in = SimpleNamespace(username=None, session={"oauth_info": {"userinfo": {"preferred_username": "hf-ann"}}})
    assert ctx.user(signed_in) == "hf-ann"
    with pytest.raises(SignInRequiredError, match="Sign in with Hugging Face"):
        ctx.user(SimpleNamespace(username=None, session={}))


def test_account_settings_refuse_entries_without_a_password_and_never_show_passwords(tmp_path):
    with pytest.raises(ValidationError, match="TUNES_ACCOUNTS") as caught:
        Settings.from_env({"TUNES_DATA_DIR": str(tmp_path), "TUNES_ACCOUNTS": "alice:secret-pw,bob"})
    assert "secret-pw" not in str(caught.value)
    settings = Settings.from_env({"TUNES_DATA_DIR": str(tmp_path), "TUNES_ACCOUNTS": "alice:secret-pw"})
    assert settings.account_pairs == [("alice", "secret-pw")]
    assert "secret-pw" not in repr(settings)


def test_characteristics_lines_parse_and_a_bad_line_is_named():
    assert parse_characteristics("eye_color: green eyes\n\nhair: short brown") == {
        "eye_color": "green eyes",
        "hair": "short brown",
    }
    with pytest.raises(ValidationError, match="line 2"):
        parse_characteristics("eye_color: green\njust text")


def test_uploads_over_the_limits_are_refused_by_the_server(tmp_path):
    settings = Settings(data_dir=tmp_path, max_photo_bytes=1000)
    small, big = tmp_path / "a.jpg", tmp_path / "../big.jpg"
    small.write_bytes(b"x" * 10)
    big.write_bytes(b"x" * 5000)
    assert read_uploads([str(small)], settings) == [("a.jpg", b"x" * 10)]
    with pytest.raises(ValidationError, match=r"images\[1\]` is 4.9 KB; the limit is 1000 bytes \(got .big.jpg.\)"):
        read_uploads([str(small), str(big)], settings)
    with pytest.raises(ValidationError, match="between 4 and 30 photos"):
        read_uploads([str(small)] * 40, settings)
