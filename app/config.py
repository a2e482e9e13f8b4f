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
    gc_min_age_seconds: float = Field(
        default=7200,
        ge=0,
        description="Sweeps (at start, periodic, `memaudit gc`) remove unreferenced image "
        "files and partial writes left alone this long (younger ones may belong to an upload "
        "still running in another process; uploads may take an hour, so two).",
    )
    gc_interval_seconds: float = Field(
        default=3600,
        ge=0,
        description="The server sweeps the image store at start and then this often (0: at "
        "start only).",
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
    job_max_files: int = Field(
        default=200_000,
        ge=1,
        description="Most images one request run as a job may carry (jobs run "
        "MEMAUDIT_JOB_WORKERS at a time, so they may be larger than concurrent requests).",
    )
    max_fields_per_request: int = Field(default=100, description="Most non-file form fields.")
    # 4096 x 4096: a CT slice is 512 x 512 (0.26 Mpx), a digital radiograph or mammogram
    # at most ~4000 x 5000 of 16-bit pixels, a multi-frame DICOM is counted frames x rows x
    # columns (64 CT slices of 512 x 512 fit). The former 50 Mpx default admitted ~190 CT
    # slices' worth per image: 3 MB of 7000 x 7000 PNGs cost 21 s of both cores.
    max_image_pixels: int = Field(
        default=4096 * 4096,
        ge=1,
        description="Largest decoded image (a multi-frame DICOM: all its frames), in pixels: "
        "bounds the CPU and memory one small compressed file can cost (decompression bombs).",
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
    max_process_pending_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Encoded image bytes all uploads of one API process together hold while "
        "they wait to be hashed: an upload that would go over waits (reading no more of its "
        "body) until others have been hashed, and is answered 503 with Retry-After if that "
        "takes longer than upload_budget_wait_s.",
    )
    upload_budget_wait_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest an upload waits for max_process_pending_bytes to have room.",
    )
    max_listed_rejections: int = Field(
        default=1000,
        ge=1,
        description="Rejected files listed one by one in an answer (and kept with a batch); "
        "the rest are summed up per reason (a 100,000-member zip of bad files once produced "
        "an 8 MB error body).",
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

    # Front door (app.api.frontdoor; `memaudit serve` and the container apply them): what one
    # connection may cost before and while a route runs.
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest request head (request line plus headers); larger: 431. A 96 MiB "
        "header once took 14 s and stalled /health for 12.8 s.",
    )
    max_header_count: int = Field(default=100, ge=1, description="Most request headers; more: 431.")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest a connection may take to send a complete request head (also a "
        "new connection that sends nothing); then 408 and the connection is closed.",
    )
    body_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a request body may stall (no bytes); then 408, the connection "
        "is closed and nothing is stored.",
    )
    min_body_rate: float = Field(
        default=1024.0,
        ge=0,
        description="Slowest average body rate, bytes/s, checked once the request has waited "
        "body_idle_timeout_s for its body in all (a body that trickles is cut off with 408).",
    )
    keep_alive_timeout_s: int = Field(
        default=5, ge=1, description="Idle keep-alive connections are closed after this long."
    )
    max_connections: int | None = Field(
        default=500,
        ge=1,
        description="Open connections (and requests in progress) per process before new "
        "requests are answered 503 (uvicorn limit_concurrency); unset: no limit.",
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
    match_verify_max_images: int = Field(
        default=1000,
        ge=0,
        description="/match with `verify=auto` (the default) checks each `copy_of` candidate "
        "geometrically (SIFT + RANSAC, about 10 ms per generated image per core) when the batch "
        "has at most this many generated images; larger batches are decided by the embedding "
        "bar alone (`verify=always` checks them anyway).",
    )
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

    job_auto_bytes: int = Field(
        default=1 << 30,
        ge=0,
        description="POST /real-sets, /match, /filter and /classify requests whose declared "
        "body (Content-Length) is larger than this run as jobs even without "
        "`Prefer: respond-async` (202 + Location of the job); 0: only when asked.",
    )
    job_max_body_bytes: int = Field(
        default=64 << 30,
        ge=1,
        description="Largest request body a job stores (under <data_dir>/jobs until it ends).",
    )
    job_workers: int = Field(
        default=1, ge=1, description="Jobs one server process runs at once (others queue)."
    )
    job_max_queued: int = Field(
        default=100,
        ge=1,
        description="Jobs one server process holds (queued or running); more: 503, retry later.",
    )
    job_min_free_bytes: int = Field(
        default=2 << 30,
        ge=0,
        description="Disk space kept free where jobs' uploads are stored: an upload that would "
        "leave less is refused (503) before and while it is stored.",
    )
    job_heartbeat_s: float = Field(
        default=2.0,
        gt=0,
        description="How often a process writes its jobs' progress (and reads cancellations).",
    )
    job_stale_s: float = Field(
        default=60.0,
        gt=0,
        description="A queued or running job whose process has not written for this long "
        "(it died, or was restarted) is run again from its stored upload by any process.",
    )
    job_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Runs an interrupted job may begin before it is failed (a job that kills "
        "its process every time must not do so forever).",
    )
    job_keep_seconds: float = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="Finished jobs' records (state, progress, result link; not their results) "
        "are removed this long after they ended.",
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
    def effective_feature_store_dir(self) -> Path:
        """Features derived from the stored images live beside them (shared the same way)."""
        return self.effective_image_store_dir / "features"

    @property
    def effective_index_dir(self) -> Path:
        return self.index_dir or self.data_dir / "indices"

    @property
    def jobs_dir(self) -> Path:
        """Jobs' stored request bodies: beside the database, shared by replicas."""
        return self.data_dir / "jobs"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'memaudit.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
