"""SSRF-safe outbound HTTP, against a real HTTP server on 127.0.0.1 started by the tests.

The server is on loopback, which `check_url` refuses, so positive tests allow `127.0.0.1` explicitly. Public
names cannot be resolved here; the few tests about public addresses replace `socket.getaddrinfo`.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pipelines.errors import FetchError, ValidationError
from storage.net import backoff_delays, check_url, fetch_url, post_json, redact_url

PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4  # a JPEG header and 1 KiB of anything
LIMIT = 4096
LOOPBACK = ("127.0.0.1",)
PUBLIC_IP = "93.184.215.14"


@dataclass
class Recorded:
    """What the server saw: `(path, headers, body)` per POST, the `Host` header per photo GET."""

    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        path = self.path.split("?")[0]
        if path == "/photo.jpg" or path.startswith("/files/"):
            self.server.recorded.hosts.append(self.headers["Host"])
            self._reply(200, PHOTO, {"Content-Type": "image/jpeg"})
        elif path == "/big":
            self._reply(200, b"x" * (LIMIT * 4))
        elif path == "/big-chunked":
            self._big_chunked()
        elif path == "/big-unsized":
            self._big_unsized()
        elif path == "/slow":
            self.server.release.wait(10)  # released when the server stops: never answers within a test
            self._reply(200, PHOTO)
        elif path == "/redirect-to-loopback":
            self._redirect(f"http://127.0.0.1:{port}/photo.jpg")
        elif path == "/redirect-external":
            self._redirect("http://10.0.0.1/x")
        elif path == "/loop":
            self._redirect("/loop")
        elif path.startswith("/status/"):
            self._reply(int(path.rsplit("/", 1)[1]), b"nope")
        else:
            self._reply(404, b"not found")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.recorded.posts.append((self.path, dict(self.headers), body))
        if self.path == "/callback":
            self._reply(200, b"ok")
        elif self.path.startswith("/status/"):
            self._reply(int(self.path.rsplit("/", 1)[1]), b"nope")
        elif self.path == "/redirect-to-loopback":
            self._redirect(f"http://127.0.0.1:{self.server.server_address[1]}/callback")
        else:
            self._reply(404, b"not found")

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client hung up early, as it should on a refused body
            self.close_connection = True

    def _redirect(self, location: str) -> None:
        self._reply(302, b"", {"Location": location})

    def _big_chunked(self) -> None:
        try:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(8):
                self.wfile.write(b"%x\r\n%s\r\n" % (LIMIT, b"x" * LIMIT))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _big_unsized(self) -> None:
        self.close_connection = True  # the body ends when the connection does
        try:
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * (LIMIT * 4))
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    recorded: Recorded
    release: threading.Event

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # hang-ups and refused handshakes are expected here
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.recorded = Recorded()
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base(server: _Server) -> str:
    server.recorded.posts.clear()
    server.recorded.hosts.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


# -- check_url: refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/", "a loopback address (127.0.0.1)"),
        ("http://localhost/", "an internal host name (localhost)"),
        ("http://[::1]/", "a loopback address (::1)"),
        ("http://10.1.2.3/", "a private network address (10.1.2.3)"),
        ("http://172.16.0.1/", "a private network address (172.16.0.1)"),
        ("http://192.168.1.1/", "a private network address (192.168.1.1)"),
        ("http://169.254.169.254/latest/meta-data", "a cloud metadata address (169.254.169.254)"),
        ("http://[fe80::1]/", "a link-local address (fe80::1)"),
        ("http://[::ffff:127.0.0.1]/", "a loopback address (::ffff:"),
        ("http://[2002:a00:1::]/", "a private network address (2002:a00:1:: embeds 10.0.0.1)"),
        ("http://0.0.0.0/", "an unspecified address (0.0.0.0)"),
        ("http://2130706433/", "a loopback address (127.0.0.1)"),
        ("http://0x7f000001/", "a loopback address (127.0.0.1)"),
        ("http://0x7f.1/", "a loopback address (127.0.0.1)"),
        ("http://100.64.0.1/", "a shared (carrier-grade NAT) address (100.64.0.1)"),
        ("http://224.0.0.1/", "a multicast address (224.0.0.1)"),
        ("http://255.255.255.255/", "a reserved address (255.255.255.255)"),
        ("http://metadata.google.internal/computeMetadata/v1/", "an internal host name (metadata.google.internal)"),
        ("file:///etc/passwd", "must start with http:// or https:// (scheme: `file:`)"),
        ("ftp://x/", "must start with http:// or https:// (scheme: `ftp:`)"),
        ("gopher://x", "must start with http:// or https:// (scheme: `gopher:`)"),
        ("javascript:alert(1)", "must start with http:// or https:// (scheme: `javascript:`)"),
        ("example.com/photo.jpg", "must start with http:// or https://"),
        ("http://user:pass@example.com/", "must not contain a user name or password"),
        ("http:///photo.jpg", "has no host name"),
        ("http://exa mple.com/", "contains spaces or control characters"),
        ("", "is empty"),
        ("http://example.com/" + "a" * 3000, "is longer than 2048 characters"),
    ],
)
def test_check_url_refuses_with_the_field_and_the_reason(url: str, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_url(url, field="photo_url")
    assert caught.value.field == "photo_url"
    assert why in caught.value.message
    assert str(caught.value).startswith("`photo_url` ")


def test_any_private_address_among_the_answers_refuses_the_name(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["photos.example.com"] = [PUBLIC_IP, "10.0.0.5"]
    with pytest.raises(ValidationError, match=r"points to a private network address \(10\.0\.0\.5\)"):
        check_url("https://photos.example.com/me.jpg", field="photo_url")


def test_a_name_that_does_not_resolve_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match="could not be resolved"):
        check_url("http://no-such-host.invalid/x.jpg", field="photo_url")


def test_messages_hide_query_strings_and_user_info() -> None:
    with pytest.raises(ValidationError) as caught:
        check_url("http://10.0.0.1/hook?token=secret", field="callback_url")
    assert "secret" not in str(caught.value) and "secret" not in repr(caught.value.value)
    assert "http://10.0.0.1/hook?..." in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        check_url("http://user:hunter2@example.com/", field="callback_url")
    assert "hunter2" not in str(caught.value)
    assert redact_url("https://u:p@host:8443/path?token=secret#frag") == "https://host:8443/path?..."


# -- check_url: what passes -----------------------------------------------------------------------------------


def test_a_public_address_passes_and_the_url_is_normalised(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["photos.example.com"] = [PUBLIC_IP, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    url = check_url("HTTPS://Photos.Example.COM/me.jpg?size=large#top", field="photo_url")
    assert url == "https://photos.example.com/me.jpg?size=large"


@pytest.mark.parametrize("allowed", ["localhost", "LOCALHOST", "localhost:9999", "localhost."])
def test_allowed_hosts_skip_the_address_check(allowed: str) -> None:
    assert (
        check_url("http://LocalHost:8080/x", field="photo_url", allowed_hosts=(allowed,)) == "http://localhost:8080/x"
    )


def test_allowing_one_host_allows_no_other() -> None:
    with pytest.raises(ValidationError, match="loopback"):
        check_url("http://127.0.0.1/x", field="photo_url", allowed_hosts=("localhost", "127.0.0.2"))


def test_an_allowed_ipv6_host_may_be_written_with_brackets() -> None:
    assert check_url("http://[::1]:8080/x", field="photo_url", allowed_hosts=("[::1]:8080",)) == "http://[::1]:8080/x"


# -- fetch_url ------------------------------------------------------------------------------------------------


def test_fetch_returns_the_file_name_and_the_bytes(base: str) -> None:
    name, body = fetch_url(f"{base}/photo.jpg", field="photo_url", max_bytes=LIMIT, allowed_hosts=LOOPBACK)
    assert (name, body) == ("photo.jpg", PHOTO)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/files/", "download"),
        ("/files/..%2F..%2Fetc%2Fevil%20name.jpg?x=1", "evil_name.jpg"),
        ("/files/...", "download"),
    ],
)
def test_file_names_are_safe(base: str, path: str, name: str) -> None:
    assert fetch_url(base + path, field="photo_url", max_bytes=LIMIT, allowed_hosts=LOOPBACK)[0] == name


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/big", f"is larger than the limit of {LIMIT:,} bytes (the server announced {LIMIT * 4:,})"),
        ("/big-chunked", f"is larger than the limit of {LIMIT:,} bytes"),
        ("/big-unsized", f"is larger than the limit of {LIMIT:,} bytes"),
    ],
)
def test_a_body_over_the_limit_is_refused(base: str, path: str, why: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_url(base + path, field="photo_url", max_bytes=LIMIT, allowed_hosts=LOOPBACK)
    assert caught.value.field == "photo_url" and why in caught.value.message


def test_a_slow_server_times_out(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"could not be downloaded: timed out after 0\.5 s"):
        fetch_url(f"{base}/slow", field="photo_url", max_bytes=LIMIT, timeout=0.5, allowed_hosts=LOOPBACK)
    assert time.monotonic() - started < 3


def test_an_error_status_is_named_without_the_query(base: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_url(f"{base}/status/500?token=secret", field="photo_url", max_bytes=LIMIT, allowed_hosts=LOOPBACK)
    assert "the server answered HTTP 500 Internal Server Error" in caught.value.message
    assert "secret" not in str(caught.value)


def test_redirects_are_followed_to_an_allowed_host(base: str) -> None:
    url = f"{base}/redirect-to-loopback"
    assert fetch_url(url, field="photo_url", max_bytes=LIMIT, allowed_hosts=LOOPBACK) == ("photo.jpg", PHOTO)


def test_a_redirect_to_a_host_that_is_not_allowed_is_refused(server: _Server) -> None:
    if {info[4][0] for info in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)} != {"127.0.0.1"}:
        pytest.skip("`localhost` does not resolve to 127.0.0.1 alone here")
    port = server.server_address[1]
    start = f"http://localhost:{port}/redirect-to-loopback"
    assert fetch_url(
        f"http://localhost:{port}/photo.jpg", field="photo_url", max_bytes=LIMIT, allowed_hosts=("localhost",)
    )
    with pytest.raises(ValidationError) as caught:
        fetch_url(start, field="photo_url", max_bytes=LIMIT, allowed_hosts=("localhost",))
    hop = f"http://127.0.0.1:{port}/photo.jpg"
    assert f"was redirected to {hop}, which points to a loopback address" in str(caught.value)


def test_a_redirect_into_the_private_network_is_refused(base: str) -> None:
    with pytest.raises(ValidationError, match=r"redirected to http://10\.0\.0\.1/x, which points to a private network"):
        fetch_url(f"{base}/redirect-external", field="photo_url", max_bytes=LIMIT, allowed_hosts=LOOPBACK)


def test_redirects_are_limited(base: str) -> None:
    with pytest.raises(FetchError, match="redirected more than 2 times"):
        fetch_url(f"{base}/loop", field="photo_url", max_bytes=LIMIT, allowed_hosts=LOOPBACK, max_redirects=2)


def test_the_checked_address_is_the_one_connected_to(server: _Server, fake_dns: dict[str, list[str]]) -> None:
    # Resolves once to the test server, then (were it asked again) somewhere else: a DNS-rebinding attacker.
    fake_dns["photos.test"] = ["127.0.0.1"]
    port = server.server_address[1]
    server.recorded.hosts.clear()
    _, body = fetch_url(
        f"http://photos.test:{port}/photo.jpg", field="photo_url", max_bytes=LIMIT, allowed_hosts=("photos.test",)
    )
    assert body == PHOTO
    assert fake_dns["_calls"] == ["photos.test"]  # httpx never resolved the name again
    assert server.recorded.hosts == [f"photos.test:{port}"]  # the original name travels in the Host header


@pytest.fixture
def tls_server(server: _Server, tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext, list[str | None]]]:
    """An https twin of `server` whose certificate names only `photos.test`; yields its port, a client
    context trusting that certificate, and the SNI names it was sent."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1"),
            *("-subj", "/CN=photos.test", "-addext", "subjectAltName=DNS:photos.test"),
        ],
        check=True,
        capture_output=True,
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_context.sni_callback = lambda _socket, name, _context: sni.append(name)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.recorded, httpd.release = server.recorded, server.release
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield httpd.server_address[1], ssl.create_default_context(cafile=cert), sni
    httpd.shutdown()
    httpd.server_close()


