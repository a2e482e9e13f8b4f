"""Real servers for the tests that need real HTTP: a uvicorn server in a thread for an app's
settings, or a `memaudit serve` process (front-door limits, memory bounds, kill -9)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from tests.helpers import REPO_ROOT


@contextmanager
def served_in_thread(settings: Settings) -> Iterator[tuple[str, int]]:
    """A real uvicorn server for a fresh app of ``settings`` on a free loopback port, in a
    thread; yields (host, port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(settings), log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def serve_process(data_dir: Path, db: Path, port: int, **env: str) -> subprocess.Popen:
    """`python -m app.cli serve` on ``port`` (its database ``db``, data under ``data_dir``,
    ``env``: further MEMAUDIT_* settings), once /health answers; fails the test otherwise."""
    environment = {
        **os.environ,
        "MEMAUDIT_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{db}",
        "MEMAUDIT_HASH_WORKERS": "0",
        **env,
    }
    environment.pop("MEMAUDIT_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while not healthy(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not start")
        time.sleep(0.3)
    return proc
