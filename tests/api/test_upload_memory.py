"""Memory per request is bounded in bytes: hostile zips against a real server process.

A zip of highly compressible members (64 x 49 MB of zeros, 3 MB on the wire) once took the
API process to 3.5 GB, because files waited to be hashed 256 at a time whatever their size.
The peak resident set size of the server process (VmHWM) must stay under a bound.
"""

from __future__ import annotations

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import real_images, zip_bytes
from tests.serving import free_port, serve_process

#: Stated bound for the API process (it idles at ~250 MB with onnxruntime and scikit-learn).
PEAK_RSS_BOUND_MB = 600


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = serve_process(tmp_path / "data", tmp_path / "db.sqlite", port, MEMAUDIT_HASH_WORKERS="1")
    base = f"http://127.0.0.1:{port}"
    yield base, proc.pid
    proc.terminate()
    proc.wait(timeout=30)


def _zeros_zip(members: int, size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            zf.writestr(f"{i}.png", bytes(size))
    return buffer.getvalue()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_zip_of_zeros_is_refused_within_the_memory_bound(server):
    base, pid = server
    # 16 members: 784 MB once inflated, over the bound if they waited together (they did).
    body = _zeros_zip(16, 49_000_000)
    assert len(body) < 5_000_000
    with httpx.Client(timeout=300) as client:
        r = client.post(
            f"{base}/real-sets",
            data={"name": "bomb", "hash_size": "16"},
            files={"files": ("b.zip", body, "application/zip")},
        )
        assert r.status_code == 422, r.text
        assert len(r.json()["detail"]["rejected"]) == 16
        # The same server still registers a good set afterwards.
        good = client.post(
            f"{base}/real-sets",
            data={"name": "good"},
            files={"files": ("good.zip", zip_bytes(real_images(3)), "application/zip")},
        )
        assert good.status_code == 201, good.text
    peak = _peak_rss_mb(pid)
    assert peak < PEAK_RSS_BOUND_MB, f"API process peaked at {peak:.0f} MB"


@pytest.fixture
def budgeted_server(tmp_path):
    """A server whose process-wide upload budget (64 MiB) is smaller than two members."""
    port = free_port()
    proc = serve_process(
        tmp_path / "data",
        tmp_path / "db.sqlite",
        port,
        MEMAUDIT_HASH_WORKERS="1",
        MEMAUDIT_MAX_PROCESS_PENDING_BYTES=str(64 * 2**20),
    )
    yield f"http://127.0.0.1:{port}", proc.pid
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_concurrent_zips_share_the_process_budget_before_reading_a_member(budgeted_server):
    """Each upload is bounded on its own; N of them at once must not hold N large members:
    a member's declared size is counted in the process budget before it is read."""
    base, pid = budgeted_server
    body = _zeros_zip(8, 49_000_000)

    def post(i: int) -> int:
        with httpx.Client(timeout=600) as client:
            r = client.post(
                f"{base}/real-sets",
                data={"name": f"bomb{i}"},
                files={"files": ("b.zip", body, "application/zip")},
            )
            return r.status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(post, range(6)))
    assert statuses == [422] * 6
    peak = _peak_rss_mb(pid)
    assert peak < PEAK_RSS_BOUND_MB, f"API process peaked at {peak:.0f} MB"
