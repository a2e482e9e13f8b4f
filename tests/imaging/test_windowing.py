"""DICOM and 16-bit input: rescaled, windowed to 8 bits (never clipped), the window stored with
the set and used for every later upload, and no patient data kept. Test DICOMs are made here
with pydicom; expected pixels come from the window formula written out below."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.cli.folders import read_folder
from app.db.models import Base
from app.imaging.decode import ImageDecodeError, WindowedImage, decode_image
from app.imaging.windowing import Window
from tests.helpers import file_parts, raw_multipart
from tests.imagegen import encode, phantom, png

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLossless,
    generate_uid,
)

MAX_PIXELS = 50_000_000
PATIENT_NAME = "Quimby^Rosalind"
PATIENT_ID = "MRN-4711-0815"
LUNG = (-600.0, 1500.0)


def windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The documented window: <= center - width/2 -> 0, >= center + width/2 -> 255, linear."""
    scaled = (values.astype(np.float64) - (center - width / 2)) / width * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def hu_slice(seed: int, size: int = 96) -> np.ndarray:
    """A phantom slice in Hounsfield units: air -1000 up to soft tissue/bone ~ +400."""
    return -1000.0 + phantom(seed, size).astype(np.float64) * (1400.0 / 255.0)


def dicom_file(
    hu: np.ndarray,
    *,
    slope: float = 0.5,
    intercept: float = -1024.0,
    photometric: str = "MONOCHROME2",
    modality: str | None = "CT",
    own_window: tuple[float, float] | None = None,
    syntax=ExplicitVRLittleEndian,
) -> tuple[bytes, np.ndarray]:
    """A DICOM file of ``hu`` (one frame, or frames along axis 0) stored as uint16 through
    slope/intercept; returns its bytes and the modality values it really carries."""
    stored = np.clip(np.rint((hu - intercept) / slope), 0, 65535).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    if modality is not None:
        ds.Modality = modality
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    if own_window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{v:g}" for v in own_window)
    if syntax.is_compressed:  # bytes a JPEG decoder would reject; no decoder gets that far
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([stored.tobytes()])
    else:
        ds.PixelData = stored.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), stored.astype(np.float64) * slope + intercept


def png16(values: np.ndarray) -> bytes:
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG")


def phash_of(pixels: np.ndarray, hash_size: int = 16) -> str:
    return str(imagehash.phash(Image.fromarray(pixels), hash_size))


# --- decoding ---------------------------------------------------------------------------------


def test_ct_dicom_is_rescaled_to_hu_and_lung_windowed() -> None:
    data, hu = dicom_file(hu_slice(1))
    decoded = decode_image(data, MAX_PIXELS, None)
    assert isinstance(decoded, WindowedImage) and not decoded.multi_frame
    assert [(w.source, w.center, w.width) for w in decoded.windows] == [("ct-lung", *LUNG)]
    np.testing.assert_array_equal(decoded.frames[0], windowed(hu, *LUNG))
    # The stored values are not HU: unrescaled, the lung window would put all of them >= 229.
    assert decoded.frames[0].min() <= 70

    mediastinum = decode_image(data, MAX_PIXELS, Window(40, 400))
    assert [w.source for w in mediastinum.windows] == ["request"]
    np.testing.assert_array_equal(mediastinum.frames[0], windowed(hu, 40, 400))


def test_ct_is_recognised_by_hu_storage_without_modality() -> None:
    data, hu = dicom_file(hu_slice(2), modality=None, own_window=(40, 400))
    decoded = decode_image(data, MAX_PIXELS, None)
    assert decoded.windows[0].source == "ct-lung"
    np.testing.assert_array_equal(decoded.frames[0], windowed(hu, *LUNG))


