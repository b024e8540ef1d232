"""The repo deploys as a Hugging Face Docker Space as is, and its image runs anywhere.

Checks the README's Space front matter, the Dockerfile and .dockerignore against each other and against the
project (requirements.txt, app.py). No Docker needed: the Dockerfile is read instruction by instruction.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
ALWAYS_GRANTED_SCOPES = {"openid", "profile"}  # https://huggingface.co/docs/hub/spaces-oauth#scopes


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must start with the Space's YAML front matter"
    block, end, _ = text[4:].partition("\n---\n")
    assert end, "README.md front matter has no closing ---"
    return yaml.safe_load(block)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction: continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def args_of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def dockerfile_values(keyword: str) -> dict[str, str]:
    """KEY=VALUE pairs of every ENV (or ARG) instruction, later ones winning."""
    values: dict[str, str] = {}
    for args in args_of(keyword):
        for pair in shlex.split(args):
            key, sep, value = pair.partition("=")
            assert sep or keyword == "ARG", f"{keyword} {args}: use the KEY=VALUE form"
            values[key] = value
    return values


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of CMD or HEALTHCHECK CMD."""
    assert args.startswith("["), f"use the exec form: {args}"
    return json.loads(args)


def dockerignore() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")}


def required_torch_version() -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"torch==(\S+)", line.strip())
        if match:
            return match.group(1)
    pytest.fail("requirements.txt pins no torch version")


def test_front_matter_configures_a_docker_space_with_hugging_face_sign_in():
    meta = front_matter()
    assert meta["sdk"] == "docker"
    assert meta["app_port"] == 7860
    assert (ROOT / meta["app_file"]).is_file()
    assert meta["hf_oauth"] is True
    assert meta["title"] and meta["emoji"] and meta["pinned"] is False and meta["license"]
    assert {meta["colorFrom"], meta["colorTo"]} <= SPACE_COLORS
    assert len(meta["short_description"]) <= 60  # the Hub's limit


def test_sign_in_asks_for_no_scope_beyond_the_username():
    # the app only reads who signed in; repo or inference access would be more than it needs
    scopes = set(front_matter().get("hf_oauth_scopes") or [])
    assert scopes <= ALWAYS_GRANTED_SCOPES, f"scopes the app does not need: {scopes - ALWAYS_GRANTED_SCOPES}"


def test_readme_starts_with_the_title_after_the_front_matter():
    text = (ROOT / "README.md").read_text()
    body = text[4:].partition("\n---\n")[2]
    assert body.lstrip().startswith("# Tune Studio")


def test_image_serves_the_spaces_port_on_all_interfaces():
    port = str(front_matter()["app_port"])
    env = dockerfile_values("ENV")
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert env["GRADIO_SERVER_PORT"] == port
    assert port in " ".join(args_of("EXPOSE")).split()


def test_image_runs_the_app_file_as_uid_1000():
    assert exec_form(args_of("CMD")[-1]) == ["python", front_matter()["app_file"]]
    runs = " ".join(args_of("RUN"))
    user_spec = args_of("USER")[-1].split(":")[0]
    created = re.search(r"useradd\b[^&;]*--uid 1000 (\w+)", runs)
    assert created, "no user with uid 1000 is created"
    assert user_spec in {"1000", created.group(1)}


def test_image_installs_the_pinned_torch_before_the_requirements():
    version = required_torch_version()
    arg = dockerfile_values("ARG")
    assert arg["TORCH_VERSION"] == version, "Dockerfile and requirements.txt pin different torch versions"
    assert arg["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"  # CPU by default; CUDA by build arg
    install = next(run for run in args_of("RUN") if "pip install" in run and "torch==" in run)
    torch_at = install.index('"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"')
    assert torch_at < install.index("pip install -r /tmp/requirements.txt")


def test_dependencies_are_installed_before_the_code_is_copied():
    order = [(kw, args) for kw, args in instructions() if kw in ("COPY", "RUN")]
    copy_code = next(i for i, (kw, args) in enumerate(order) if kw == "COPY" and args.split()[-2] == ".")
    install = next(i for i, (kw, args) in enumerate(order) if kw == "RUN" and "-r /tmp/requirements.txt" in args)
    assert install < copy_code


def test_every_copied_path_exists_and_is_in_the_build_context():
    ignored = dockerignore()
    for args in args_of("COPY"):
        sources = [part for part in shlex.split(args) if not part.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
            assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by .dockerignore"


def test_data_dir_is_writable_by_the_image_user():
    data_dir = dockerfile_values("ENV")["TUNES_DATA_DIR"]
    runs = " ".join(args_of("RUN"))
    assert f"mkdir -p {data_dir}" in runs
    assert re.search(rf"chown \S+ {re.escape(data_dir)}\b", runs), f"{data_dir} is not given to the image user"


def test_healthcheck_asks_the_app_over_http_without_curl():
    check = args_of("HEALTHCHECK")[-1]
    command = exec_form(check[check.index("CMD") + len("CMD") :].strip())
    assert command[0] == "python"
    assert "http://127.0.0.1:" in command[-1] and "GRADIO_SERVER_PORT" in command[-1]


def test_dockerignore_keeps_local_state_and_tests_out_but_not_the_app():
    ignored = dockerignore()
    assert {".venv", "data", ".git", "tests"} <= ignored
    needed = {"app.py", "requirements.txt", "pipelines", "studio", "storage", "admin", "ui", "packs"}
    assert not needed & ignored, f"needed by the app but ignored: {needed & ignored}"


def test_requirements_install_gradios_oauth_extra_for_spaces_sign_in():
    # Gradio's sign-in routes (and its session middleware) import authlib and itsdangerous, its `oauth` extra.
    # A Gradio SDK Space installs them itself; a Docker Space has only what the Dockerfile installs.
    assert front_matter()["hf_oauth"] is True
    gradio = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("gradio")]
    assert any(re.match(r"gradio\[[^\]]*\boauth\b[^\]]*\]==", line) for line in gradio), gradio
