"""Hostile clients (memaudit issue 11): each section reproduces an attack found against main
and shows it no longer works, over real HTTP through the ASGI app (SQLite and PostgreSQL via
the ``client`` fixture) or a real uvicorn server where the transport itself matters."""

from __future__ import annotations

import csv
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.services.classification import classification_csv, classification_imageclef
from app.services.filenames import name_problem, spreadsheet_cell, uploaded_name
from app.services.reports import batch_csv, batch_text
from tests.helpers import REPO_ROOT, file_parts, raw_multipart, real_images, register, zip_bytes
from tests.imagegen import phantom, png
from tests.serving import served_in_thread

REPO = REPO_ROOT

# --- names: one policy for images and hash lists ------------------------------------------


def test_upload_names_with_control_characters_or_dotdot_are_refused_with_reasons(client):
    """Tab and ESC in a part's filename, newline in a zip member, '..' anywhere: each file
    is refused with its reason while the good ones are stored under the name they came with;
    a client's local path keeps its last component, a relative name is kept whole."""
    images = [png(phantom(i, 48)) for i in range(12)]
    members = {
        "evil\nreal_0001,1\nx.png": images[0],
        "cr\rname.png": images[1],
        "nel\x85name.png": images[2],
        "sep\u2028name.png": images[3],
        "zipped </b>.png": images[4],
    }
    body, end, headers = raw_multipart(
        [
            ("name", None, b"hostile names"),
            ("files", "tab\there.png", images[5]),
            ("files", "esc\x1b[31mred.png", images[6]),
            ("files", "..", images[7]),
            ("files", "up/../x.png", images[8]),
            ("files", "</script>.png", images[9]),
            ("files", "/home/me/scan.png", images[10]),
            ("files", "dir\\sub\\scan2.png", images[11]),
            ("files", "names.zip", zip_bytes(members)),
        ]
    )
    r = client.post("/real-sets", content=body + end, headers=headers)
    assert r.status_code == 201, r.text
    out = r.json()
    stored = sorted(i["filename"] for i in out["images"])
    assert stored == sorted(["</script>.png", "scan.png", "scan2.png", "zipped </b>.png"])
    reasons = {item["filename"]: item["reason"] for item in out["rejected"]}
    assert set(reasons) == {
        "tab\there.png",
        "esc\x1b[31mred.png",
        "..",
        "up/../x.png",
        "evil\nreal_0001,1\nx.png",
        "cr\rname.png",
        "nel\x85name.png",
        "sep\u2028name.png",
    }
    for name in ("tab\there.png", "esc\x1b[31mred.png", "evil\nreal_0001,1\nx.png"):
        assert "control character" in reasons[name]
    assert "U+0009" in reasons["tab\there.png"] and "U+000A" in reasons["evil\nreal_0001,1\nx.png"]
    assert "'..'" in reasons[".."] and "'..'" in reasons["up/../x.png"]
    # Shown as stored, in the set's page too.
    page = client.get(f"/real-sets/{out['id']}").json()
    assert "</script>.png" in [i["filename"] for i in page["images"]]


def test_a_zip_member_escaping_the_archive_is_refused(client):
    """'..' inside a zip member's path is refused by the archive reader and by the policy."""
    images = [png(phantom(100 + i, 48)) for i in range(3)]
    entries = {"ok/a.png": images[0], "../b.png": images[1], "c/../../d.png": images[2]}
    r = client.post(
        "/real-sets",
        data={"name": "zip"},
        files=[("files", ("z.zip", zip_bytes(entries), "application/zip"))],
    )
    assert r.status_code == 201, r.text
    assert [i["filename"] for i in r.json()["images"]] == ["ok/a.png"]
    rejected = {x["filename"]: x["reason"] for x in r.json()["rejected"]}
    assert set(rejected) == {"z.zip:../b.png", "z.zip:c/../../d.png"}
    assert all("'..'" in reason for reason in rejected.values())


def test_hash_list_names_follow_the_same_policy(client):
    """The `hashes` CSV refuses what image uploads refuse: control characters (C1 and
    Unicode line separators too) and '..' components, each line named."""
    good = "ab" * 32
    text = "\n".join(
        [
            f"fine.png,{good}",
            f"sep\u2028x.png,{'cd' * 32}",
            f"nel\x85x.png,{'ef' * 32}",
            f"../escape.png,{'01' * 32}",
            f"dir\\..\\escape.png,{'23' * 32}",
            f"</script>.png,{'45' * 32}",
        ]
    ).encode()
    r = client.post(
        "/real-sets",
        data={"name": "hashes"},
        files=[("hashes", ("hashes.csv", text, "text/csv"))],
    )
    assert r.status_code == 422, r.text
    errors = {e["line"]: e["error"] for e in r.json()["detail"]["errors"]}
    assert sorted(errors) == [2, 3, 4, 5]
    assert "control character (U+2028)" in errors[2]
    assert "control character (U+0085)" in errors[3]
    assert "'..'" in errors[4] and "'..'" in errors[5]
    ok = client.post(
        "/real-sets",
        data={"name": "hashes"},
        files=[("hashes", ("h.csv", f"</script>.png,{good}\n".encode(), "text/csv"))],
    )
    assert ok.status_code == 201, ok.text
    page = client.get(f"/real-sets/{ok.json()['id']}").json()
    assert [i["filename"] for i in page["images"]] == ["</script>.png"]


