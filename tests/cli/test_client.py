"""`memaudit client` against a real uvicorn server: streamed uploads, summaries, exit codes."""

from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import pytest

from app.cli import main as cli_main
from app.cli.client import EXIT_FOUND, EXIT_REFUSED, EXIT_UNREACHABLE
from app.services.release import MANIFEST_NAME
from app.training.synthetic import perturbed_copy
from tests.browser import served_app
from tests.imagegen import phantom, png

ADMIN_KEY = "client-test-admin-key-0123456789abcdef"


def write(folder: Path, images: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in images.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("client-data")
    reals = {f"real_{i:03d}.png": png(phantom(i, 128)) for i in range(30)}
    copies = {f"copy_{i}.png": png(perturbed_copy(phantom(i, 128), seed=i)) for i in range(6)}
    novel = {f"novel_{i}.png": png(phantom(9000 + i, 128)) for i in range(6)}
    return {
        "real": write(root / "real", reals),
        "copies": write(root / "copies", copies),
        "novel": write(root / "novel", novel),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("client-server"), api_keys=ADMIN_KEY) as url:
        yield url


def client(server: str, *args: str) -> int:
    try:
        return cli_main(["client", "--server", server, "--api-key", ADMIN_KEY, *args])
    except SystemExit as exc:  # errors end the command with their exit code
        return int(exc.code)


def test_register_match_classify_report_with_exit_codes(server, folders, capsys, tmp_path):
    assert client(server, "register", str(folders["real"]), "--name", "ct") == 0
    out = capsys.readouterr().out
    assert out.startswith("real set 1: 30 images (0 files rejected, 0 duplicates)")

    # Copies of registered images: the gate fails (exit 3) and names each copy's source.
    assert client(server, "match", str(folders["copies"]), "--set", "1") == EXIT_FOUND
    out, err = capsys.readouterr()
    # It ran as a job; without a terminal its progress is logged one line per stage.
    progress = [line for line in err.splitlines() if line.startswith("job ")]
    stages = {"queued", "reading", "hashing", "matching", "succeeded"}  # (a fast job: the last)
    assert {line.split(": ")[1].split()[0] for line in progress} <= stages, progress
    assert progress[-1].endswith("succeeded 6 / 6 (100%)"), progress
    assert "batch 1: 6 generated images;" in out
    for i in range(6):
        assert f"copy copy_{i}.png -> real_{i:03d}.png" in out
    assert "verified by" in out  # a small batch's copies are checked geometrically

    # Novel images: exit 3 exactly when the answer names a copy (the JSON is printed whole).
    code = client(server, "--json", "match", str(folders["novel"]), "--set", "1")
    batch = json.loads(capsys.readouterr().out)
    assert batch["generated_count"] == 6
    assert code == (EXIT_FOUND if any(m["copy_of"] for m in batch["matches"]) else 0)
    assert client(server, "match", str(folders["novel"]), "--set", "1", "--fail-on", "never") == 0
    capsys.readouterr()

    code = client(server, "--json", "classify", "--set", "1", "--batch", "1")
    doc = json.loads(capsys.readouterr().out)
    assert code == (EXIT_FOUND if doc["used_count"] else 0)
    # A method that scores the real images alone needs no batch; reference does.
    code = client(server, "classify", "--json", "--set", "1", "--method", "cnn")
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] == "cnn" and doc["real_count"] == 30
    assert code == (EXIT_FOUND if doc["used_count"] else 0)
    assert client(server, "classify", "--set", "1") == EXIT_REFUSED
    assert "batch_id" in capsys.readouterr().err

    # The release gate: copies withheld (exit 3), the rest saved as a zip.
    released = tmp_path / "released.zip"
    code = client(
        server,
        "filter",
        str(folders["copies"]),
        str(folders["novel"]),
        "--set",
        "1",
        "--out",
        str(released),
    )
    out = capsys.readouterr().out
    assert code == EXIT_FOUND
    for i in range(6):
        assert f"withhold copy_{i}.png: copy of real_{i:03d}.png by the embedding" in out
    with zipfile.ZipFile(released) as archive:
        names = set(archive.namelist())
    assert MANIFEST_NAME in names and not any(n.startswith("released/copy_") for n in names)
    assert {f"released/novel_{i}.png" for i in range(6)} - names == {
        "released/" + line.split()[1].rstrip(":")
        for line in out.splitlines()
        if line.startswith("withhold novel")
    }

    report = tmp_path / "report.html"
    assert client(server, "report", "--match", "1", "--out", str(report)) == 0
    assert "copy_0.png" in report.read_text()


def test_match_gate_falls_back_to_phash_where_copy_of_is_undecided(server, folders, capsys):
    """A set too small to calibrate the embedding bar: copy_of is null for every image, so
    the default gate counts the paper's pHash sources instead of passing the batch."""
    small = sorted(folders["real"].iterdir())[:5]
    assert client(server, "register", *map(str, small), "--name", "small") == 0
    set_id = capsys.readouterr().out.split(":")[0].split()[-1]
    assert client(server, "match", *map(str, small[:2]), "--set", set_id) == EXIT_FOUND
    out = capsys.readouterr().out
    assert "copy_of was not decided" in out and "0 copies by the embedding" in out
    assert client(server, "match", *map(str, small[:2]), "--set", set_id, "--fail-on", "never") == 0


def test_refusals_and_unreachable_servers_have_their_own_exit_codes(server, folders, capsys):
    assert client(server, "match", str(folders["novel"]), "--set", "999") == EXIT_REFUSED
    assert "answered 404" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # no key: every route but the probes is 401
        cli_main(["client", "--server", server, "match", str(folders["novel"]), "--set", "1"])
    assert refused.value.code == EXIT_REFUSED and "answered 401" in capsys.readouterr().err
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert client(f"http://127.0.0.1:{port}", "register", str(folders["real"]), "--name", "x") == (
        EXIT_UNREACHABLE
    )
    assert "cannot reach" in capsys.readouterr().err


def test_an_uploads_problem_reads_as_sentences():
    from app.cli.client import detail_words

    detail = {
        "message": "none of the uploaded files is a usable generated image",
        "rejected": [{"filename": "notes.txt", "reason": "not an image"}] * 12,
        "duplicates": [],
    }
    lines = detail_words(detail).splitlines()
    assert lines[0] == detail["message"]
    assert lines[1] == "  rejected notes.txt: not an image"
    assert lines[-1] == "  ... and 2 more (--json prints them all)" and len(lines) == 12
    assert detail_words("real set 9 does not exist") == "real set 9 does not exist"


def test_match_fails_when_the_sets_descriptors_are_another_embeddings():
    """The server's own explanations of stale descriptors are recognised (so `client match`
    exits 4 instead of counting pHash sources alone); other undecided reasons are not."""
    from app.cli.client import stale_descriptors
    from app.services.matching import MIXED_EMBEDDINGS, NO_EMBEDDING, other_embedding

    for rule in (other_embedding("ab" * 8, "cd" * 8), MIXED_EMBEDDINGS):
        assert stale_descriptors({"copy_threshold": None, "copy_rule": rule}) == rule
    assert stale_descriptors({"copy_threshold": None, "copy_rule": NO_EMBEDDING}) is None
    assert stale_descriptors({"copy_threshold": 0.9, "copy_rule": "calibrated ..."}) is None
