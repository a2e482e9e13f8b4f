"""The method table: one registry line makes a method appear everywhere methods are listed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.cli import build_parser
from app.config import Settings
from app.main import create_app
from app.scoring.artifacts import ModelArtifacts
from app.scoring.base import Progress, ScoreResult
from app.scoring.methods import (
    ScoringContext,
    ScoringMethod,
    build_scorer,
    get_method,
    method_names,
    register,
    unregister,
)
from app.scoring.phash_rule import PHashRuleScorer
from app.scoring.reference import ReferenceScorer
from app.search.calibration import Threshold
from tests.helpers import REPO_MODELS, file_parts
from tests.imagegen import phantom, png


class MeanPixelScorer:
    """Test-only method: a real image's score is its mean pixel value."""

    name = "mean_pixel"
    needs_generated = False

    def score(
        self,
        real: Sequence[np.ndarray],
        generated: Sequence[np.ndarray] | None,
        progress: Progress | None = None,
    ) -> ScoreResult:
        scores = np.array([float(np.mean(image)) for image in real])
        return ScoreResult(scores, 100.0, "mean pixel value at least 100")


@pytest.fixture
def mean_pixel() -> Iterator[ScoringMethod]:
    """The one line a new method needs, undone after the test."""
    method = register(
        ScoringMethod(
            "mean_pixel",
            "test only: the mean pixel value",
            needs_generated=False,
            build=lambda context: MeanPixelScorer(),
        )
    )
    yield method
    unregister(method.name)


def _app(tmp_path: Path, models_dir: Path = REPO_MODELS) -> TestClient:
    settings = Settings(
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    return TestClient(create_app(settings))


def test_a_registered_method_is_listed_by_the_api_the_cli_and_models(mean_pixel, tmp_path, capsys):
    with _app(tmp_path) as client:
        form = client.get("/openapi.json").json()["paths"]["/classify"]["post"]["requestBody"]
        documented = form["content"]["multipart/form-data"]["schema"]["properties"]["method"]
        assert documented["enum"] == ["reference", "phash", "cnn", "sift_knn", "mean_pixel"]
        listed = {row["method"]: row for row in client.get("/models").json()}
        assert listed["mean_pixel"]["available"] is True
        assert listed["mean_pixel"]["status"] == "built-in"
        assert listed["mean_pixel"]["description"] == "test only: the mean pixel value"

        real = {f"real_{i}.png": png(phantom(i, 64)) for i in range(3)}
        r = client.post("/classify", data={"method": "mean_pixel"}, files=file_parts(real))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["method"] == "mean_pixel" and body["threshold"] == 100.0
        assert client.get(f"/classify/{body['classification_id']}").json()["method"] == "mean_pixel"

    parser = build_parser()
    args = parser.parse_args(["evaluate", "--labels", "l", "--real", "r", "--method", "mean_pixel"])
    assert args.method == "mean_pixel"
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--help"])
    assert "mean_pixel test only: the mean pixel value" in capsys.readouterr().out


def test_unregistered_method_is_gone_everywhere(tmp_path):
    assert "mean_pixel" not in method_names()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--labels", "l", "--real", "r", "--method", "x"])
    with _app(tmp_path) as client:
        r = client.post("/classify", data={"method": "mean_pixel", "real_set_id": "1"})
        assert r.status_code == 422 and "reference" in r.json()["detail"]


def test_registration_rejects_duplicates_and_half_defined_methods():
    with pytest.raises(ValueError, match="already registered"):
        register(get_method("reference"))
    with pytest.raises(ValueError, match="exactly one"):
        ScoringMethod("both_missing", "neither built nor loaded", needs_generated=False)
    with pytest.raises(ValueError, match="identifier"):
        ScoringMethod("Bad Name", "x", needs_generated=False, build=lambda c: MeanPixelScorer())


def test_build_scorer_reads_what_each_method_needs_from_the_context():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        build_scorer("nope", ScoringContext())
    with pytest.raises(LookupError, match="cnn model is unavailable"):
        build_scorer("cnn", ScoringContext())

    plain = build_scorer("reference", ScoringContext())
    assert isinstance(plain, ReferenceScorer) and plain.config.conclusive_score == 1.0
    assert build_scorer("reference", ScoringContext(requested_threshold=0.5)).config == (
        plain.config
    )
    raised = build_scorer("reference", ScoringContext(requested_threshold=2.5))
    assert raised.config.conclusive_score == 2.5

    rule = Threshold(12, "request", "given")
    phash = build_scorer(
        "phash",
        ScoringContext(
            match_threshold=rule, hash_size=8, calibration_quantile=0.1, min_calibration_images=3
        ),
    )
    assert isinstance(phash, PHashRuleScorer)
    assert (phash.hash_size, phash.threshold, phash.quantile, phash.min_images) == (
        8,
        rule,
        0.1,
        3,
    )


def test_each_scorer_needs_generated_images_as_its_table_entry_says():
    artifacts = ModelArtifacts(REPO_MODELS, want_cuda=False).load()
    for name in ("reference", "phash", "cnn", "sift_knn"):
        scorer = build_scorer(name, ScoringContext(artifacts=artifacts))
        assert scorer.name == name
        assert scorer.needs_generated is get_method(name).needs_generated


def test_with_threshold_keeps_the_methods_own_rule_in_the_reason():
    result = ScoreResult(np.array([0.2, 0.7]), 0.5, "majority vote")
    moved = result.with_threshold(0.1)
    assert moved.labels.tolist() == [True, True]
    assert moved.threshold_reason == (
        "threshold 0.1 given in the request; the method's own rule: majority vote"
    )
    assert result.threshold == 0.5 and result.labels.tolist() == [False, True]


def test_models_lists_missing_artifacts_and_unknown_manifest_entries(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    assert {r["method"]: r["status"] for r in ModelArtifacts(models).load().describe()} == {
        "reference": "built-in",
        "phash": "built-in",
        "cnn": "missing",
        "sift_knn": "missing",
        "embedding": "missing",  # the copy-detection embedding (not a /classify method)
    }
    entry = {"method": "retired", "name": "old", "version": 1, "file": "old.bin", "sha256": ""}
    (models / "manifest.json").write_text(json.dumps({"models": [entry]}))
    rows = {r["method"]: r for r in ModelArtifacts(models).load().describe()}
    assert "rebuild-models" in rows["cnn"]["detail"] and rows["cnn"]["available"] is False
    assert rows["retired"]["status"] == "error" and "unknown method" in rows["retired"]["detail"]
    assert rows["retired"]["available"] is False
