"""Docs stay honest: every setting is in the README table, the two set-up commands are shown."""

from __future__ import annotations

from pathlib import Path

from pipelines.settings import SETTINGS_DOC

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    table_rows = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `")}
    assert set(SETTINGS_DOC) <= table_rows, f"missing from README: {set(SETTINGS_DOC) - table_rows}"


def test_the_readme_shows_the_two_set_up_commands_and_ci_runs_the_tests():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
