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

#: A real answer (reference v6, SQLite): 20 used and 20 unused synthetic phantoms
#: (app.training.synthetic.phantom seeds 0-19 named used_*, 500-519 named real_0020-0039;
#: 256 px), 60 images of simulated_generator(used, 60, seed=3, copy_share=0.8); POST
#: /classify with the set and the batch's ids; two used images and one unused of the 40 shown,
#: their evidence lists cut short (each real image names up to 3).
CLASSIFICATION: dict = {
    "classification_id": 1,
    "method": "reference",
    "real_set_id": 1,
    "real_set_name": "lung-window training candidates",
    "batch_id": 1,
    "threshold": 1.0,
    "threshold_reason": "used when any evidence is beyond what this real set's images show "
    "each other (false-alarm budget 5% shared by 3 evidences, each null bar at its 98.3% "
    "quantile): the generated batch holds verified copies of the image (summed SIFT/RANSAC "
    "inlier margins above 10, at most 20 per generated image, reach 30); or its 2nd most "
    "similar generated image by the copy-detection embedding (the rank that makes a batch of "
    "60 comparable with the 39 other real images) is more similar than the real images' "
    "nearest other real image at that quantile (bar 0.951, null median 0.899); or it draws "
    "more of the batch's nearest-neighbour votes, corrected for hubness (CSLS), than the real "
    "images draw from 60 real voters (each real image voting over the others, as evenly as "
    "that count allows; vote bar 2.84), the votes weighted by how close the batch sits to the "
    "real set (0.71: the mean rank of its images' similarity to their nearest real image "
    "among the real images' similarities to their nearest other real image, divided by the "
    "real images' own mean rank; at most 1; so a real image needs 4.03 votes). Score = the "
    "largest evidence, each scaled so 1.0 is its bar. SIFT/RANSAC checked 59 generated "
    "images: each real image's 16 most similar "
    "by thumbnail correlation, 4 ranks at a time until its copy evidence reaches 1 (copy "
    "evidence above that is a lower bound)",
    "real_count": 40,
    "generated_count": 60,
    "used_count": 10,
    "created_at": "2026-11-28T03:08:04.981651Z",
    "elapsed_seconds": 1.668,
    "models": [
        {"name": "reference-auditor", "version": "6", "sha256": "", "provider": None},
        {
            "name": "memaudit-copy-embedding",
            "version": "1",
            "sha256": "46af2d5a410c629987f6cefa0ac974193bd5c6ca5dc1ea6378d748ec23ce3c02",
            "provider": "CPUExecutionProvider",
        },
    ],
    "results": [
        {
            "filename": "used_0001.png",
            "score": 1.0965,
            "label": "used",
            "components": {
                "copy_evidence": 0.3333,
                "vote_evidence": 0.5124,
                "best_inliers": 17.0,
                "embedding_evidence": 1.0965,
                "best_similarity": 0.9883,
            },
            "evidence": [
                {
                    "generated": "generated_0021.png",
                    "similarity": 0.9542,
                    "ncc": 0.8383,
                    "phash_distance": 116,
                    "inliers": 17,
                    "verified_copy": True,
                },
                {
                    "generated": "generated_0029.png",
                    "similarity": 0.9563,
                    "ncc": 0.9199,
                    "phash_distance": 94,
                    "inliers": 13,
                    "verified_copy": True,
                },
                {
                    "generated": "generated_0039.png",
                    "similarity": 0.9883,
                    "ncc": 0.9677,
                    "phash_distance": 44,
                    "inliers": 16,
                    "verified_copy": False,
                },
            ],
        },
        {
            "filename": "used_0003.png",
            "score": 1.5873,
            "label": "used",
            "components": {
                "copy_evidence": 0.1667,
                "vote_evidence": 0.8096,
                "best_inliers": 21.0,
                "embedding_evidence": 1.5873,
                "best_similarity": 0.9827,
            },
            "evidence": [
                {
                    "generated": "generated_0042.png",
                    "similarity": 0.9757,
                    "ncc": 0.8822,
                    "phash_distance": 70,
                    "inliers": 19,
                    "verified_copy": True,
                },
                {
                    "generated": "generated_0055.png",
                    "similarity": 0.9827,
                    "ncc": 0.911,
                    "phash_distance": 74,
                    "inliers": 21,
                    "verified_copy": True,
                },
            ],
        },
        {
            "filename": "real_0039.png",
            "score": 0.4893,
            "label": "unused",
            "components": {
                "copy_evidence": 0.0,
                "vote_evidence": 0.4893,
                "best_inliers": 9.0,
                "embedding_evidence": -0.3096,
                "best_similarity": 0.8857,
            },
            "evidence": [
                {
                    "generated": "generated_0049.png",
                    "similarity": 0.8857,
                    "ncc": 0.8196,
                    "phash_distance": 110,
                    "inliers": None,
                    "verified_copy": False,
                },
            ],
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
