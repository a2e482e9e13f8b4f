"""All runtime configuration, read once from the environment (one pydantic-settings class)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Service settings; every field can be set as MEMAUDIT_<FIELD> (DATABASE_URL has no prefix)."""

    model_config = SettingsConfigDict(env_prefix="MEMAUDIT_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Directory for the embedded SQLite database and spooled uploads.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "MEMAUDIT_DATABASE_URL"),
        description="SQLAlchemy URL; default sqlite:///<data_dir>/memaudit.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host:5432/db",
    )
    image_store_dir: Path | None = Field(
        default=None,
        description="Where uploaded image bytes are kept (content-addressed); "
        "default <data_dir>/images. Replicas of the API must share it.",
    )
    auto_migrate: bool = Field(
        default=True, description="Run `alembic upgrade head` when the service starts."
    )
    migrations_dir: Path = Field(
        default=REPO_ROOT / "migrations", description="Location of the Alembic scripts."
    )
    models_dir: Path = Field(
        default=REPO_ROOT / "models", description="Model artifacts and their manifest.json."
    )
    use_cuda: bool = Field(
        default=True,
        description="Ask onnxruntime for the CUDA execution provider (falls back to CPU, "
        "saying why, when it is not usable).",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")

    # Upload limits: every one is enforced per request with a clear 4xx or a per-file rejection.
    max_file_bytes: int = Field(
        default=50 * 1024 * 1024, description="Largest single uploaded file (or zip member)."
    )
    max_zip_bytes: int = Field(
        default=4 * 1024 * 1024 * 1024, description="Largest uploaded .zip archive."
    )
    max_files_per_request: int = Field(
        default=50_000,
        description="Most images (file parts plus zip members) one request may carry.",
    )
    max_fields_per_request: int = Field(default=100, description="Most non-file form fields.")
    max_image_pixels: int = Field(
        default=50_000_000, description="Largest decoded image, in pixels (decompression bombs)."
    )
    hash_workers: int | None = Field(
        default=None,
        ge=0,
        description="Worker processes that decode and hash uploads; 0 = in the request's "
        "thread; default: one per CPU core (at most 8).",
    )
    hash_batch_size: int = Field(
        default=256, description="Images decoded and hashed together; bounds memory per request."
    )
    max_pending_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Encoded image bytes one request holds while they wait to be hashed (and "
        "up to twice that in the hash workers): memory per request is bounded in bytes.",
    )
    max_hashes_per_request: int = Field(
        default=2_000_000,
        ge=1,
        description="Most `filename,phash` lines one 'hashes' upload may carry "
        "(about 70 bytes of memory each while the request is processed).",
    )
    max_hash_file_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1,
        description="Largest 'hashes' file (spooled to disk under data_dir, then parsed).",
    )

    # Access control (README "Security"): off until keys are configured.
    api_keys: SecretStr | None = Field(
        default=None,
        description="API keys, comma-separated, each `key` or `key:role` with role `read` "
        "(GET, /match, /classify) or `admin` (everything; the default). Unset: no keys needed.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A file of API keys, one `key` or `key:role` a line (`#` comments); "
        "read at start, added to MEMAUDIT_API_KEYS.",
    )
    docs_public: bool = Field(
        default=True,
        description="With API keys set, /docs, /redoc and /openapi.json stay open (false: "
        "they need a key too).",
    )
    cors_origins: str = Field(
        default="",
        description="Browser origins (comma-separated, e.g. https://viewer.example.org) "
        "allowed to call the API cross-site; empty: CORS off and cross-site POST/DELETE refused.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address the server listens on (`memaudit serve`, scripts/serve.sh and the "
        "container entrypoint set it); a public address without API keys is warned about.",
    )

    # Source matching.
    calibration_quantile: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Default /match threshold = this quantile of the set's real-vs-real "
        "nearest-neighbour Hamming distances.",
    )
    min_calibration_images: int = Field(
        default=10,
        description="Below this many real images the paper's threshold is used instead.",
    )
    max_top_k: int = Field(default=50, description="Largest `top_k` a /match request may ask.")
    index_min_images: int = Field(
        default=1_000_000,
        ge=1,
        description="Sets of at least this many images are searched through on-disk indices "
        "(pHash: exact within the threshold; beyond it, /match lists the nearest real images "
        "the index reached; copy_of: approximate embedding search) instead of brute force.",
    )
    index_dir: Path | None = Field(
        default=None,
        description="Where search indices are kept, one folder per set revision; default "
        "<data_dir>/indices. Replicas that share it share the indices.",
    )

    @field_validator("api_keys", "api_keys_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """Compose passes unset variables as empty strings: treat them as not given."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def effective_hash_workers(self) -> int:
        if self.hash_workers is not None:
            return self.hash_workers
        # Cores this process may run on (respects CPU sets/affinity, unlike cpu_count).
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return min(cores, 8) if cores > 1 else 0

    @property
    def effective_image_store_dir(self) -> Path:
        return self.image_store_dir or self.data_dir / "images"

    @property
    def effective_index_dir(self) -> Path:
        return self.index_dir or self.data_dir / "indices"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'memaudit.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
