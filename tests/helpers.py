"""Building multipart uploads for the API tests."""

from __future__ import annotations

import io
import zipfile

from tests.imagegen import phantom, png


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