def test_other_dicom_uses_its_own_window_else_its_range() -> None:
    values = phantom(3, 64).astype(np.float64) * 4
    data, stored = dicom_file(values, slope=1, intercept=0, modality="MR", own_window=(500, 600))
    decoded = decode_image(data, MAX_PIXELS, None)
    assert decoded.windows[0].source == "dicom"
    np.testing.assert_array_equal(decoded.frames[0], windowed(stored, 500, 600))

    data, stored = dicom_file(values, slope=1, intercept=0, modality="MR")
    decoded = decode_image(data, MAX_PIXELS, None)
    assert decoded.windows[0].source == "min-max"
    low, high = stored.min(), stored.max()
    np.testing.assert_array_equal(decoded.frames[0], windowed(stored, (low + high) / 2, high - low))
    assert decoded.frames[0].min() == 0 and decoded.frames[0].max() == 255


def test_monochrome1_is_inverted_after_windowing() -> None:
    data, hu = dicom_file(hu_slice(4), photometric="MONOCHROME1")
    decoded = decode_image(data, MAX_PIXELS, None)
    np.testing.assert_array_equal(decoded.frames[0], 255 - windowed(hu, *LUNG))


def test_multi_frame_dicom_gives_one_image_per_frame() -> None:
    data, hu = dicom_file(np.stack([hu_slice(s) for s in (5, 6, 7)]))
    decoded = decode_image(data, MAX_PIXELS, None)
    assert decoded.multi_frame and len(decoded.frames) == 3
    for frame, values in zip(decoded.frames, hu, strict=True):
        np.testing.assert_array_equal(frame, windowed(values, *LUNG))
    with pytest.raises(ImageDecodeError, match="more than the limit"):
        decode_image(data, 3 * 96 * 96 - 1, None)


def test_dicom_without_a_decoder_for_its_transfer_syntax_is_refused_with_the_reason() -> None:
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLossless).is_available:
        pytest.skip("this environment has a JPEG Lossless decoder (pylibjpeg or GDCM)")
    data, _ = dicom_file(hu_slice(8), syntax=JPEGLossless)
    with pytest.raises(ImageDecodeError, match=r"JPEG Lossless.*send it uncompressed"):
        decode_image(data, MAX_PIXELS, None)


def test_broken_dicom_files_are_refused_with_a_reason_naming_no_tag_value() -> None:
    data, _ = dicom_file(hu_slice(10))
    for broken in (data[:400], data[:-100]):
        with pytest.raises(ImageDecodeError, match="DICOM") as caught:
            decode_image(broken, MAX_PIXELS, None)
        assert PATIENT_NAME not in str(caught.value)
    rgb, _ = dicom_file(hu_slice(10), photometric="RGB")
    with pytest.raises(ImageDecodeError, match="only grayscale"):
        decode_image(rgb, MAX_PIXELS, None)


def test_16_bit_images_are_windowed_or_refused_never_clipped(tmp_path) -> None:
    values = (phantom(9, 80).astype(np.uint16) * 200 + 1000).astype(np.uint16)
    for data in (png16(values), encode(Image.fromarray(values), "TIFF")):
        with pytest.raises(ImageDecodeError, match="window_center and window_width"):
            decode_image(data, MAX_PIXELS, None)
        decoded = decode_image(data, MAX_PIXELS, Window(20000, 30000))
        assert [w.source for w in decoded.windows] == ["request"]
        np.testing.assert_array_equal(decoded.frames[0], windowed(values, 20000, 30000))
    # The offline commands refuse them too (read_folder reports and skips).
    (tmp_path / "ct16.png").write_bytes(png16(values))
    (tmp_path / "ct8.png").write_bytes(png(phantom(9, 80)))
    assert read_folder(tmp_path)[0] == ["ct8.png"]
    # 8-bit images are not windowed, whatever the request says.
    eight = png(phantom(9, 80))
    assert isinstance(decode_image(eight, MAX_PIXELS, Window(0, 10)), np.ndarray)


