"""/models: which model artifacts are loaded, verified, and on which execution provider."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

router = APIRouter(prefix="/models", tags=["models"])


class LoadedModelOut(BaseModel):
    method: str = Field(examples=["cnn"])
    name: str | None = Field(examples=["memaudit-cnn"])
    version: str | None = Field(examples=["1"])
    file: str | None = Field(examples=["cnn.onnx"])
    sha256: str | None = None
    status: str = Field(
        description="`loaded`, `refused` (sha256 differs from the manifest), `missing`, `error`.",
        examples=["loaded"],
    )
    detail: str | None = Field(
        description="Why not loaded, or why CUDA is not used.", examples=[None]
    )
    execution_provider: str | None = Field(
        description="What the onnxruntime session really runs on.",
        examples=["CPUExecutionProvider"],
    )
    created: str | None = None
    trained_on: str | None = None
    metrics: dict = Field(default_factory=dict)


@router.get("", response_model=list[LoadedModelOut], summary="Model artifacts and providers")
def list_models(request: Request):
    return request.app.state.models.describe()
