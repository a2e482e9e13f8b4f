"""Answers of a real run (a 40-image phantom set, 5 generated images, 3 of them copies),
shown as the examples of /docs; tests/test_openapi_contract.py validates each against its
model. Lists are cut to a few entries."""

from __future__ import annotations

REAL_SET_CREATED: dict = {
    "id": 1,
    "name": "lung-window training candidates",
    "hash_kind": "phash",
    "hash_size": 16,
    "image_count": 40,
    "revision": 1,
    "calibrated_threshold": 50,
    "calibration": {
        "method": "real-vs-real nearest-neighbour quantile",
        "threshold": 50,
        "quantile": 0.05,
        "n_images": 40,
        "n_queries": 40,
        "nn_distance_percentiles": {"p0": 74, "p5": 74, "p25": 80, "p50": 84, "p75": 88, "p95": 92},
    },
    "created_at": "2026-11-27T16:59:48.072861Z",
    "updated_at": "2026-11-27T16:59:48.072873Z",
    "images": [
        {
            "id": 1,
            "filename": "used_0000.png",
            "phash": "c11931b31fa3cbd56017973381bb5891df05ab563c1bd53a21a99ad0d7c0aad7",
            "sha256": "d74e0740fc2452b5fe193105940725c3676d6f1c28126c8064b39c0170444d34",
            "width": 128,
            "height": 128,
        },
        {
            "id": 2,
            "filename": "used_0001.png",
            "phash": "9d0f39f062a086733c0b13f8e4be38e5c3848ff0de1b41aad83e39f0e9a02ff1",
            "sha256": "9e47573c13594467f4a859dc3fcdff4257d442b58d0c913494541bba306df98a",
            "width": 128,
            "height": 128,
        },
    ],
    "duplicates": [{"filename": "copy_of_0003.png", "duplicate_of": "real_0003.png"}],
    "rejected": [
        {"filename": "notes.txt", "reason": "not an image (PNG, JPEG, BMP or TIFF expected)"}
    ],
}

HASHES_IMPORTED: dict = {
    "id": 2,
    "name": "hashes from the PACS export",
    "hash_kind": "phash",
    "hash_size": 16,
    "image_count": 2,
    "revision": 1,
    "calibrated_threshold": None,
    "calibration": None,
    "created_at": "2026-11-27T16:59:48.132768Z",
    "updated_at": "2026-11-27T16:59:48.132777Z",
    "imported": 2,
    "header": True,
}

MATCH_BATCH: dict = {
    "batch_id": 1,
    "real_set_id": 1,
    "real_set_name": "lung-window training candidates",
    "real_set_revision": 1,
    "hash_kind": "phash",
    "hash_size": 16,
    "threshold": 50,
    "threshold_source": "calibrated",
    "threshold_reason": "calibrated on this set's real-vs-real distances: at most 5% of its 40 "
    "real images have another real image within 50 bits (median nearest-real "
    "distance 84; never above the paper's threshold), so a generated image "
    "that close is called a copy",
    "top_k": 2,
    "generated_count": 5,
    "matched_count": 3,
    "used_count": 3,
    "created_at": "2026-11-27T16:59:48.252089Z",
    "elapsed_seconds": 0.015,
    "matches": [
        {
            "generated": "generated_0000.png",
            "phash": "c11931b31faacbd76017953381bb5891df05aa563c1bd53a21a992d0d7c4aadf",
            "source": "used_0000.png",
            "distance": 8,
            "candidates": [
                {"filename": "used_0000.png", "distance": 8},
                {"filename": "real_0010.png", "distance": 86},
            ],
        },
        {
            "generated": "generated_0001.png",
            "phash": "9d0f39f062a086733c0f13f8e4be38e5c3848ff0de1b41aad83e39f0e9a02ef1",
            "source": "used_0001.png",
            "distance": 2,
            "candidates": [
                {"filename": "used_0001.png", "distance": 2},
                {"filename": "real_0008.png", "distance": 80},
            ],
        },
        {
            "generated": "generated_0002.png",
            "phash": "81f84ead2ec4b132613a8c4cc6a1cc339b1732e83979366771a1e733668f9b7a",
            "source": "used_0002.png",
            "distance": 10,
            "candidates": [
                {"filename": "used_0002.png", "distance": 10},
                {"filename": "real_0011.png", "distance": 82},
            ],
        },
        {
            "generated": "generated_0003.png",
            "phash": "d9feffff7ee4eb66211b90a092a000508e034028692aa49530e4fe5af6daffa5",
            "source": None,
            "distance": 92,
            "candidates": [
                {"filename": "real_0020.png", "distance": 92},
                {"filename": "real_0017.png", "distance": 98},
            ],
        },
        {
            "generated": "generated_0004.png",
            "phash": "85ac38f07f17c3e3612c1c74d79538e18a4a673565ed36d822969863935fcd26",
            "source": None,
            "distance": 90,
            "candidates": [
                {"filename": "real_0025.png", "distance": 90},
                {"filename": "real_0022.png", "distance": 94},
            ],
        },
    ],
    "real_summary_scope": "used",
    "real_summary": [
        {
            "filename": "used_0000.png",
            "matched_count": 1,
            "min_distance": 8,
            "closest_generated": "generated_0000.png",
            "verdict": "used",
        },
        {
            "filename": "used_0001.png",
            "matched_count": 1,
            "min_distance": 2,
            "closest_generated": "generated_0001.png",
            "verdict": "used",
        },
        {
            "filename": "used_0002.png",
            "matched_count": 1,
            "min_distance": 10,
            "closest_generated": "generated_0002.png",
            "verdict": "used",
        },
    ],
    "duplicates": [],
    "rejected": [],
}