def test_windowed_images_come_back_from_the_worker_processes() -> None:
    from app.services.decode_and_hash import HashPool
    from app.services.ingest import POOL_MIN_BATCH, ImageIngest, IngestLimits

    files = {f"s{i}.dcm": dicom_file(hu_slice(60 + i, 48))[0] for i in range(POOL_MIN_BATCH)}
    files["multi.dcm"] = dicom_file(np.stack([hu_slice(99, 48), hu_slice(98, 48)]))[0]
    limits = IngestLimits(max_file_bytes=1 << 20, max_files=100, max_pixels=MAX_PIXELS)

    def ingest(pool: HashPool | None) -> list[tuple]:
        job = ImageIngest(16, limits, pool=pool, window=Window(-300, 1200))
        for name, data in files.items():
            job.add(name, data)
        result = job.finish()
        assert result.rejected == []
        return [(i.filename, i.sha256, i.phash, i.window) for i in result.images]

    pool = HashPool(1)
    try:
        pooled = ingest(pool)
    finally:
        pool.shutdown()
    assert pooled == ingest(None)
    assert [p[0] for p in pooled[-2:]] == ["multi.dcm#0001", "multi.dcm#0002"]
    assert {p[3].source for p in pooled} == {"request"}


# --- through the API, SQLite and PostgreSQL ---------------------------------------------------


def _stored_everywhere(client, settings) -> bytes:
    """Every row of every table, and every file under the data directory."""
    chunks = []
    with client.app.state.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            chunks.append(repr(connection.execute(select(table)).all()).encode())
    chunks += [p.read_bytes() for p in settings.data_dir.rglob("*") if p.is_file()]
    return b"\n".join(chunks)


def test_dicom_series_registers_and_matches_its_png_export(client, settings) -> None:
    series: dict[str, bytes] = {}
    expected: dict[str, np.ndarray] = {}
    for i in range(4):
        photometric = "MONOCHROME1" if i == 3 else "MONOCHROME2"
        data, hu = dicom_file(hu_slice(20 + i), photometric=photometric, slope=0.5 + i)
        series[f"slice_{i}.dcm"] = data
        pixels = windowed(hu, *LUNG)
        expected[f"slice_{i}.dcm"] = 255 - pixels if i == 3 else pixels
    data, hu = dicom_file(np.stack([hu_slice(30), hu_slice(31)]))
    series["series.dcm"] = data
    for k in range(2):
        expected[f"series.dcm#{k + 1:04d}"] = windowed(hu[k], *LUNG)

    response = client.post(
        "/real-sets",
        data={"name": "ct series", "hash_size": "16"},
        files=file_parts(series, "application/dicom"),
    )
    assert response.status_code == 201, response.text
    real_set = response.json()
    assert real_set["rejected"] == []
    assert real_set["window_center"] is None and real_set["window_width"] is None
    assert real_set["windows_used"] == [
        {"source": "ct-lung", "center": -600.0, "width": 1500.0, "images": 6}
    ]
    hashed = {i["filename"]: i["phash"] for i in real_set["images"]}
    assert hashed == {name: phash_of(pixels) for name, pixels in expected.items()}

    exports = {f"export_{n.replace('#', '_')}.png": png(p) for n, p in expected.items()}
    batch = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"]), "real_summary": "none"},
        files=file_parts(exports),
    )
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["windows_used"] == [] and body["window_center"] is None
    for match, source in zip(body["matches"], expected, strict=True):
        assert match["source"] == source and match["distance"] <= 4, match

    again = client.get(f"/real-sets/{real_set['id']}").text + client.get("/real-sets").text
    again += client.get(f"/match/{body['batch_id']}").text
    for answer in (response.text, batch.text, again):
        assert PATIENT_NAME not in answer and PATIENT_ID not in answer
    stored = _stored_everywhere(client, settings)
    for secret in (PATIENT_NAME, PATIENT_ID, "Quimby"):
        assert secret.encode() not in stored