def test_https_is_pinned_with_the_name_as_sni_and_certificate_name(
    tls_server: tuple[int, ssl.SSLContext, list[str | None]],
    fake_dns: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, trust, sni = tls_server
    client = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kwargs: client(verify=trust, **kwargs))  # trust the test CA
    fake_dns["photos.test"] = ["127.0.0.1"]
    fake_dns["other.test"] = ["127.0.0.1"]
    url = f"https://photos.test:{port}/photo.jpg"
    assert fetch_url(url, field="photo_url", max_bytes=LIMIT, allowed_hosts=("photos.test",)) == ("photo.jpg", PHOTO)
    assert sni == ["photos.test"]
    # Same address, another name: the certificate is checked against the name, not the pinned IP.
    with pytest.raises(FetchError, match=r"certificate is not valid for 'other\.test'"):
        fetch_url(
            f"https://other.test:{port}/photo.jpg", field="photo_url", max_bytes=LIMIT, allowed_hosts=("other.test",)
        )


def test_refused_urls_never_connect(server: _Server) -> None:
    server.recorded.hosts.clear()
    port = server.server_address[1]
    with pytest.raises(ValidationError):
        fetch_url(f"http://127.0.0.1:{port}/photo.jpg", field="photo_url", max_bytes=LIMIT)
    assert server.recorded.hosts == []