def test_filename_policy_rules():
    """The rules themselves, at their edges."""
    assert name_problem("a" * 1024) is None
    assert "longer than 1024" in (name_problem("a" * 1025) or "")
    assert name_problem("..a/b..c.png") is None  # dots inside names are not '..' parts
    assert name_problem("ünïcode/dir\\name.png") is None
    assert name_problem("   ") == "empty file name"
    assert uploaded_name("C:/Users/me/a.png") == "a.png"
    assert uploaded_name("</script>.png") == "</script>.png"
    assert uploaded_name("dir/a.png") == "dir/a.png"


# --- exports that cannot be forged --------------------------------------------------------

FORMULA_NAMES = ["=HYPERLINK(1).png", "+SUM(1).png", "-2+3.png", "@cmd.png", "a,0.png"]


def _formula_images() -> dict[str, bytes]:
    return {name: png(phantom(200 + i, 64)) for i, name in enumerate(FORMULA_NAMES)}


def test_classify_exports_neutralise_names(client):
    """A zip member named to forge an ImageCLEF line is refused; formula-looking names are
    neutralised in the CSV and a comma cannot move the ImageCLEF label column."""
    real = {**_formula_images(), "evil\nreal_0001,1\nx.png": png(phantom(300, 64))}
    generated = [png(phantom(200 + i, 64)) for i in range(3)]
    r = client.post(
        "/classify",
        data={"method": "reference"},
        files=[
            ("files", ("real.zip", zip_bytes(real), "application/zip")),
            *[("generated_files", (f"g{i}.png", g, "image/png")) for i, g in enumerate(generated)],
        ],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["real_count"] == len(FORMULA_NAMES)
    assert [x["filename"] for x in body["rejected"]] == ["evil\nreal_0001,1\nx.png"]
    cid = body["classification_id"]

    clef = client.get(f"/classify/{cid}", params={"format": "imageclef"}).text
    rows = list(csv.reader(io.StringIO(clef)))
    assert len(clef.splitlines()) == len(rows) == len(FORMULA_NAMES)
    assert [row[0] for row in rows] == [Path(n).stem for n in FORMULA_NAMES]
    assert all(len(row) == 2 and row[1] in {"0", "1"} for row in rows)
    assert not any(row[0] == "real_0001" for row in rows)

    table = list(csv.reader(io.StringIO(client.get(f"/classify/{cid}?format=csv").text)))
    names = [row[0] for row in table[1:]]
    assert names == ["'=HYPERLINK(1).png", "'+SUM(1).png", "'-2+3.png", "'@cmd.png", "a,0.png"]


def test_match_exports_neutralise_names(client):
    """Generated names that look like formulas are neutralised in /match CSV (generated,
    source and candidate cells); the paper's text has one line per generated image."""
    reals = _formula_images()
    real_set = register(client, reals, name="formulas")
    generated = {f"=gen{i}.png": data for i, data in enumerate(reals.values())}
    generated["-plain.png"] = png(phantom(999, 64))
    r = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"]), "top_k": "2"},
        files=file_parts(generated),
    )
    assert r.status_code == 200, r.text
    batch_id = r.json()["batch_id"]
    rows = list(csv.DictReader(io.StringIO(client.get(f"/match/{batch_id}?format=csv").text)))
    assert len(rows) == len(generated)
    for row in rows:
        assert row["generated"].startswith("'") and row["generated"][1:] in generated
        assert not row["candidates"].startswith(("=", "+", "-", "@"))
        if row["source"]:
            assert row["source"][0] not in "=+-@"
    assert {row["source"] for row in rows} >= {"'=HYPERLINK(1).png", "'@cmd.png", "a,0.png"}
    text = client.get(f"/match/{batch_id}?format=text").text
    assert len(text.splitlines()) == len(generated)


def test_exports_neutralise_names_stored_before_the_policy():
    """Rows stored before names were checked can still hold a newline: the exports escape
    it instead of writing a forged line (second line of defence)."""
    evil = "evil\nreal_0001,1\nx.png"
    document = {
        "results": [{"filename": evil, "score": 0.9, "label": "used", "components": {}}],
        "matches": [{"generated": evil, "source": "\t=cmd", "distance": 3, "candidates": []}],
    }
    assert classification_imageclef(document) == '"evil\\u000areal_0001,1\\u000ax",1\n'
    assert len(classification_csv(document).splitlines()) == 2
    assert len(batch_text(document).splitlines()) == 1
    row = list(csv.reader(io.StringIO(batch_csv(document))))[1]
    assert row[0] == "evil\\u000areal_0001,1\\u000ax.png" and row[1] == "'\\u0009=cmd"
    assert spreadsheet_cell("-1") == "'-1" and spreadsheet_cell("plain") == "plain"


# --- process hygiene ----------------------------------------------------------------------