def test_16_bit_png_needs_a_window_and_the_set_keeps_it(client) -> None:
    values = {
        f"ct16_{i}.png": phantom(40 + i, 96).astype(np.uint16) * 100 + 30000 for i in range(3)
    }
    files = {name: png16(v) for name, v in values.items()}
    refused = client.post(
        "/real-sets", data={"name": "16"}, files=file_parts(dict([*files.items()][:1]))
    )
    assert refused.status_code == 422, refused.text
    [reason] = refused.json()["detail"]["rejected"]
    assert "window_center" in reason["reason"] and "window_width" in reason["reason"]

    window = {"window_center": "40000", "window_width": "20000"}
    first = dict([*files.items()][:2])
    response = client.post("/real-sets", data={"name": "16", **window}, files=file_parts(first))
    assert response.status_code == 201, response.text
    real_set = response.json()
    assert (real_set["window_center"], real_set["window_width"]) == (40000.0, 20000.0)
    assert real_set["windows_used"] == [
        {"source": "request", "center": 40000.0, "width": 20000.0, "images": 2}
    ]
    store = client.app.state.image_store
    for image in real_set["images"]:
        kept = np.asarray(Image.open(io.BytesIO(store.get(image["sha256"]))))
        np.testing.assert_array_equal(kept, windowed(values[image["filename"]], 40000, 20000))
        assert image["phash"] == phash_of(kept)
    set_id = real_set["id"]

    # A later upload without a window gets the set's; a different window is refused.
    added = client.post(
        f"/real-sets/{set_id}/images", files=file_parts({"ct16_2.png": files["ct16_2.png"]})
    )
    assert added.status_code == 201, added.text
    [image] = added.json()["images"]
    assert image["phash"] == phash_of(windowed(values["ct16_2.png"], 40000, 20000))
    assert added.json()["window_center"] == 40000.0
    other = {"window_center": "-600", "window_width": "1500"}
    for url, data in (
        (f"/real-sets/{set_id}/images", other),
        ("/match", {"real_set_id": str(set_id), **other}),
    ):
        conflict = client.post(
            url, data=data, files=file_parts({"x.png": png16(values["ct16_0.png"] + 7)})
        )
        assert conflict.status_code == 422, conflict.text
        assert "window center 40000 width 20000" in conflict.text

    same = client.post(
        "/match",
        data={"real_set_id": str(set_id), **window},
        files=file_parts({"gen.png": files["ct16_1.png"]}),
    )
    assert same.status_code == 200, same.text
    body = same.json()
    assert body["matches"][0]["source"] == "ct16_1.png" and body["matches"][0]["distance"] == 0
    assert body["windows_used"] == [
        {"source": "request", "center": 40000.0, "width": 20000.0, "images": 1}
    ]
    stored = client.get(f"/match/{body['batch_id']}").json()
    assert (stored["window_center"], stored["window_width"]) == (40000.0, 20000.0)
    assert stored["windows_used"] == body["windows_used"]


def test_window_fields_are_checked_and_must_come_before_the_files(client) -> None:
    image = png16(phantom(50, 64).astype(np.uint16) * 50)
    half = client.post(
        "/real-sets", data={"name": "x", "window_center": "0"}, files=file_parts({"a.png": image})
    )
    assert half.status_code == 422 and "both window_center and window_width" in half.text
    narrow = client.post(
        "/real-sets",
        data={"name": "x", "window_center": "0", "window_width": "0"},
        files=file_parts({"a.png": image}),
    )
    assert narrow.status_code == 422 and "window_width must be positive" in narrow.text
    body, end, headers = raw_multipart(
        [
            ("name", None, b"late"),
            ("hash_size", None, b"16"),
            ("files", "a.png", image),
            ("window_center", None, b"6000"),
            ("window_width", None, b"12000"),
        ]
    )
    late = client.post("/real-sets", content=body + end, headers=headers)
    assert late.status_code == 422 and "before the image files" in late.text
    assert client.get("/real-sets").json() == []


def test_downgrade_from_0005_refuses_while_a_set_has_a_window(client, settings) -> None:
    from alembic import command

    from app.db.migrate import alembic_config, schema_status

    image = png16(phantom(51, 64).astype(np.uint16) * 50)
    response = client.post(
        "/real-sets",
        data={"name": "w", "window_center": "6000", "window_width": "12000"},
        files=file_parts({"a.png": image}),
    )
    assert response.status_code == 201, response.text
    engine = client.app.state.engine
    config = alembic_config(settings.migrations_dir, engine.url.render_as_string(False))

    def downgrade() -> None:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")

    with pytest.raises(RuntimeError, match="have a window"):
        downgrade()
    assert client.delete(f"/real-sets/{response.json()['id']}").status_code == 204
    downgrade()
    assert schema_status(engine, settings.migrations_dir)[0] == "0004"
