"""GET /metrics: this process's counters in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

router = APIRouter(tags=["health"])

#: The exposition format's media type without its parameters (an OpenAPI content key).
TEXT_FORMAT = CONTENT_TYPE_LATEST.split(";")[0]
EXAMPLE = 'memaudit_images_hashed_total{hash_kind="phash"} 500.0\n'


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    response_class=Response,
    responses={
        200: {
            "description": "requests and latencies per route, images hashed and embedded, "
            "files rejected, search time, models and their execution providers, and the "
            "process's memory and CPU (scrape each replica)",
            "content": {TEXT_FORMAT: {"example": EXAMPLE}},
        }
    },
)
def get_metrics() -> Response:
    """Counters since this process started; needs a read key when keys are configured."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
