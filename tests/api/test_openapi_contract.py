"""The published contract says what the code does: every field described, the multipart forms
documented from the same models that validate them, examples that are valid answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api import examples, forms, schemas
from app.config import Settings
from app.main import create_app

#: Multipart endpoints and the form model that validates and documents each.
FORMS = {
    ("/real-sets", "post"): forms.NewSetForm,
    ("/real-sets/{real_set_id}/images", "post"): forms.AddImagesForm,
    ("/real-sets/{real_set_id}/hashes", "post"): forms.AddHashesForm,
    ("/match", "post"): forms.MatchForm,
    ("/classify", "post"): forms.ClassifyForm,
}


@pytest.fixture(scope="module")
def spec() -> dict:
    """The app's /openapi.json (building it needs no database)."""
    return create_app(Settings()).openapi()


def undescribed(schema: dict, where: str) -> Iterator[str]:
    """Paths of the properties under ``schema`` that have no description."""
    for name, prop in schema.get("properties", {}).items():
        if not prop.get("description"):
            yield f"{where}.{name}"


def test_every_request_and_response_field_is_described(spec):
    missing = [
        field
        for name, component in spec["components"]["schemas"].items()
        for field in undescribed(component, name)
    ]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            missing += [
                f"{where} parameter {p['name']}"
                for p in operation.get("parameters", [])
                if not p.get("description")
            ]
            for media, body in operation.get("requestBody", {}).get("content", {}).items():
                missing += list(undescribed(body["schema"], f"{where} {media}"))
    assert missing == []


def test_each_multipart_form_is_documented_from_its_model(spec):
    for (path, method), form in FORMS.items():
        body = spec["paths"][path][method]["requestBody"]["content"]["multipart/form-data"]
        documented = set(body["schema"]["properties"])
        files = {f.name for f in form.file_fields}
        assert documented == set(form.model_fields) | files, path
        for name in files:  # schemathesis and Swagger UI send file bytes for these
            prop = body["schema"]["properties"][name]
            assert prop.get("format", prop.get("items", {}).get("format")) == "binary", name
    classify = spec["paths"]["/classify"]["post"]["requestBody"]["content"]
    properties = classify["multipart/form-data"]["schema"]["properties"]
    assert properties["threshold"]["type"] == "number"  # it was missing from the docs
    assert set(classify["application/x-www-form-urlencoded"]["schema"]["properties"]) == set(
        forms.ClassifyForm.model_fields
    )
    match = spec["paths"]["/match"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert match["schema"]["required"] == ["real_set_id", "files"]
    assert match["schema"]["properties"]["real_summary"]["enum"] == ["all", "used", "none"]
    new_set = spec["paths"]["/real-sets"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert new_set["schema"]["properties"]["hash_size"]["enum"] == [8, 16]
    assert new_set["schema"]["properties"]["name"]["maxLength"] == forms.MAX_NAME_CHARS


def test_documented_rules_are_the_validated_ones(spec):
    """A value at a documented bound passes; one past it is refused, naming the field."""
    match = spec["paths"]["/match"]["post"]["requestBody"]["content"]["multipart/form-data"]
    threshold = match["schema"]["properties"]["threshold"]
    top = str(threshold["maximum"])
    assert forms.MatchForm.parse({"real_set_id": "1", "threshold": top}).threshold == int(top)
    with pytest.raises(Exception, match="threshold must be at most"):
        forms.MatchForm.parse({"real_set_id": "1", "threshold": str(int(top) + 1)})
    with pytest.raises(Exception, match="top_k must be at most 5, got 6"):
        forms.MatchForm.parse({"real_set_id": "1", "top_k": "6"}, max_top_k=5)
    with pytest.raises(Exception, match="form field 'real_set_id' is required"):
        forms.MatchForm.parse({"top_k": "2"})
    with pytest.raises(Exception, match="unknown form field"):
        forms.ClassifyForm.parse({"methd": "phash"})
    assert forms.ClassifyForm.parse({"threshold": " 2.5 "}).request().threshold == 2.5


def test_errors_are_documented_as_returned(spec):
    posts = {path: spec["paths"][path]["post"]["responses"] for path, _ in FORMS}
    for path, responses in posts.items():
        assert {"400", "413", "415", "422"} <= set(responses), path
    assert {"404", "409", "503"} <= set(posts["/classify"])
    error = spec["components"]["schemas"]["ErrorOut"]["properties"]["detail"]
    shapes = {
        branch.get("type") or branch.get("$ref", "").rsplit("/", 1)[-1] for branch in error["anyOf"]
    }
    assert shapes == {"string", "UploadProblem", "HashLinesProblem", "array"}
    for example in (
        examples.BAD_FIELD,
        examples.NO_USABLE_FILE,
        examples.BAD_HASH_LINES,
        examples.BAD_PARAMETER,
    ):
        schemas.ErrorOut.model_validate(example)


@pytest.mark.parametrize(
    ("model", "example"),
    [
        (schemas.RealSetCreated, examples.REAL_SET_CREATED),
        (schemas.HashesImported, examples.HASHES_IMPORTED),
        (schemas.MatchBatchOut, examples.MATCH_BATCH),
        (schemas.ClassificationOut, examples.CLASSIFICATION),
    ],
)
def test_post_examples_are_valid_answers(spec, model, example):
    assert model.model_validate(example).model_dump(mode="json")["created_at"]
    (documented,) = spec["components"]["schemas"][model.__name__]["examples"]
    assert model.model_validate(documented) == model.model_validate(example)  # nulls left out
    assert "string" not in str(example.values())  # not a generated placeholder


def test_a_bad_query_parameter_answers_as_documented(tmp_path):
    """FastAPI's own 422 (a list) is one of ErrorOut's shapes."""
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    with TestClient(create_app(settings)) as client:
        r = client.get("/match", params={"limit": "many"})
        assert r.status_code == 422
        detail = schemas.ErrorOut.model_validate(r.json()).detail
        assert isinstance(detail, list) and detail[0].loc == ["query", "limit"]
