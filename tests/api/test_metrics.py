"""GET /metrics: Prometheus text that counts what the API really did."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import file_parts, real_images, register


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_requests_images_rejections_and_search(client):
    before = scrape(client)
    real_set = register(client, real_images(6), name="metrics")
    generated = real_images(4, offset=100)
    generated["broken.png"] = b"not an image"
    response = client.post(
        "/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(generated)
    )
    assert response.status_code == 200, response.text
    assert client.get(f"/match/{response.json()['batch_id']}").status_code == 200
    assert client.get("/no/such/path/12345").status_code == 404
    after = scrape(client)

    # Metrics are per process (every app of the test session adds to them): compare deltas.
    assert delta(before, after, "memaudit_images_hashed_total", hash_kind="phash") == 10
    assert delta(before, after, "memaudit_files_rejected_total") == 1
    requests = "memaudit_http_requests_total"
    assert delta(before, after, requests, method="POST", route="/real-sets", status="2xx") == 1
    assert delta(before, after, requests, method="POST", route="/match", status="2xx") == 1
    route = "/match/{batch_id}"
    assert delta(before, after, requests, method="GET", route=route, status="2xx") == 1
    # A URL no route matches is counted under one label, never under its own path.
    assert delta(before, after, requests, method="other", route="unmatched", status="4xx") == 1
    assert not any("12345" in str(key) for key in after)
    seconds = "memaudit_http_request_duration_seconds_count"
    assert delta(before, after, seconds, method="POST", route="/match") == 1
    for stage in ("phash", "copy_of"):
        assert delta(before, after, "memaudit_search_duration_seconds_count", stage=stage) == 1
    # The shipped artifacts loaded at start, each with the provider it runs on.
    loaded = {
        dict(labels)["method"]: dict(labels)["provider"]
        for (name, labels), value in after.items()
        if name == "memaudit_model_loaded" and value == 1 and dict(labels)["status"] == "loaded"
    }
    assert loaded["embedding"] == "CPUExecutionProvider"
    assert ("process_resident_memory_bytes", ()) in after
