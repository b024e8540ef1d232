"""A small fake Hugging Face Hub, served over real HTTP on 127.0.0.1 for the real `huggingface_hub` client.

It implements exactly what huggingface_hub 2.4 sends for creating, checking, updating, uploading to,
downloading from and deleting model repos (see `FakeHubHandler` for the routes), keeps everything in
memory, checks the bearer token on every request (401 otherwise), records every request, and can fail on
demand (`fail_next`). Use the `fake_hub` fixture: it starts a server, lets the library go online for the test
only, and points it at the server. Importing the fixture function registers it in a test module (its Python name
differs from the fixture's, so test parameters named `fake_hub` do not shadow the import):

    from tests.fakehub import fake_hub_fixture  # noqa: F401
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

FAKE_TOKEN = "hf_FakeHubToken0123456789abcdefXYZ"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file: what the Hub answers as ETag and tree `oid` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool


@dataclass(frozen=True)
class FakeCommit:
    oid: str
    summary: str
    changed: tuple[str, ...]  # paths added or deleted by this commit
    files: dict[str, bytes]  # the whole tree after it


@dataclass
class FakeRepo:
    repo_id: str
    private: bool
    commits: list[FakeCommit] = field(default_factory=list)
    locked_public: bool = False  # settings calls are accepted but ignored (like an org policy would)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"))

    @property
    def head(self) -> FakeCommit:
        return self.commits[-1]

    @property
    def files(self) -> dict[str, bytes]:
        return self.head.files

    def at(self, revision: str) -> FakeCommit | None:
        if revision == "main":
            return self.head
        return next((commit for commit in self.commits if commit.oid == revision), None)


@dataclass
class _Fault:
    path_substring: str
    status: int
    times: int
    method: str | None
    message: str
    disconnect: bool


class FakeHub:
    """In-memory Hub state plus the HTTP server that serves it. Thread-safe; start with `start()`."""

    def __init__(self, *, token: str = FAKE_TOKEN):
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHubHandler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- setting the scene -------------------------------------------------------------------------------

    def add_repo(
        self, repo_id: str, *, private: bool = False, files: dict[str, bytes] | None = None, locked_public: bool = False
    ) -> FakeRepo:
        """A repo that exists before the test runs (public by default: the case the store must fix)."""
        with self._lock:
            repo = self._create(repo_id, private=private)
            repo.locked_public = locked_public
            if files:
                self._commit(repo, "Existing files", added=files, deleted=())
            return repo

    def fail_next(
        self,
        path_substring: str,
        *,
        status: int = 500,
        times: int = 1,
        method: str | None = None,
        message: str = "Internal Error - We're working hard to fix this as soon as possible!",
        disconnect: bool = False,
    ) -> None:
        """Answer the next `times` requests whose path contains `path_substring` with `status` (checked before
        the token), or close the connection without answering when `disconnect` is set."""
        with self._lock:
            self._faults.append(_Fault(path_substring, status, times, method, message, disconnect))

    # --- reading what happened ---------------------------------------------------------------------------

    def calls(self, method: str | None = None, path_contains: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [
                request
                for request in self.requests
                if (method is None or request.method == method) and path_contains in request.path
            ]

    def user_commits(self, repo_id: str) -> list[FakeCommit]:
        """Commits made through the API (not the repo's initial `.gitattributes` commit)."""
        with self._lock:
            return list(self.repos[repo_id].commits[1:])

    # --- state changes (under the lock) ------------------------------------------------------------------

    def _create(self, repo_id: str, *, private: bool) -> FakeRepo:
        repo = FakeRepo(repo_id=repo_id, private=private)
        self.repos[repo_id] = repo
        self._commit(repo, "initial commit", added={".gitattributes": GITATTRIBUTES}, deleted=())
        return repo

    def _commit(self, repo: FakeRepo, summary: str, *, added: dict[str, bytes], deleted: tuple[str, ...]) -> str:
        files = dict(repo.commits[-1].files) if repo.commits else {}
        for path in deleted:
            files = {name: data for name, data in files.items() if name != path and not name.startswith(path + "/")}
        files.update(added)
        parent = repo.commits[-1].oid if repo.commits else ""
        oid = hashlib.sha1(f"{parent}\n{summary}\n{len(repo.commits)}".encode()).hexdigest()
        repo.commits.append(FakeCommit(oid, summary, tuple(added) + deleted, files))
        return oid

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path_substring in path and fault.method in (None, method) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None


class FakeHubHandler(BaseHTTPRequestHandler):
    """Routes (repo ids are `<namespace>/<name>`, revisions `main` or a commit oid):

    POST   /api/repos/create                          {name, organization, visibility} -> 200 {url} | 409
    DELETE /api/repos/delete                          {name, organization} -> 200 | 404 RepoNotFound
    GET    /api/models/{repo}[/revision/{rev}]        model info: id, sha, private, siblings
    PUT    /api/models/{repo}/settings                {visibility: private|public}
    POST   /api/validate-yaml                         {content, repoType} -> no errors
    POST   /api/models/{repo}/preupload/{rev}         every file "regular", with the current blob oid
    POST   /api/models/{repo}/commit/{rev}            NDJSON: header, then file (base64) / deletedFile lines
    GET    /api/models/{repo}/tree/{rev}[/{path}]     files (and folders unless recursive), one page
    HEAD   /{repo}/resolve/{rev}/{path}               ETag, X-Repo-Commit, Content-Length
    GET    /{repo}/resolve/{rev}/{path}               the bytes
    """

    protocol_version = "HTTP/1.0"  # one request per connection: no pooled socket outlives a test's server

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # requests are recorded, not printed
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # --- dispatch ----------------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        segments = [unquote(part) for part in split.path.split("/")[1:]]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorized = self.headers.get("Authorization") == f"Bearer {self.hub.token}"
        with self.hub._lock:
            self.hub.requests.append(RecordedRequest(method, split.path, parse_qs(split.query), authorized))
        fault = self.hub._take_fault(method, split.path)
        if fault is not None:
            if fault.disconnect:
                self.close_connection = True
                return
            return self._error(fault.status, fault.message)
        if not authorized:
            return self._error(401, "Invalid credentials in Authorization header", header_message=True)
        with self.hub._lock:
            self._route(method, segments, body)

    def _route(self, method: str, segments: list[str], body: bytes) -> None:
        # dataset repos use the same routes under /api/datasets/ and /datasets/; they are stored as "datasets/<id>"
        prefix = ""
        if segments[:2] == ["api", "datasets"]:
            segments, prefix = ["api", "models", *segments[2:]], "datasets/"
        elif segments[:1] == ["datasets"]:
            segments, prefix = segments[1:], "datasets/"
        self._prefix = prefix
        match (method, segments):
            case ("POST", ["api", "repos", "create"]):
                return self._create_repo(json.loads(body))
            case ("DELETE", ["api", "repos", "delete"]):
                return self._delete_repo(json.loads(body))
            case ("POST", ["api", "validate-yaml"]):
                return self._json({"errors": [], "warnings": []})
            case ("GET", ["api", "models", namespace, name]):
                return self._model_info(f"{prefix}{namespace}/{name}", "main")
            case ("GET", ["api", "models", namespace, name, "revision", revision]):
                return self._model_info(f"{prefix}{namespace}/{name}", revision)
            case ("PUT", ["api", "models", namespace, name, "settings"]):
                return self._settings(f"{prefix}{namespace}/{name}", json.loads(body))
            case ("POST", ["api", "models", namespace, name, "preupload", revision]):
                return self._preupload(f"{prefix}{namespace}/{name}", revision, json.loads(body))
            case ("POST", ["api", "models", namespace, name, "commit", revision]):
                return self._commit(f"{prefix}{namespace}/{name}", revision, body)
            case ("GET", ["api", "models", namespace, name, "tree", revision, *path]):
                return self._tree(f"{prefix}{namespace}/{name}", revision, "/".join(path))
            case ("GET" | "HEAD", [namespace, name, "resolve", revision, *path]) if path:
                return self._resolve(method, f"{prefix}{namespace}/{name}", revision, "/".join(path))
        return self._error(404, f"Sorry, we can't find the page you are looking for ({method} {self.path}).")

    # --- routes ------------------------------------------------------------------------------------------

    def _create_repo(self, payload: dict) -> None:
        if payload.get("type") not in (None, "model", "dataset"):
            return self._error(400, "the fake Hub only hosts model and dataset repos")
        prefix = "datasets/" if payload.get("type") == "dataset" else ""
        repo_id = f"{prefix}{payload.get('organization')}/{payload['name']}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            return self._json({"error": "You already created this model repo", "url": url}, status=409)
        self.hub._create(repo_id, private=payload.get("visibility") == "private")
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, payload: dict) -> None:
        prefix = "datasets/" if payload.get("type") == "dataset" else ""
        repo_id = f"{prefix}{payload.get('organization')}/{payload['name']}"
        if self.hub.repos.pop(repo_id, None) is None:
            return self._repo_not_found()
        return self._json({})

    def _model_info(self, repo_id: str, revision: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return self._json(
            {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "createdAt": repo.created_at,
                "lastModified": repo.created_at,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            }
        )

    def _settings(self, repo_id: str, payload: dict) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        if "visibility" in payload and not repo.locked_public:
            repo.private = payload["visibility"] == "private"
        return self._json({})

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        current = commit.files if commit is not None else {}
        files = [
            {
                "path": item["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_oid(current[item["path"]]) if item["path"] in current else None,
            }
            for item in payload["files"]
        ]
        return self._json({"files": files, "commitOid": repo.head.oid})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        if revision != "main":
            return self._error(400, "the fake Hub only commits to main")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "the first line of a commit must be its header")
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file" and value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"].rstrip("/"))
            else:
                return self._error(400, f"the fake Hub does not support {line['key']!r} commit lines")
        oid = self.hub._commit(repo, lines[0]["value"]["summary"], added=added, deleted=tuple(deleted))
        url = f"{self.hub.url}/{repo_id}/commit/{oid}"
        return self._json({"success": True, "commitOid": oid, "commitUrl": url})

    def _tree(self, repo_id: str, revision: str, prefix: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["False"])[0].lower() == "true"
        base = f"{prefix}/" if prefix else ""
        entries: dict[str, dict] = {}
        for path, data in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            folders = [base + "/".join(parts[: depth + 1]) for depth in range(len(parts) - 1)]
            for folder in folders if recursive else folders[:1]:
                entries.setdefault(folder, {"type": "directory", "oid": git_blob_oid(folder.encode()), "path": folder})
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}
        return self._json(list(entries.values()))

    def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._repo_not_found()
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        if path not in commit.files:
            return self._error(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{git_blob_oid(data)}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
        }
        return self._send(200, data, headers, head=method == "HEAD")

    # --- responses ---------------------------------------------------------------------------------------

    def _repo_not_found(self) -> None:
        return self._error(404, "Repository not found", code="RepoNotFound")

    def _error(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        header_message: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        if header_message:
            extra["X-Error-Message"] = message
        return self._json({"error": message}, status=status, headers=extra)

    def _json(self, payload: object, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        return self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, body: bytes, headers: dict[str, str], *, head: bool = False) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", f"fake-{len(self.hub.requests)}")
        self.end_headers()
        if not head:
            self.wfile.write(body)


@pytest.fixture(name="fake_hub")
def fake_hub_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running `FakeHub`; huggingface_hub is online for this test only and its default endpoint is the fake."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    hub = FakeHub().start()
    # conftest.py turns the library offline for the whole session; 2.4 reads `constants.HF_HUB_OFFLINE` on
    # every request (`is_offline_mode()`), so the module attribute is what counts, the variable is for children.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # The fake is also the default endpoint, so a call that forgets `endpoint=` lands here, recorded, instead of
    # on huggingface.co. Both names move together: `hf_hub_url` swaps `ENDPOINT` for `endpoint=` inside the template.
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    # Building request headers would otherwise fetch the "agent harnesses" registry from the Hub once.
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
    try:
        yield hub
    finally:
        hub.stop()