# -- post_json ------------------------------------------------------------------------------------------------


def test_post_json_delivers_the_payload(server: _Server, base: str) -> None:
    payload = {"tune_id": 7, "status": "trained", "name": "Zoë"}
    assert post_json(f"{base}/callback", payload, allowed_hosts=LOOPBACK) == 200
    [(path, headers, body)] = server.recorded.posts
    assert path == "/callback" and json.loads(body) == payload
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("TuneStudio/")


def test_post_json_returns_an_error_status(base: str) -> None:
    assert post_json(f"{base}/status/500", {"x": 1}, allowed_hosts=LOOPBACK) == 500


def test_a_redirect_on_a_callback_is_a_failure(server: _Server, base: str) -> None:
    with pytest.raises(FetchError, match="callbacks do not follow redirects"):
        post_json(f"{base}/redirect-to-loopback", {"x": 1}, allowed_hosts=LOOPBACK)
    assert [path for path, _, _ in server.recorded.posts] == ["/redirect-to-loopback"]


def test_a_callback_to_the_private_network_is_refused() -> None:
    with pytest.raises(ValidationError, match="private network") as caught:
        post_json("http://10.0.0.1/hook", {"x": 1})
    assert caught.value.field == "callback_url"


def test_a_connection_failure_is_a_fetch_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="could not be delivered: the server could not be reached"):
        post_json(f"http://127.0.0.1:{port}/hook", {"x": 1}, allowed_hosts=LOOPBACK)


def test_a_payload_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValidationError, match="cannot be sent as JSON"):
        post_json("http://10.0.0.1/hook", {"when": object()})


# -- backoff_delays -------------------------------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    assert backoff_delays() == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    delays = backoff_delays(2000, base=2.0, cap=600.0)
    assert delays[:9] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
    assert set(delays[9:]) == {600.0}
    assert backoff_delays(0) == []


def test_backoff_jitter_is_reproducible_and_bounded() -> None:
    plain = backoff_delays(10, cap=300.0)
    jittered = backoff_delays(10, cap=300.0, rng=random.Random(42))
    assert jittered == backoff_delays(10, cap=300.0, rng=random.Random(42))
    assert all(d / 2 <= j <= d for d, j in zip(plain, jittered, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"attempts": -1}, "attempts"), ({"base": 0}, "base"), ({"cap": 1.0}, "cap")]
)
def test_backoff_refuses_nonsense(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        backoff_delays(**kwargs)
    assert caught.value.field == name
