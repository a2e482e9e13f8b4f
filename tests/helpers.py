"""Building multipart uploads for the API tests."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from tests.imagegen import phantom, png

#: The repository checkout the tests run from, and its shipped model artifacts.
REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_MODELS = REPO_ROOT / "models"


def real_images(n: int, size: int = 128, offset: int = 0) -> dict[str, bytes]:
    return {f"real_{i:04d}.png": png(phantom(offset + i, size)) for i in range(n)}


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def file_parts(entries: dict[str, bytes], content_type: str = "image/png") -> list:
    return [("files", (name, data, content_type)) for name, data in entries.items()]


def register(client, entries: dict[str, bytes], name: str = "set", hash_size: int = 16):
    response = client.post(
        "/real-sets", data={"name": name, "hash_size": str(hash_size)}, files=file_parts(entries)
    )
    assert response.status_code == 201, response.text
    return response.json()


def raw_multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "memaudit"):
    """A multipart body in exactly the given part order (httpx puts fields first):
    parts are (field name, filename or None for a text field, bytes). Returns
    (body without the closing boundary, closing boundary, headers)."""
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
            head = f"Content-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n"
        else:
            head = f"Content-Disposition: {disposition}\r\n\r\n"
        chunks.append(f"--{boundary}\r\n{head}".encode() + data + b"\r\n")
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    return b"".join(chunks), f"--{boundary}--\r\n".encode(), headers


def labelled_real_files(used, unused) -> dict[str, bytes]:
    """Real images as uploads, named by their label (``used_000.png``, ``unused_000.png``)."""
    files = {f"used_{i:03d}.png": png(img) for i, img in enumerate(used)}
    files.update({f"unused_{i:03d}.png": png(img) for i, img in enumerate(unused)})
    return files
