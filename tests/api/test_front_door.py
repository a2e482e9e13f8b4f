"""Front-door limits (memaudit issue 11) against a real `memaudit serve` process: what one
connection may cost before a route runs (request heads) and while it uploads (stalls).

A 96 MiB header once took 14 s and stalled /health for 12.8 s; a stalled upload was held
open forever. Timeouts are set small here; the defaults are in app.config.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import raw_multipart, real_images
from tests.serving import free_port, serve_process

HEADER_TIMEOUT_S = 2
BODY_IDLE_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """`python -m app.cli serve` with small timeouts; (host, port)."""
    tmp = tmp_path_factory.mktemp("front_door")
    port = free_port()
    proc = serve_process(
        tmp / "data",
        tmp / "db.sqlite",
        port,
        MEMAUDIT_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        MEMAUDIT_BODY_IDLE_TIMEOUT_S=str(BODY_IDLE_TIMEOUT_S),
    )
    yield "127.0.0.1", port
    proc.terminate()
    proc.wait(timeout=30)


class HealthWatch:
    """Polls /health from a thread while something else happens; every answer recorded."""

    def __init__(self, host: str, port: int) -> None:
        self._url = f"http://{host}:{port}/health"
        self._stop = threading.Event()
        self.statuses: list[int | str] = []
        self._thread = threading.Thread(target=self._poll)

    def _poll(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    self.statuses.append(client.get(self._url).status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(exc.__class__.__name__)
                time.sleep(0.05)

    def _wait_for_answers(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.statuses) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        self._wait_for_answers(1)  # answering before the attack
        return self

    def __exit__(self, *_exc) -> None:
        self._wait_for_answers(len(self.statuses) + 1)  # and after it
        self._stop.set()
        self._thread.join(10)


def _send_and_read_status(host: str, port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` (the server may close before it has all of it); the status line."""
    with socket.create_connection((host, port)) as conn:
        conn.settimeout(timeout)
        with contextlib.suppress(OSError):  # refused mid-send: the answer is already here
            conn.sendall(data)
        return _status_line(conn)


def _status_line(conn: socket.socket) -> bytes:
    received = b""
    while b"\r\n" not in received:
        chunk = conn.recv(4096)
        if not chunk:
            break
        received += chunk
    return received.split(b"\r\n")[0]


def _closed_by_server(conn: socket.socket) -> bool:
    """Whether the server closed the connection (after what it answered)."""
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_a_96_mib_header_is_refused_at_once_while_health_answers(server):
    host, port = server
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (96 << 20) + b"\r\n\r\n"
    with HealthWatch(host, port) as watch:
        started = time.monotonic()
        status = _send_and_read_status(host, port, head)
        took = time.monotonic() - started
    assert status.startswith(b"HTTP/1.1 431"), status
    assert took < 1, f"refused after {took:.1f} s"
    assert len(watch.statuses) >= 2 and set(watch.statuses) == {200}, watch.statuses


def test_ten_thousand_headers_are_refused(server):
    host, port = server
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    with HealthWatch(host, port) as watch:
        started = time.monotonic()
        status = _send_and_read_status(host, port, head)
        took = time.monotonic() - started
    assert status.startswith(b"HTTP/1.1 431"), status
    assert took < 1, f"refused after {took:.1f} s"
    assert len(watch.statuses) >= 2 and set(watch.statuses) == {200}, watch.statuses


def test_a_normal_request_with_many_ordinary_headers_is_served(server):
    host, port = server
    headers = {f"x-h{i}": "v" * 100 for i in range(50)}
    assert httpx.get(f"http://{host}:{port}/health", headers=headers).status_code == 200


def test_a_request_head_that_never_ends_is_cut_off(server):
    """A slowloris: the request line, then nothing."""
    host, port = server
    with socket.create_connection((host, port)) as conn:
        conn.settimeout(HEADER_TIMEOUT_S + 10)
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        status = _status_line(conn)
        took = time.monotonic() - started
        assert status.startswith(b"HTTP/1.1 408"), status
        assert _closed_by_server(conn)
    assert HEADER_TIMEOUT_S - 0.5 <= took < HEADER_TIMEOUT_S + 5


