"""/filter, the release gate: copies withheld with their evidence, the rest released, and a
zip of exactly the released images' bytes with a manifest of what was withheld and why."""

from __future__ import annotations

import csv
import io
import zipfile

from app.services.release import MANIFEST_NAME, zip_member_name
from app.training.synthetic import perturbed_copy
from tests.helpers import file_parts, register
from tests.imagegen import phantom, png


def generated() -> dict[str, bytes]:
    """Eight edited copies of real_000..real_007 and eight novel images."""
    out = {f"copy_{i}.png": png(perturbed_copy(phantom(i, 128), seed=i)) for i in range(8)}
    out.update({f"novel_{i}.png": png(phantom(9000 + i, 128)) for i in range(8)})
    return out


def test_filter_withholds_copies_and_zips_only_the_released(client):
    real_set = register(client, {f"real_{i:03d}.png": png(phantom(i, 128)) for i in range(30)})
    uploads = generated()
    uploads["broken.png"] = b"not an image"
    response = client.post(
        "/filter", data={"real_set_id": str(real_set["id"])}, files=file_parts(uploads)
    )
    assert response.status_code == 200, response.text
    gate = response.json()
    decisions = {image["generated"]: image for image in gate["images"]}
    assert set(decisions) == set(uploads) - {"broken.png"}
    assert [r["filename"] for r in gate["rejected"]] == ["broken.png"]
    for i in range(8):
        copy = decisions[f"copy_{i}.png"]
        assert copy["decision"] == "withhold", copy
        assert copy["copy_of"]["real"] == f"real_{i:03d}.png"
        assert any(f"copy of real_{i:03d}.png by the embedding" in r for r in copy["reasons"])
    for image in decisions.values():  # every decision follows from the evidence shown
        evidence = bool(image["copy_of"]) or bool(image["source"])
        assert (image["decision"] == "withhold") == evidence, image
        assert bool(image["reasons"]) == evidence
    withheld_novel = [n for n in decisions if n.startswith("novel") and decisions[n]["reasons"]]
    assert len(withheld_novel) <= 1, withheld_novel
    assert gate["withheld_count"] + gate["released_count"] == gate["generated_count"] == 16

    # Stored like a batch: /filter/{id} repeats the decisions, /match/{id} has the evidence.
    batch_id = gate["batch_id"]
    assert client.get(f"/filter/{batch_id}").json() == gate
    assert client.get(f"/match/{batch_id}").json()["generated_count"] == 16
    manifest = client.get(f"/filter/{batch_id}", params={"format": "csv"})
    rows = {row["generated"]: row for row in csv.DictReader(io.StringIO(manifest.text))}
    assert {name: row["decision"] for name, row in rows.items()} == {
        name: image["decision"] for name, image in decisions.items()
    }

    response = client.get(f"/filter/{batch_id}/released")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = set(archive.namelist())
        released = {n for n, image in decisions.items() if image["decision"] == "release"}
        assert names == {f"released/{n}" for n in released} | {MANIFEST_NAME}
        for name in released:  # the uploaded bytes, unchanged
            assert archive.read(f"released/{name}") == uploads[name]
        listed = list(csv.DictReader(io.StringIO(archive.read(MANIFEST_NAME).decode())))
    assert {row["generated"] for row in listed} == set(decisions) - released
    assert all(row["decision"] == "withhold" and row["reasons"] for row in listed)


def test_filter_of_unknown_batches_and_sets_is_404(client):
    assert client.get("/filter/999").status_code == 404
    assert client.get("/filter/999/released").status_code == 404
    response = client.post("/filter", data={"real_set_id": "999"}, files=file_parts(generated()))
    assert response.status_code == 404


def test_released_names_say_what_the_bytes_are():
    png_bytes = b"\x89PNG\r\n\x1a\n" + b"rest"
    assert zip_member_name("a.png", png_bytes) == "released/a.png"
    assert zip_member_name("scan.dcm#0001", png_bytes) == "released/scan.dcm#0001.png"
    assert zip_member_name("b.jpg", b"\xff\xd8\xff") == "released/b.jpg"
    assert zip_member_name(MANIFEST_NAME, png_bytes) != MANIFEST_NAME
