"""A real `memaudit serve` process for the tests that need one (front-door limits, memory
bounds, kill -9): SQLite under a folder, settings from the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO_ROOT


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
