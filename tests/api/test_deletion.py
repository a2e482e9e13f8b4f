"""Deletion that deletes: image bytes stay in the store only while a set or batch refers to them.

After DELETE of a set or batch no file of its images remains unless another set or batch
holds the same bytes; /classify's uploads are gone when its request ends; a failed or
cut-off request leaves no file; a kill -9 mid-upload is cleaned up by the sweep at the next
start; `memaudit gc` lists and removes unreferenced and partial files.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from app.cli import main as cli_main
from app.config import Settings
from app.storage import FeatureStore, ImageStore
from tests.helpers import file_parts, raw_multipart, real_images, register
from tests.imagegen import phantom, png
from tests.serving import free_port, serve_process, served_in_thread


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(settings: Settings) -> set[str]:
    """Every file of the image store (outside the feature cache), by relative path: a
    complete image as its digest, anything else (a partial write) as its path."""
    root = settings.effective_image_store_dir
    found = set()
    for path in root.glob("*/*"):
        if path.parent.name == "features" or not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        found.add(relative.replace("/", "") if not path.name.startswith(".") else relative)
    return found


def digests_of(files: dict[str, bytes]) -> set[str]:
    return {digest(data) for data in files.values()}


def test_deleting_a_set_removes_its_bytes_but_not_those_another_set_holds(client, settings):
    own = real_images(4)
    other = real_images(3, offset=100)
    shared_name, shared_bytes = next(iter(own.items()))
    first = register(client, own, name="first")
    second = register(client, {**other, f"copy_{shared_name}": shared_bytes}, name="second")
    assert stored(settings) == digests_of(own) | digests_of(other)

    assert client.delete(f"/real-sets/{first['id']}").status_code == 204
    assert stored(settings) == digests_of(other) | {digest(shared_bytes)}
    assert client.get(f"/real-sets/{first['id']}").status_code == 404
    assert client.delete(f"/real-sets/{first['id']}").status_code == 404

    assert client.delete(f"/real-sets/{second['id']}").status_code == 204
    assert stored(settings) == set()


def _match(client, real_set_id: int, files: dict[str, bytes]) -> dict:
    response = client.post(
        "/match", data={"real_set_id": str(real_set_id)}, files=file_parts(files)
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_deleting_a_batch_removes_its_bytes_but_not_shared_ones(client, settings):
    real = real_images(5)
    real_set = register(client, real)
    only_first = {f"g{i}.png": png(phantom(300 + i, 128)) for i in range(3)}
    in_both = {"both.png": png(phantom(400, 128))}
    copy_of_real = {"copy.png": real["real_0000.png"]}
    first = _match(client, real_set["id"], {**only_first, **in_both, **copy_of_real})
    second = _match(client, real_set["id"], in_both)
    scored = client.post(
        "/classify",
        data={
            "method": "phash",
            "real_set_id": str(real_set["id"]),
            "batch_id": str(first["batch_id"]),
        },
    )
    assert scored.status_code == 200, scored.text
    assert stored(settings) == digests_of(real) | digests_of(only_first) | digests_of(in_both)

    assert client.delete(f"/match/{first['batch_id']}").status_code == 204
    assert stored(settings) == digests_of(real) | digests_of(in_both)
    assert client.get(f"/match/{first['batch_id']}").status_code == 404
    assert client.delete(f"/match/{first['batch_id']}").status_code == 404
    # The classification made against it stays readable, without its batch.
    kept = client.get(f"/classify/{scored.json()['classification_id']}").json()
    assert kept["batch_id"] is None and len(kept["results"]) == 5

    assert client.delete(f"/match/{second['batch_id']}").status_code == 204
    assert client.delete(f"/real-sets/{real_set['id']}").status_code == 204
    assert stored(settings) == set()


def test_classify_uploads_are_gone_when_the_request_ends(client, settings):
    real_set_files = real_images(3)
    register(client, real_set_files)
    uploaded_real = {
        **real_images(4, offset=200),
        "same_as_set.png": real_set_files["real_0001.png"],
    }
    uploaded_generated = {f"g{i}.png": png(phantom(250 + i, 128)) for i in range(6)}
    files = file_parts(uploaded_real) + [
        ("generated_files", (name, data, "image/png")) for name, data in uploaded_generated.items()
    ]
    response = client.post("/classify", data={"method": "reference"}, files=files)
    assert response.status_code == 200, response.text
    # Scored, then removed: only the bytes the set holds remain.
    assert stored(settings) == digests_of(real_set_files)
    # Features computed while scoring follow the same rule: only the set's bytes keep theirs.
    features = settings.effective_feature_store_dir.rglob("*.npz")
    assert {p.parent.name + p.stem for p in features} <= digests_of(real_set_files)

    classification_id = response.json()["classification_id"]
    assert client.delete(f"/classify/{classification_id}").status_code == 204
    assert client.get(f"/classify/{classification_id}").status_code == 404
    assert client.delete(f"/classify/{classification_id}").status_code == 404
    assert stored(settings) == digests_of(real_set_files)


def test_failed_requests_leave_no_bytes(client, settings):
    """Requests refused after their images were hashed and stored take them away again."""
    kept = real_images(3)
    real_set = register(client, kept)
    before = stored(settings)
    fresh = real_images(4, offset=500)

    both = client.post(
        "/real-sets",
        data={"name": "both"},
        files=[*file_parts(fresh), ("hashes", ("h.csv", b"a.png,00ff\n", "text/csv"))],
    )
    assert both.status_code == 422, both.text
    assert stored(settings) == before

    all_bad = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"])},
        files=[("files", (f"bad{i}.png", b"not an image", "image/png")) for i in range(3)],
    )
    assert all_bad.status_code == 422, all_bad.text
    assert stored(settings) == before

    too_high = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"]), "threshold": "1000"},
        files=file_parts(fresh),
    )
    assert too_high.status_code == 422, too_high.text
    assert stored(settings) == before

    # A window that is not the set's, sent after the files: refused once they are hashed.
    body, end, headers = raw_multipart(
        [("files", name, data) for name, data in fresh.items()]
        + [("window_center", None, b"40"), ("window_width", None, b"400")]
    )
    append = client.post(f"/real-sets/{real_set['id']}/images", content=body + end, headers=headers)
    assert append.status_code == 422, append.text
    assert stored(settings) == before
    assert client.get(f"/real-sets/{real_set['id']}").json()["image_count"] == 3


@pytest.fixture
def live_settings(database_url, tmp_path) -> Settings:
    """Each file is hashed and stored as it arrives (batch size 1), in-process."""
    return Settings(
        data_dir=tmp_path / "live",
        database_url=database_url,
        hash_workers=0,
        hash_batch_size=1,
    )


@pytest.fixture
def live_server(live_settings) -> Iterator[tuple[str, int]]:
    """A real uvicorn server in a thread; yields (host, port)."""
    with served_in_thread(live_settings) as address:
        yield address


def _start_upload(host: str, port: int, path: str, body: bytes, extra: int) -> socket.socket:
    """Send a request's headers and ``body``, announcing ``extra`` bytes more to come."""
    conn = socket.create_connection((host, port))
    conn.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: multipart/form-data; boundary=memaudit\r\n"
            f"Content-Length: {len(body) + extra}\r\n\r\n"
        ).encode()
        + body
    )
    return conn


