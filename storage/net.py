"""Outbound HTTP to URLs that users control (photo URLs, callback URLs), safe against SSRF.

Every request goes through the same gate: the URL is parsed once (by httpx, the same parser that sends it),
its host is resolved, and every resolved address must be public. The request then connects to exactly one
of the addresses that were checked — the URL handed to httpx carries the IP, the original name travels in
the `Host` header and, for https, as the TLS SNI name, against which the certificate is verified. httpx
therefore never resolves the name itself, so a DNS answer that changes between check and connect
(DNS rebinding) cannot redirect the request. Redirects are followed by hand, each hop through the gate.

Residual risks, accepted: a proxy is never used (`trust_env=False`; an egress proxy would resolve names
itself and defeat the pinning); the system resolver's own time is not bounded by `timeout`. Past the
deadline the connection is shut down, however slowly the server trickles its answer.

Nothing here logs; error messages show URLs through `redact_url` (no user info, no query string).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from random import Random
from urllib.parse import urlsplit, urlunsplit

import httpx

from pipelines.errors import FetchError, ValidationError

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = ("http", "https")
# Names that reach the host or the cloud around it whatever their DNS answer says.
_INTERNAL_NAMES = frozenset(
    {"localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "kubernetes.default"}
)
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".svc")
# AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba: instance credentials live behind these.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_HOW_TO_FIX = "; only public addresses can be reached (an administrator can allow a host in TUNES_ALLOWED_FETCH_HOSTS)"


@dataclass(frozen=True)
class _Target:
    """A URL that passed the checks and the addresses it was checked against, in resolver order."""

    url: httpx.URL
    addresses: tuple[str, ...]


def check_url(url: str, *, field: str, allowed_hosts: Sequence[str] = ()) -> str:
    """Refuse a URL that is malformed or points inside the network, without fetching it.

    Args:
        url: what the user gave.
        field: the request field the URL came from; named in errors.
        allowed_hosts: host names (case-insensitive, any `:port` ignored) that may be reached although their
            addresses are private, e.g. `Settings.allowed_fetch_hosts`.

    Returns:
        The normalised URL: lower-case scheme and host, IDNA host, no fragment.

    Raises:
        ValidationError: not http(s), no host, user info in the URL, longer than `MAX_URL_LENGTH`, an internal
            host name, or any resolved address not public; the message says which and shows the address.
        FetchError: the host name could not be resolved.
    """
    return str(_check(url, field=field, allowed_hosts=allowed_hosts).url)


def fetch_url(
    url: str,
    *,
    field: str,
    max_bytes: int,
    timeout: float = 15.0,
    allowed_hosts: Sequence[str] = (),
    max_redirects: int = 5,
) -> tuple[str, bytes]:
    """Download a user-given URL with a GET, checking every redirect hop and capping size and time.

    Args:
        url: what the user gave.
        field: the request field the URL came from; named in errors.
        max_bytes: largest body accepted (e.g. `Settings.max_photo_bytes`).
        timeout: seconds for the whole download, redirects included.
        allowed_hosts: see `check_url`; applies to every hop.
        max_redirects: redirects followed before giving up.

    Returns:
        `(file_name, body)`: a safe file name from the last URL's path (or `"download"`) and the body.

    Raises:
        ValidationError: the URL or a redirect target is refused (see `check_url`).
        FetchError: the download failed: timeout, connection error, non-2xx status, too many redirects, or a
            body larger than `max_bytes`.
    """
    deadline = time.monotonic() + timeout
    target = _check(url, field=field, allowed_hosts=allowed_hosts)
    for _ in range(max_redirects + 1):
        with _open(target, "GET", field=field, verb="downloaded", timeout=timeout, deadline=deadline) as response:
            if response.is_redirect:
                target = _next_hop(target, response, field=field, allowed_hosts=allowed_hosts)
                continue
            if not response.is_success:
                raise FetchError(field, redact_url(str(target.url)), f"could not be downloaded: {_status(response)}")
            body = _read_capped(response, target, field=field, max_bytes=max_bytes, timeout=timeout, deadline=deadline)
            return _file_name(target.url), body
    raise FetchError(field, redact_url(url), f"could not be downloaded: redirected more than {max_redirects} times")


def post_json(
    url: str,
    payload: object,
    *,
    timeout: float = 10.0,
    allowed_hosts: Sequence[str] = (),
    field: str = "callback_url",
) -> int:
    """POST `payload` as JSON once, to a checked and pinned address; redirects are not followed.

    Retries belong to the caller (see `backoff_delays`); the response body is not read.

    Args:
        url: the callback URL the user registered.
        payload: anything `json.dumps` accepts.
        timeout: seconds for the whole request.
        allowed_hosts: see `check_url`.
        field: the request field the URL came from; named in errors.

    Returns:
        The HTTP status of the response (any status but 3xx; the caller decides what counts as delivered).

    Raises:
        ValidationError: the URL is refused (see `check_url`), or `payload` cannot be encoded as JSON.
        FetchError: timeout, connection error, or a 3xx answer (a callback must name its final URL).
    """
    try:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValidationError("payload", type(payload).__name__, f"cannot be sent as JSON ({e})") from e
    target = _check(url, field=field, allowed_hosts=allowed_hosts)
    deadline = time.monotonic() + timeout
    headers = {"Content-Type": "application/json"}
    with _open(
        target, "POST", field=field, verb="delivered", timeout=timeout, deadline=deadline, content=body, headers=headers
    ) as response:
        if 300 <= response.status_code < 400:
            raise FetchError(
                field,
                redact_url(url),
                f"could not be delivered: {_status(response)}, a redirect; callbacks do not follow redirects, "
                "register the final URL",
            )
        return response.status_code


def backoff_delays(
    attempts: int = 6, *, base: float = 2.0, cap: float = 600.0, rng: Random | None = None
) -> list[float]:
    """Seconds to wait before each retry: `base`, doubling, never above `cap`.

    Args:
        attempts: how many delays.
        base: the first delay.
        cap: the largest delay.
        rng: if given, each delay `d` becomes a random value in `[d/2, d]` ("equal jitter"), so that many
            failing callbacks do not retry in lockstep; pass a seeded `random.Random` for reproducible values.

    Returns:
        `attempts` delays, non-decreasing without `rng`, e.g. `[2.0, 4.0, 8.0, 16.0, 32.0, 64.0]`.

    Raises:
        ValidationError: `attempts` is negative, `base` is not positive, or `cap` is below `base`.
    """
    if attempts < 0:
        raise ValidationError("attempts", attempts, "must be >= 0")
    if base <= 0:
        raise ValidationError("base", base, "must be > 0")
    if cap < base:
        raise ValidationError("cap", cap, f"must be >= base ({base})")
    delays: list[float] = []
    delay = float(base)
    for _ in range(attempts):
        delays.append(delay if rng is None else delay / 2 + rng.uniform(0, delay / 2))
        delay = min(cap, delay * 2)  # doubling a capped value keeps it finite however many attempts
    return delays


def redact_url(url: str) -> str:
    """The URL without user info, query string or fragment (`https://host/path?...`), safe to show or log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        without_query = re.split(r"[?#]", url, maxsplit=1)[0]
        return re.sub(r"//[^/]*@", "//", without_query) + ("?..." if "?" in url else "")
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + ("?..." if parts.query else "")


