"""The model artifacts in ``models/``: manifest, SHA-256 verification, loading.

An artifact is loaded only if its file's SHA-256 equals the manifest's; otherwise it is
refused and reported (GET /models) with the reason. Nothing uploaded is ever unpickled.
Which method an artifact serves, and how its file becomes a scorer, says the method table
(app.scoring.methods); artifacts that serve other parts of memaudit and are no /classify
method (the copy-detection embedding) are named in ``AUXILIARY_MODELS`` below, keyed by the
manifest's ``method`` like the others, and go through the same verification.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.scoring.base import ArtifactScorer, ModelInfo
from app.scoring.methods import ScoringMethod, all_methods, get_method, method_names
from app.search.copies import model_tag

if TYPE_CHECKING:
    from app.scoring.embedding import EmbeddingModel

log = logging.getLogger("memaudit.models")
MANIFEST = "manifest.json"
#: Status of a method that needs no artifact: it is always available.
BUILT_IN = "built-in"
#: GET /models `role` of the method table's rows.
SCORING_ROLE = "membership scoring method"


@dataclass(frozen=True)
class AuxiliaryModel:
    """A verified artifact that is not a /classify method: what it is and how it loads."""

    role: str
    description: str
    #: (artifact, info, want_cuda=...) -> the loaded model (it has execution_provider and
    #: load_note, as an ArtifactScorer).
    load: Callable[..., Any]


def _load_embedding(artifact: Path, info: ModelInfo, *, want_cuda: bool) -> EmbeddingModel:
    from app.scoring.embedding import EmbeddingModel

    return EmbeddingModel(artifact, info, want_cuda=want_cuda)


#: Manifest `method` -> artifact that other parts use (not offered by /classify).
AUXILIARY_MODELS: dict[str, AuxiliaryModel] = {
    "embedding": AuxiliaryModel(
        role="copy-detection embedding",
        description="learned copy-detection descriptor (models/embedding.onnx, onnxruntime): "
        "an edited copy of an image lies near it by cosine similarity",
        load=_load_embedding,
    )
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LoadedArtifact:
    """One manifest entry and what became of it."""

    method: str
    entry: dict
    scorer: ArtifactScorer | None  # or the auxiliary model (e.g. EmbeddingModel)
    status: str  # "loaded" | "refused" | "missing" | "error"
    detail: str | None = None


class ModelArtifacts:
    """The artifacts in ``models/`` that passed verification, loaded into scorers at start."""

    def __init__(self, models_dir: Path, want_cuda: bool = True) -> None:
        self.models_dir = Path(models_dir)
        self.want_cuda = want_cuda
        self.loaded: dict[str, LoadedArtifact] = {}

    def load(self) -> ModelArtifacts:
        manifest_path = self.models_dir / MANIFEST
        if not manifest_path.exists():
            wanted = [m.name for m in all_methods() if m.uses_artifact] + list(AUXILIARY_MODELS)
            log.warning("no model manifest at %s: %s unavailable", manifest_path, wanted)
            return self
        entries = json.loads(manifest_path.read_text()).get("models", [])
        for entry in entries:
            self.loaded[entry["method"]] = self._load_one(entry)
        return self

    def _load_one(self, entry: dict) -> LoadedArtifact:
        method = entry["method"]
        path = self.models_dir / entry["file"]
        try:
            auxiliary = AUXILIARY_MODELS.get(method)
            loader = auxiliary.load if auxiliary else get_method(method).load_artifact
        except ValueError as exc:
            return LoadedArtifact(method, entry, None, "error", str(exc))
        if loader is None:
            return LoadedArtifact(method, entry, None, "error", f"{method} loads no artifact")
        if not path.exists():
            return LoadedArtifact(method, entry, None, "missing", f"{path} does not exist")
        actual = file_sha256(path)
        if actual != entry.get("sha256"):
            detail = f"sha256 of {path.name} is {actual}, manifest says {entry.get('sha256')}"
            log.error("refusing model %s: %s", entry.get("name"), detail)
            return LoadedArtifact(method, entry, None, "refused", detail)
        info = ModelInfo(entry["name"], str(entry["version"]), actual)
        try:
            scorer = loader(path, info, want_cuda=self.want_cuda)
        except Exception as exc:
            log.exception("model %s failed to load", entry.get("name"))
            return LoadedArtifact(method, entry, None, "error", f"{type(exc).__name__}: {exc}")
        return LoadedArtifact(method, entry, scorer, "loaded", scorer.load_note)

    def scorer(self, method: str) -> ArtifactScorer:
        """The method's loaded scorer; LookupError saying why when there is none."""
        loaded = self.loaded.get(method)
        if loaded is None:
            raise LookupError(self._absent(method))
        if loaded.scorer is None:
            raise LookupError(f"the {method} model is {loaded.status}: {loaded.detail}")
        return loaded.scorer

    def embedding(self) -> EmbeddingModel:
        """The verified copy-detection embedding; LookupError saying why when there is none."""
        return self.scorer("embedding")  # type: ignore[return-value]

    def embedding_tag(self) -> str | None:
        """The verified embedding's tag (app.search.copies.model_tag), or None."""
        try:
            return model_tag(self.embedding().info.sha256)
        except LookupError:
            return None

    def embedding_file(self) -> Path | None:
        """The verified embedding's file (for processes that load it themselves), or None."""
        loaded = self.loaded.get("embedding")
        if loaded is None or loaded.scorer is None:
            return None
        return self.models_dir / loaded.entry["file"]

    def publish_metrics(self) -> None:
        """memaudit_model_loaded: one series per manifest entry, its status and provider."""
        from app import metrics

        for method, loaded in self.loaded.items():
            provider = getattr(loaded.scorer, "execution_provider", None) or "none"
            metrics.MODEL_LOADED.labels(method, loaded.status, provider).set(1)

    def _absent(self, method: str) -> str:
        return (
            f"no {method} model: {self.models_dir / MANIFEST} has none; "
            "run `memaudit rebuild-models` or `memaudit train`"
        )

    def describe(self) -> list[dict]:
        """Every method in the table, whether it can score now and why; then manifest entries
        for methods the table does not know (GET /models)."""
        rows = []
        for method in all_methods():
            loaded = self.loaded.get(method.name)
            if not method.uses_artifact:
                status, detail = BUILT_IN, None
            elif loaded is None:
                status, detail = "missing", self._absent(method.name)
            else:
                status, detail = loaded.status, loaded.detail
            rows.append(self._row(method.name, loaded, status, detail, method))
        for name, auxiliary in AUXILIARY_MODELS.items():
            loaded = self.loaded.get(name)
            if loaded is None:
                status = "missing"
                detail = (
                    f"{self.models_dir / MANIFEST} has no {name} entry: run `memaudit train {name}`"
                )
            else:
                status, detail = loaded.status, loaded.detail
            row = self._row(name, loaded, status, detail, None)
            rows.append({**row, "role": auxiliary.role, "description": auxiliary.description})
        for name, loaded in self.loaded.items():
            if name not in method_names() and name not in AUXILIARY_MODELS:
                rows.append(self._row(name, loaded, loaded.status, loaded.detail, None))
        return rows

    @staticmethod
    def _row(
        name: str,
        loaded: LoadedArtifact | None,
        status: str,
        detail: str | None,
        method: ScoringMethod | None,
    ) -> dict:
        entry = loaded.entry if loaded else {}
        scorer = loaded.scorer if loaded else None
        return {
            "method": name,
            "role": SCORING_ROLE if method else None,
            "description": method.description if method else None,
            "needs_generated": method.needs_generated if method else None,
            "available": status in (BUILT_IN, "loaded"),
            "name": entry.get("name"),
            "version": str(entry["version"]) if "version" in entry else None,
            "file": entry.get("file"),
            "sha256": entry.get("sha256"),
            "status": status,
            "detail": detail,
            "execution_provider": scorer.execution_provider if scorer else None,
            "created": entry.get("created"),
            "trained_on": entry.get("trained_on"),
            "metrics": entry.get("metrics", {}),
        }


def record_artifact(
    models_dir: Path,
    *,
    method: str,
    name: str,
    version: str,
    file: str,
    trained_on: str,
    metrics: dict,
    extra: dict | None = None,
) -> dict:
    """Add or replace a manifest entry for an artifact just written to ``models_dir/file``;
    ``extra``: further keys of the entry (e.g. the embedding's role and training record)."""
    models_dir = Path(models_dir)
    manifest_path = models_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entries = [e for e in manifest.get("models", []) if e.get("method") != method]
    entry = {
        "method": method,
        "name": name,
        "version": version,
        "file": file,
        "sha256": file_sha256(models_dir / file),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "trained_on": trained_on,
        "metrics": metrics,
        **(extra or {}),
    }
    entries.append(entry)
    entries.sort(key=lambda e: e["method"])
    manifest_path.write_text(json.dumps({"models": entries}, indent=2) + "\n")
    return entry
