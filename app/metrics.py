"""This process's Prometheus metrics (served at GET /metrics by app/api/routes/metrics.py).

One set per process, in prometheus-client's default registry, beside its process collectors
(memory, CPU, open files): each replica is its own scrape target. Hash workers are other
processes, so images are counted here, in the API process, when their results come back.
Labels are bounded: routes by their template (`/match/{batch_id}`), status by its class.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Request and audit latencies: from a health probe (ms) to a 100,000-image audit (minutes).
SECONDS_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600)

REQUESTS = Counter(
    "memaudit_http_requests",
    "HTTP requests answered, by method, route template and status class (2xx, 4xx, 5xx)",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "memaudit_http_request_duration_seconds",
    "Time from the request's start to the end of its answer, by method and route template",
    ["method", "route"],
    buckets=SECONDS_BUCKETS,
)
IMAGES_HASHED = Counter(
    "memaudit_images_hashed",
    "Uploaded images (and DICOM frames) decoded and fingerprinted, by fingerprint kind",
    ["hash_kind"],
)
IMAGES_EMBEDDED = Counter(
    "memaudit_images_embedded", "Uploaded images given a copy-detection descriptor"
)
FILES_REJECTED = Counter(
    "memaudit_files_rejected", "Uploaded files refused with a reason (not an image, too large, ...)"
)
SEARCH_SECONDS = Histogram(
    "memaudit_search_duration_seconds",
    "Time to search a generated batch against its real set: pHash candidates within the "
    "threshold, copy attribution by the embedding, and its geometric verification",
    ["stage"],
    buckets=SECONDS_BUCKETS,
)
MODEL_LOADED = Gauge(
    "memaudit_model_loaded",
    "1 per model artifact in models/manifest.json, with its load status and the execution "
    "provider its session really runs on",
    ["method", "status", "provider"],
)
JOBS_ENDED = Counter(
    "memaudit_jobs_ended", "Jobs this process ran to an end, by how they ended", ["state"]
)
JOBS_ACTIVE = Gauge(
    "memaudit_jobs_active", "Jobs this process holds now: queued or running", ["state"]
)
