"""/models: every scoring method, whether it can run now, and the verified model artifacts."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import ModelsDep

router = APIRouter(prefix="/models", tags=["models"])


class ScoringMethodOut(BaseModel):
    """One row of GET /models: a method of the table, or a manifest entry it does not know."""

    method: str = Field(
        description="The method's name, as POST /classify's `method` takes it.", examples=["cnn"]
    )
    role: str | None = Field(
        default=None,
        description="`membership scoring method` (a /classify method), `copy-detection "
        "embedding` (a verified model other parts use; not a /classify method), or null "
        "(a manifest entry memaudit does not know).",
        examples=["membership scoring method"],
    )
    description: str | None = Field(
        description="What the method does (null: a manifest entry for an unknown method).",
        examples=["the paper's CNN on the real image alone (models/cnn.onnx, onnxruntime)"],
    )
    needs_generated: bool | None = Field(
        description="It compares the real images with generated ones (a batch_id or "
        "generated_files).",
        examples=[False],
    )
    available: bool = Field(
        description="Loaded and usable now (for a scoring method: POST /classify can use it).",
        examples=[True],
    )
    name: str | None = Field(description="The model artifact, if any.", examples=["memaudit-cnn"])
    version: str | None = Field(description="The artifact's version.", examples=["1"])
    file: str | None = Field(
        description="The artifact's file under the models directory.", examples=["cnn.onnx"]
    )
    sha256: str | None = Field(
        default=None,
        description="SHA-256 the manifest pins the artifact file to (null: no artifact).",
        examples=["7a5088402242e364f3713d65397c118bafdd0b62b74bcd6f0ac283d32a493ec6"],
    )
    status: str = Field(
        description="`built-in` (needs no artifact), `loaded`, `refused` (sha256 differs from "
        "the manifest), `missing` (no file, or no manifest entry), `error`.",
        examples=["loaded"],
    )
    detail: str | None = Field(
        description="Why not available, or why CUDA is not used.", examples=[None]
    )
    execution_provider: str | None = Field(
        description="What the model really runs on (onnxruntime's provider for the CNN).",
        examples=["CPUExecutionProvider"],
    )
    created: str | None = Field(
        default=None,
        description="When the artifact was built (manifest).",
        examples=["2026-11-25T19:47:44+00:00"],
    )
    trained_on: str | None = Field(
        default=None,
        description="What the artifact was trained on (manifest).",
        examples=["synthetic phantoms (app/training/synthetic.py, seed 0): 80 used, 80 unused"],
    )
    metrics: dict = Field(
        default_factory=dict,
        description="Metrics recorded with the artifact at build time (manifest).",
        examples=[{"train_loss": 0.636, "train_accuracy": 0.7375, "epochs": 10}],
    )


@router.get(
    "", response_model=list[ScoringMethodOut], summary="Scoring methods, model artifacts, providers"
)
def list_models(models: ModelsDep):
    return models.describe()
