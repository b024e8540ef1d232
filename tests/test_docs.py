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


def test_the_readme_runs_project_commands_with_the_venv_python():
    """A bare `python -m admin` outside the venv fails ("No module named 'PIL'"); the README shows what works."""
    readme = (ROOT / "README.md").read_text()
    assert "make key USER=alice" in readme and ".venv/bin/python -m admin create-key alice" in readme
    bare = [line for line in readme.splitlines() if "python -m admin create-key" in line and "venv" not in line]
    assert not bare, bare
    assert "\nkey: install" in (ROOT / "Makefile").read_text()


def test_the_readme_states_what_the_first_run_costs():
    readme = (ROOT / "README.md").read_text()
    assert "What the first run costs" in readme and "waiting for the worker" in readme
