"""The model artifacts in ``models/``: manifest, SHA-256 verification, loading.

An artifact is loaded only if its file's SHA-256 equals the manifest's; otherwise it is
refused and reported (GET /models) with the reason. Nothing uploaded is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.scoring.base import ModelInfo

log = logging.getLogger("memaudit.models")
MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LoadedModel:
    method: str
    entry: dict
    scorer: object | None
    status: str  # "loaded" | "refused" | "missing" | "error"
    detail: str | None = None


class ModelRegistry:
    def __init__(self, models_dir: Path, want_cuda: bool = True) -> None:
        self.models_dir = Path(models_dir)
        self.want_cuda = want_cuda
        self.models: dict[str, LoadedModel] = {}

    def load(self) -> ModelRegistry:
        manifest_path = self.models_dir / MANIFEST
        if not manifest_path.exists():
            log.warning("no model manifest at %s: cnn and sift_knn unavailable", manifest_path)
            return self
        entries = json.loads(manifest_path.read_text()).get("models", [])
        for entry in entries:
            self.models[entry["method"]] = self._load_one(entry)
        return self

    def _load_one(self, entry: dict) -> LoadedModel:
        method = entry["method"]
        path = self.models_dir / entry["file"]
        if not path.exists():
            return LoadedModel(method, entry, None, "missing", f"{path} does not exist")
        actual = file_sha256(path)
        if actual != entry.get("sha256"):
            detail = f"sha256 of {path.name} is {actual}, manifest says {entry.get('sha256')}"
            log.error("refusing model %s: %s", entry.get("name"), detail)
            return LoadedModel(method, entry, None, "refused", detail)
        info = ModelInfo(entry["name"], str(entry["version"]), actual)
        try:
            if method == "cnn":
                from app.scoring.cnn import CnnScorer

                scorer = CnnScorer(path, info, want_cuda=self.want_cuda)
                detail = scorer.fallback_reason
            elif method == "sift_knn":
                from app.scoring.sift_knn import SiftKnnScorer

                scorer = SiftKnnScorer(path, info)
                detail = None
            else:
                return LoadedModel(method, entry, None, "error", f"unknown method {method!r}")
        except Exception as exc:
            log.exception("model %s failed to load", entry.get("name"))
            return LoadedModel(method, entry, None, "error", f"{type(exc).__name__}: {exc}")
        return LoadedModel(method, entry, scorer, "loaded", detail)

    def scorer(self, method: str):
        loaded = self.models.get(method)
        if loaded is None:
            raise LookupError(
                f"no {method} model: {self.models_dir / MANIFEST} has none; "
                "run `memaudit rebuild-models` or `memaudit train`"
            )
        if loaded.scorer is None:
            raise LookupError(f"the {method} model is {loaded.status}: {loaded.detail}")
        return loaded.scorer

    def describe(self) -> list[dict]:
        out = []
        for method, m in sorted(self.models.items()):
            provider = getattr(getattr(m.scorer, "info", None), "provider", None)
            out.append(
                {
                    "method": method,
                    "name": m.entry.get("name"),
                    "version": str(m.entry.get("version")),
                    "file": m.entry.get("file"),
                    "sha256": m.entry.get("sha256"),
                    "status": m.status,
                    "detail": m.detail,
                    "execution_provider": provider
                    or ("CPU (scikit-learn)" if method == "sift_knn" and m.scorer else None),
                    "created": m.entry.get("created"),
                    "trained_on": m.entry.get("trained_on"),
                    "metrics": m.entry.get("metrics", {}),
                }
            )
        return out


def record_artifact(
    models_dir: Path,
    *,
    method: str,
    name: str,
    version: str,
    file: str,
    trained_on: str,
    metrics: dict,
) -> dict:
    """Add or replace a manifest entry for an artifact just written to ``models_dir/file``."""
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
    }
    entries.append(entry)
    entries.sort(key=lambda e: e["method"])
    manifest_path.write_text(json.dumps({"models": entries}, indent=2) + "\n")
    return entry