ORPHAN_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, threading, time
    from app.services.decode_and_hash import HashPool
    from tests.imagegen import phantom, png

    if __name__ == "__main__":
        pool = HashPool(2)
        def request():  # like a request thread, which ends (anyio retires idle ones)
            futures = [pool.submit([png(phantom(i, 32))], 8, 10**6) for i in range(4)]
            [pool.result(f) for f in futures]
        thread = threading.Thread(target=request)
        thread.start()
        thread.join()
        time.sleep(0.5)
        # Workers outlive the thread that submitted: the pool still answers.
        print(pool.result(pool.submit([png(phantom(9, 32))], 8, 10**6))[0][0], flush=True)
        print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
        time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a dead child nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_hash_workers_die_with_their_parent(tmp_path):
    """kill -9 of the process owning a HashPool leaves no worker alive."""
    script = tmp_path / "owner.py"
    script.write_text(ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    owner = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert owner.stdout is not None
        first_hash = owner.stdout.readline().strip()
        assert len(first_hash) == 16, first_hash
        workers = [int(p) for p in owner.stdout.readline().split()]
        assert len(workers) >= 2 and all(_alive(p) for p in workers)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "hash workers outlived their parent"


@pytest.fixture
def live_server(tmp_path) -> Iterator[tuple[str, int]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'live.db'}",
        hash_workers=0,
    )
    with served_in_thread(settings) as address:
        yield address


def test_client_disconnect_mid_upload_logs_one_line(live_server, caplog):
    """A client that sends half an upload and hangs up costs one log line, no traceback,
    and the server keeps answering."""
    caplog.set_level(logging.INFO)
    host, port = live_server
    body, end, headers = raw_multipart(
        [("name", None, b"cut")] + [("files", n, d) for n, d in real_images(4).items()]
    )
    with socket.create_connection((host, port)) as conn:
        conn.sendall(
            (
                f"POST /real-sets HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: {headers['content-type']}\r\n"
                f"Content-Length: {len(body) + len(end) + 100_000}\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        "disconnected" in r.getMessage() for r in caplog.records
    ):
        time.sleep(0.05)
    disconnects = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(disconnects) == 1 and disconnects[0].name == "memaudit.uploads"
    assert "POST /real-sets" in disconnects[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    with socket.create_connection((host, port)) as conn:
        conn.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        assert conn.recv(100).startswith(b"HTTP/1.1 200")


def test_onnxruntime_telemetry_is_off_where_sessions_are_made():
    """open_session turns telemetry off before any session exists (a fresh process)."""
    code = textwrap.dedent(
        """
        import onnxruntime as ort
        calls = []
        ort.disable_telemetry_events = lambda: calls.append("off")
        from app.scoring.cnn import open_session
        try:
            open_session("/nonexistent.onnx", want_cuda=False)
        except Exception:
            pass
        print(calls)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "['off']"


# --- SQLite concurrency: appends to one set wait their turn -------------------------------

APPENDS = 20


def _in_parallel(work, count: int) -> list:
    """Run ``work(i)`` for i in range(count) on as many threads at once; results in order."""
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_image_appends_all_succeed_with_their_own_images(client):
    """20 requests append to one set at once: every one 201, each answer lists exactly the
    images it sent, and the set holds all of them at distinct positions."""
    seed = register(client, {"seed.png": png(phantom(0, 32))}, name="shared")
    set_id = seed["id"]

    def append(i: int):
        files = {f"r{i:02d}_{j}.png": png(phantom(1000 + 10 * i + j, 32)) for j in range(3)}
        response = client.post(f"/real-sets/{set_id}/images", files=file_parts(files))
        return response.status_code, response.json(), sorted(files)

    for status, body, sent in _in_parallel(append, APPENDS):
        assert status == 201, body
        assert sorted(i["filename"] for i in body["images"]) == sent
    final = client.get(f"/real-sets/{set_id}", params={"limit": 1000}).json()
    assert final["image_count"] == 1 + 3 * APPENDS and final["revision"] == 1 + APPENDS
    assert len({i["filename"] for i in final["images"]}) == 1 + 3 * APPENDS


def test_concurrent_hash_appends_all_succeed(client):
    """The same for `hashes` appends: no 409 for work that can wait its turn."""
    seed = client.post(
        "/real-sets",
        data={"name": "hashes"},
        files=[("hashes", ("h.csv", f"seed.png,{'00' * 32}\n".encode(), "text/csv"))],
    )
    set_id = seed.json()["id"]

    def append(i: int):
        lines = "".join(f"h{i:02d}_{j}.png,{i:02x}{j:02x}{'ab' * 30}\n" for j in range(4))
        response = client.post(
            f"/real-sets/{set_id}/hashes",
            files=[("hashes", ("h.csv", lines.encode(), "text/csv"))],
        )
        return response.status_code, response.json()

    for status, body in _in_parallel(append, APPENDS):
        assert status == 201 and body["imported"] == 4, body
    final = client.get(f"/real-sets/{set_id}", params={"limit": 1000}).json()
    assert final["image_count"] == 1 + 4 * APPENDS and final["revision"] == 1 + APPENDS
    assert len({i["filename"] for i in final["images"]}) == 1 + 4 * APPENDS