# -- checking -------------------------------------------------------------------------------------------------


def _check(url: str, *, field: str, allowed_hosts: Sequence[str]) -> _Target:
    parsed = _parse(url, field=field)
    shown = redact_url(url)
    host = parsed.raw_host.decode("ascii").lower()
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    allowed = {_host_of(entry) for entry in allowed_hosts}
    is_allowed = bool(allowed & {host.rstrip("."), parsed.host.lower().rstrip(".")})
    if not is_allowed and _is_internal_name(host):
        raise ValidationError(field, shown, f"points to an internal host name ({host}){_HOW_TO_FIX}")
    addresses = _resolve(host, port, field=field, shown=shown)
    if not is_allowed:
        for address in addresses:
            if problem := _address_problem(ipaddress.ip_address(address)):
                raise ValidationError(field, shown, f"points to {problem}{_HOW_TO_FIX}")
    return _Target(parsed, addresses)


def _parse(url: object, *, field: str) -> httpx.URL:
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(field, url, "is empty; give an http:// or https:// URL")
    shown = redact_url(url)
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(field, shown, f"is longer than {MAX_URL_LENGTH} characters ({len(url)})")
    # httpx would quietly percent-encode these; other parsers split on them. Refusing keeps one reading.
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValidationError(field, shown, "contains spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise ValidationError(field, shown, f"is not a valid URL ({e})") from None
    if parsed.scheme not in _SCHEMES:
        scheme = f"`{parsed.scheme}:`" if parsed.scheme else "none"
        raise ValidationError(field, shown, f"must start with http:// or https:// (scheme: {scheme})")
    if parsed.userinfo:
        raise ValidationError(field, shown, "must not contain a user name or password")
    if not parsed.raw_host:
        raise ValidationError(field, shown, "has no host name")
    return parsed.copy_with(fragment=None)


def _host_of(entry: str) -> str:
    """`Host`, `host:port`, `[v6]:port` or bare `v6` -> the lower-case host."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    return entry.rstrip(".")


def _is_internal_name(host: str) -> bool:
    name = host.rstrip(".")
    return name in _INTERNAL_NAMES or name.endswith(_INTERNAL_SUFFIXES)


def _resolve(host: str, port: int, *, field: str, shown: str) -> tuple[str, ...]:
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        pass  # a name, or an IPv4 spelling only the C resolver reads (2130706433, 0x7f.1): let it normalise
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise FetchError(field, shown, f"has a host name that could not be resolved ({host})") from e
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchError(field, shown, f"has a host name that could not be resolved ({host})")
    return addresses


def _address_problem(address: IPAddress) -> str | None:
    """Why `address` must not be reached (e.g. "a loopback address (127.0.0.1)"), or None if it is public."""
    for inner in _embedded_ipv4(address):
        if problem := _category(inner):
            return f"{problem} ({address} embeds {inner})"
    if problem := _category(address):
        return f"{problem} ({address})"
    return None


def _category(address: IPAddress) -> str | None:
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _CGNAT, "a shared (carrier-grade NAT) address"),
        (any(address in network for network in _PRIVATE_NETWORKS), "a private network address"),
        (address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"), "a reserved address"),
        (not address.is_global, "a non-public address"),
    )
    return next((why for hit, why in checks if hit), None)


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64): they may route there."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    inner = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in inner if a is not None]


# -- sending --------------------------------------------------------------------------------------------------


@contextmanager
def _open(
    target: _Target,
    method: str,
    *,
    field: str,
    verb: str,
    timeout: float,
    deadline: float,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Iterator[httpx.Response]:
    """Send one request to a checked address of `target`; httpx errors become `FetchError`s.

    httpx's timeout bounds each socket read, so a server trickling its answer a byte at a time could hold the
    request for hours; a watchdog shuts the connection down at `deadline` instead.
    """
    shown = redact_url(str(target.url))
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError(field, shown, f"could not be {verb}: timed out after {timeout:g} s")
    watchdog = _Watchdog(remaining)
    try:
        # A client per hop: its pool is keyed by IP, so it must not reuse a TLS session made for another name.
        with httpx.Client(trust_env=False, follow_redirects=False, timeout=remaining) as client:
            response = _send_pinned(client, target, method, content=content, headers=headers or {}, trace=watchdog)
            try:
                yield response
            finally:
                response.close()
    except httpx.HTTPError as e:
        why = f"timed out after {timeout:g} s" if watchdog.expired.is_set() else _why_failed(e, timeout)
        raise FetchError(field, shown, f"could not be {verb}: {why}") from e
    finally:
        watchdog.cancel()


class _Watchdog:
    """An httpcore `trace` hook that notes the request's sockets and shuts them down after `seconds`."""

    def __init__(self, seconds: float):
        self.expired = threading.Event()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def __call__(self, event: str, info: Mapping[str, object]) -> None:
        stream = info.get("return_value") if event.endswith((".connect_tcp.complete", ".start_tls.complete")) else None
        if stream is not None:
            self._sockets.append(stream.get_extra_info("socket"))  # type: ignore[attr-defined]
            if self.expired.is_set():
                self._expire()

    def _expire(self) -> None:
        self.expired.set()
        for sock in self._sockets:
            with suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read at once, unlike close()

    def cancel(self) -> None:
        self._timer.cancel()


def _send_pinned(
    client: httpx.Client,
    target: _Target,
    method: str,
    *,
    content: bytes | None,
    headers: Mapping[str, str],
    trace: Callable[[str, Mapping[str, object]], None],
) -> httpx.Response:
    url = target.url
    request_headers = {
        "Host": url.netloc.decode("ascii"),
        "User-Agent": f"TuneStudio/{_version()}",
        "Accept-Encoding": "identity",  # the size cap counts bytes received, not what they would inflate to
        **headers,
    }
    extensions: dict[str, object] = {"trace": trace}
    if url.scheme == "https":
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
    error: httpx.ConnectError | None = None
    for address in target.addresses:
        request = client.build_request(
            method, url.copy_with(host=address), headers=request_headers, content=content, extensions=extensions
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as e:  # e.g. an IPv6 answer on an IPv4-only host: try the next checked address
            error = e
    assert error is not None  # `_resolve` never returns an empty tuple
    raise error


def _next_hop(target: _Target, response: httpx.Response, *, field: str, allowed_hosts: Sequence[str]) -> _Target:
    shown = redact_url(str(target.url))
    try:
        location = str(target.url.join(response.headers["location"]))
    except httpx.InvalidURL:
        raise FetchError(field, shown, "could not be downloaded: redirected to an invalid URL") from None
    try:
        return _check(location, field=field, allowed_hosts=allowed_hosts)
    except ValidationError as e:
        raise type(e)(field, shown, f"was redirected to {redact_url(location)}, which {e.message}") from e


def _read_capped(
    response: httpx.Response, target: _Target, *, field: str, max_bytes: int, timeout: float, deadline: float
) -> bytes:
    shown = redact_url(str(target.url))
    too_big = f"is larger than the limit of {max_bytes:,} bytes"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(field, shown, f"{too_big} (the server announced {int(declared):,})")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(field, shown, too_big)
        if time.monotonic() > deadline:
            raise FetchError(field, shown, f"could not be downloaded: timed out after {timeout:g} s")
    return bytes(body)


def _status(response: httpx.Response) -> str:
    return f"the server answered HTTP {response.status_code} {response.reason_phrase}".rstrip()


def _why_failed(error: httpx.HTTPError, timeout: float) -> str:
    if isinstance(error, httpx.TimeoutException):
        return f"timed out after {timeout:g} s"
    if isinstance(error, httpx.ConnectError):
        detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        return f"the server could not be reached ({detail})"
    if isinstance(error, httpx.RemoteProtocolError):
        return "the server sent an invalid HTTP response"
    return f"the connection failed ({type(error).__name__})"


def _file_name(url: httpx.URL) -> str:
    """The last path segment, reduced to `[A-Za-z0-9._-]` and 100 characters; `download` if nothing is left."""
    base = re.split(r"[/\\]", url.path)[-1]
    name = _UNSAFE_FILE_CHARS.sub("_", base).lstrip(".")
    if len(name) > 100:
        stem, dot, extension = name.rpartition(".")
        name = (stem[: 99 - len(extension)] + dot + extension) if dot and len(extension) <= 10 else name[:100]
    return name if name.strip("._-") else "download"


@cache
def _version() -> str:
    try:
        return metadata.version("tune-studio")
    except metadata.PackageNotFoundError:  # running from a checkout
        return "dev"