CLASSIFICATION: dict = {
    "classification_id": 1,
    "method": "reference",
    "real_set_id": 1,
    "real_set_name": "lung-window training candidates",
    "batch_id": 1,
    "threshold": 1.0,
    "threshold_reason": "used when the generated batch holds verified copies of the image (summed "
    "SIFT/RANSAC inlier margins above 10, at most 20 per generated image, "
    "reach 30) or when it draws more of the batch's nearest-neighbour votes "
    "than 95% of the real images draw from each other (vote bar 3.36, from "
    "this real set); score = the larger of the two evidences, each scaled so "
    "1.0 is its bar. SIFT/RANSAC checked 5 generated images: each real "
    "image's 16 most similar by thumbnail correlation, 4 ranks at a time "
    "until its copy evidence reaches 1 (copy evidence above that is a lower "
    "bound)",
    "real_count": 40,
    "generated_count": 5,
    "used_count": 5,
    "created_at": "2026-11-27T16:59:50.411482Z",
    "elapsed_seconds": 2.129,
    "models": [{"name": "reference-auditor", "version": "3", "sha256": "", "provider": None}],
    "results": [
        {
            "filename": "used_0000.png",
            "score": 2.3791,
            "label": "used",
            "components": {"copy_evidence": 0.6667, "vote_evidence": 2.3791, "best_inliers": 70.0},
        },
        {
            "filename": "used_0001.png",
            "score": 2.3791,
            "label": "used",
            "components": {"copy_evidence": 0.6667, "vote_evidence": 2.3791, "best_inliers": 37.0},
        },
        {
            "filename": "real_0039.png",
            "score": 0.0,
            "label": "unused",
            "components": {"copy_evidence": 0.0, "vote_evidence": 0.0, "best_inliers": 0.0},
        },
    ],
    "rejected": [],
}

NO_USABLE_FILE: dict = {
    "detail": {
        "message": "none of the uploaded files is a usable generated image",
        "rejected": [
            {"filename": "x.png", "reason": "not an image (PNG, JPEG, BMP or TIFF expected)"}
        ],
        "duplicates": [],
    }
}

BAD_HASH_LINES: dict = {
    "detail": {
        "message": "1 line(s) of 'hashes' are invalid; nothing was stored. Expected lines "
        "`filename,phash_hex` (an optional first line `filename,phash`), the "
        "hex exactly as str(imagehash.phash(image, hash_size)) prints it.",
        "error_count": 1,
        "errors": [
            {"line": 1, "error": "phash has 2 characters; hash_size 16 needs 64 hex digits"}
        ],
    }
}

BAD_PARAMETER: dict = {
    "detail": [
        {
            "type": "int_parsing",
            "loc": ["path", "batch_id"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "abc",
        }
    ]
}

BAD_FIELD: dict = {"detail": "top_k must be at least 1, got 0"}

#: GET /jobs/{id} of a 100,000-image /match while it hashes (bench/bench_jobs.py).
JOB_RUNNING = {
    "id": "3f2c9a0e8b7d4c1fa6e5d4c3b2a19087",
    "kind": "match",
    "state": "running",
    "progress": {
        "stage": "hashing",
        "done": 41200,
        "total": 100000,
        "upload_bytes": 3630000000,
        "upload_read": 3630000000,
    },
    "result": None,
    "error": None,
    "rejected": [],
    "duplicates": [],
    "attempts": 1,
    "created_at": "2026-11-27T22:28:50.120Z",
    "started_at": "2026-11-27T22:28:50.131Z",
    "finished_at": None,
}