def _upload_head(host: str, extra_body_bytes: int) -> tuple[bytes, bytes]:
    """The head and first half of a /real-sets upload that promises more than it sends."""
    body, end, headers = raw_multipart(
        [("name", None, b"stalled")] + [("files", n, d) for n, d in real_images(4).items()]
    )
    head = (
        f"POST /real-sets HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: {headers['content-type']}\r\n"
        f"Content-Length: {len(body) + len(end) + extra_body_bytes}\r\n\r\n"
    ).encode()
    return head, body[: len(body) // 2]


def test_a_stalled_upload_is_cut_off_after_the_idle_timeout(server):
    host, port = server
    head, first_half = _upload_head(host, 0)
    with HealthWatch(host, port) as watch, socket.create_connection((host, port)) as conn:
        conn.settimeout(BODY_IDLE_TIMEOUT_S + 10)
        conn.sendall(head + first_half)
        started = time.monotonic()
        status = _status_line(conn)
        took = time.monotonic() - started
        assert status.startswith(b"HTTP/1.1 408"), status
        assert _closed_by_server(conn)
    assert BODY_IDLE_TIMEOUT_S - 0.5 <= took < BODY_IDLE_TIMEOUT_S + 5
    assert len(watch.statuses) >= 2 and set(watch.statuses) == {200}, watch.statuses
    # Nothing of the cut-off upload was stored.
    sets = httpx.get(f"http://{host}:{port}/real-sets").json()
    assert all(s["name"] != "stalled" for s in sets)


def test_a_trickling_upload_is_cut_off(server):
    """A byte every 0.3 s never stalls for the idle timeout, but its rate is far below the
    minimum (1024 bytes/s by default) once it has been waited for that long."""
    host, port = server
    head, first_half = _upload_head(host, 0)
    with socket.create_connection((host, port)) as conn:
        conn.sendall(head)
        conn.settimeout(0.3)
        answer = b""
        deadline = time.monotonic() + BODY_IDLE_TIMEOUT_S + 10
        for byte in first_half:
            if time.monotonic() > deadline:
                break
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                break
            try:
                answer = conn.recv(4096)
            except TimeoutError:
                continue
            break
        conn.settimeout(10)
        while chunk := conn.recv(4096):  # the rest of the answer, until the server closes
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"bytes/s" in answer


def test_a_fast_start_does_not_buy_a_slow_trickle(server):
    """The rate is judged over the last idle-timeout window, not since the request began: a
    client that sends 256 KiB at once (250 s of credit at 1 KiB/s since the start) and then a
    byte every 0.3 s is cut off about a window later."""
    host, port = server
    padding = b"x" * (256 * 1024)
    body, end, headers = raw_multipart([("name", None, b"burst"), ("files", "a.png", padding)])
    head = (
        f"POST /real-sets HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: {headers['content-type']}\r\n"
        f"Content-Length: {len(body) + len(end) + 1000}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port)) as conn:
        conn.sendall(head + body[:-100])
        started = time.monotonic()
        conn.settimeout(0.3)
        answer = b""
        while time.monotonic() - started < BODY_IDLE_TIMEOUT_S + 20:
            try:
                conn.sendall(b"y")
                answer = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            break
        took = time.monotonic() - started
        conn.settimeout(10)
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"over the last" in answer
    assert took < BODY_IDLE_TIMEOUT_S + 10


def test_an_upload_that_is_not_slow_is_stored(server):
    host, port = server
    r = httpx.post(
        f"http://{host}:{port}/real-sets",
        data={"name": "steady"},
        files=[("files", (n, d, "image/png")) for n, d in real_images(3).items()],
        timeout=60,
    )
    assert r.status_code == 201, r.text