def _parts(name: bytes, files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """A new set's fields, ``files``, and one more file whose part the rest (returned second)
    completes: every file of ``files`` is whole (hashed and stored) once the first is sent."""
    body, end, _headers = raw_multipart(
        [
            ("name", None, name),
            ("hash_size", None, b"16"),
            *(("files", n, d) for n, d in files.items()),
            ("files", "last.png", png(phantom(4242, 64))),
        ]
    )
    split = body.index(b"\r\n\r\n", body.rindex(b"--memaudit")) + 8  # into the last one
    return body[:split], body[split:] + end


def _read_answer(conn: socket.socket) -> str:
    """One whole HTTP answer (headers and its Content-Length of body)."""
    conn.settimeout(30)
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    return (head + b"\r\n\r\n" + body).decode()


def _wait_for(condition, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_request_cut_off_mid_upload_leaves_no_bytes(live_server, live_settings):
    host, port = live_server
    files = real_images(4, offset=700)
    body, _rest = _parts(b"cut", files)
    with _start_upload(host, port, "/real-sets", body, 100_000):
        assert _wait_for(lambda: stored(live_settings) == digests_of(files))
    # The client hung up: what the request stored goes with it.
    assert _wait_for(lambda: stored(live_settings) == set()), stored(live_settings)
    assert httpx.get(f"http://{host}:{port}/real-sets").json() == []


def test_an_upload_whose_bytes_another_process_removed_is_refused(live_server, live_settings):
    """`memaudit gc` (another process: it knows nothing of this server's uploads) removes a
    file an upload has stored but not yet committed: the upload answers 409 and stores no
    row that names a missing file."""
    host, port = live_server
    files = real_images(3, offset=800)
    body, rest = _parts(b"raced", files)
    with _start_upload(host, port, "/real-sets", body, len(rest)) as conn:
        assert _wait_for(lambda: stored(live_settings) == digests_of(files))
        data_dir = str(live_settings.data_dir)
        url = live_settings.effective_database_url
        assert cli_main(["gc", "--min-age", "0", "--db", url, "--data-dir", data_dir]) == 0
        assert stored(live_settings) == set()
        conn.sendall(rest)
        answer = _read_answer(conn)
    assert answer.startswith("HTTP/1.1 409"), answer
    assert "send the request again" in answer
    assert httpx.get(f"http://{host}:{port}/real-sets").json() == []


def test_kill_9_mid_upload_then_restart_leaves_no_unreferenced_file(tmp_path):
    port = free_port()
    data_dir, db = tmp_path / "data", tmp_path / "db.sqlite"
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{db}")
    kept = real_images(3)
    cut = real_images(5, offset=900)
    proc = serve_process(data_dir, db, port, MEMAUDIT_HASH_BATCH_SIZE="1")
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/real-sets", data={"name": "kept"}, files=file_parts(kept)
        )
        assert response.status_code == 201, response.text
        body, _rest = _parts(b"cut", cut)
        with _start_upload("127.0.0.1", port, "/real-sets", body, 100_000):
            assert _wait_for(lambda: stored(settings) == digests_of(kept) | digests_of(cut))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    # What a write cut short by the kill leaves: a partial file.
    partial = settings.effective_image_store_dir / "ab" / ".tmp-cut"
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"half an image")
    assert stored(settings) == digests_of(kept) | digests_of(cut) | {"ab/.tmp-cut"}

    proc = serve_process(
        data_dir, db, port, MEMAUDIT_HASH_BATCH_SIZE="1", MEMAUDIT_GC_MIN_AGE_SECONDS="0"
    )
    try:
        assert _wait_for(lambda: stored(settings) == digests_of(kept)), stored(settings)
        sets = httpx.get(f"http://127.0.0.1:{port}/real-sets").json()
        assert [s["name"] for s in sets] == ["kept"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_gc_dry_run_lists_and_gc_removes(client, settings, capsys):
    kept = real_images(3)
    register(client, kept)
    store = ImageStore(settings.effective_image_store_dir)
    features = FeatureStore(settings.effective_feature_store_dir)
    orphan = png(phantom(999, 64))
    store.put(digest(orphan), orphan)
    features.save("sift-v1", digest(orphan), {"points": np.zeros(3)})
    partial = store.root / "cd" / ".tmp-left"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"partial")
    argv = ["--db", settings.effective_database_url, "--data-dir", str(settings.data_dir)]
    everything = digests_of(kept) | {digest(orphan), "cd/.tmp-left"}

    # Young files are left alone (they may belong to an upload in flight elsewhere).
    assert cli_main(["gc", *argv]) == 0
    assert "removed 0 image file(s), 0 feature file(s), 0 partial" in capsys.readouterr().out
    assert stored(settings) == everything

    assert cli_main(["gc", "--dry-run", "--min-age", "0", *argv]) == 0
    listed = capsys.readouterr().out
    assert f"would remove {store.path(digest(orphan))}" in listed
    assert f"would remove {partial}" in listed
    assert "would remove 1 image file(s), 1 feature file(s), 1 partial write(s)" in listed
    assert not any(f"would remove {store.path(digest(k))}" in listed for k in kept.values())
    assert stored(settings) == everything

    assert cli_main(["gc", "--min-age", "0", *argv]) == 0
    assert "removed 1 image file(s), 1 feature file(s), 1 partial" in capsys.readouterr().out
    assert stored(settings) == digests_of(kept)
    assert not list(features.root.rglob("*.npz"))
