"""`memaudit demo`: the whole audit on synthetic data, in one command.

Makes a small synthetic real set (half of it "used" to train a simulated generator that
copies some of its training images), registers it, matches the generated batch, classifies
the real images and writes both audit reports, against a running server (``--server``) or
one started in this process, and prints where to look.
"""

from __future__ import annotations

import argparse
import csv
import io
import socket
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import cv2

#: Small enough to run in seconds on a laptop, large enough to calibrate a threshold.
DEMO_USED, DEMO_UNUSED, DEMO_GENERATED, DEMO_SIDE = 24, 24, 80, 256


def make_demo_data(out: Path, seed: int = 7) -> dict[str, Path]:
    """Write real/, generated/ and labels.csv (``real,used``) under ``out``."""
    from app.training.synthetic import synthetic_devset

    used, unused, generated = synthetic_devset(
        DEMO_USED, DEMO_UNUSED, DEMO_GENERATED, DEMO_SIDE, seed=seed
    )
    real_dir, gen_dir = out / "real", out / "generated"
    real_dir.mkdir(parents=True, exist_ok=True)
    gen_dir.mkdir(parents=True, exist_ok=True)
    labels = out / "labels.csv"
    # Interleave used and unused under neutral names, as a user's real set would be.
    rows = []
    for i in range(max(len(used), len(unused))):
        for img, is_used in ((used, 1), (unused, 0)):
            if i < len(img):
                name = f"real_{len(rows):04d}.png"
                cv2.imwrite(str(real_dir / name), img[i])
                rows.append((name, is_used))
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["real", "used"])
        writer.writerows(rows)
    for i, img in enumerate(generated):
        cv2.imwrite(str(gen_dir / f"generated_{i:04d}.png"), img)
    return {"real": real_dir, "generated": gen_dir, "labels": labels}


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return buffer.getvalue()


@contextmanager
def _local_server(data_dir: Path):
    """A memaudit server on a free loopback port, in this process (a thread)."""
    import uvicorn

    from app.config import Settings
    from app.main import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'demo.db'}",
        log_level="WARNING",  # the summary printed at the end is the demo's output
    )
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_demo(base_url: str, data: dict[str, Path], out: Path, api_key: str | None = None) -> dict:
    """Register, match, classify and fetch both reports; returns what was found."""
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=base_url, timeout=600, headers=headers) as client:

        def post(url: str, **kwargs) -> dict:
            response = client.post(url, **kwargs)
            response.raise_for_status()
            return response.json()

        real_set = post(
            "/real-sets",
            data={"name": "memaudit demo (synthetic)", "hash_size": "16"},
            files={"files": ("real.zip", _zip_folder(data["real"]), "application/zip")},
        )
        batch = post(
            "/match",
            data={"real_set_id": str(real_set["id"])},
            files={"files": ("generated.zip", _zip_folder(data["generated"]), "application/zip")},
        )
        classification = post(
            "/classify",
            data={"real_set_id": str(real_set["id"]), "batch_id": str(batch["batch_id"])},
        )
        labels = data["labels"].read_bytes()
        reports = {}
        for kind, ident in (
            ("match", batch["batch_id"]),
            ("classify", classification["classification_id"]),
        ):
            response = client.post(
                f"/{kind}/{ident}/report",
                files={"labels": ("labels.csv", labels, "text/csv")},
            )
            response.raise_for_status()
            path = out / f"{kind}-{ident}-report.html"
            path.write_text(response.text, encoding="utf-8")
            reports[kind] = path
    return {
        "real_set": real_set,
        "batch": batch,
        "classification": classification,
        "reports": reports,
    }


def _summary(result: dict, base_url: str, served: bool) -> str:
    batch, classification = result["batch"], result["classification"]
    lines = [
        f"registered real set {result['real_set']['id']}: "
        f"{result['real_set']['image_count']} images "
        f"(threshold {result['real_set'].get('calibrated_threshold')})",
        f"match batch {batch['batch_id']}: {batch['matched_count']} of "
        f"{batch['generated_count']} generated images given a real source by pHash, "
        f"{batch['used_count']} real images used",
        f"classification {classification['classification_id']} ({classification['method']}): "
        f"{classification['used_count']} of {classification['real_count']} real images "
        "labelled used",
        "",
        "reports (open in a browser; labels.csv was uploaded, so they show Table-1 metrics):",
        *(f"  {path}" for path in result["reports"].values()),
    ]
    if served:
        lines += [
            "",
            "while this server runs:",
            f"  {base_url}/docs",
            f"  {base_url}/match/{batch['batch_id']}?format=text",
            f"  {base_url}/match/{batch['batch_id']}/report",
            f"  {base_url}/classify/{classification['classification_id']}/report",
        ]
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = make_demo_data(out)
    print(f"synthetic data: {data['real']} (48 real), {data['generated']} (80 generated)")
    if args.server:
        result = run_demo(args.server.rstrip("/"), data, out, args.api_key)
        print(_summary(result, args.server.rstrip("/"), served=True))
        return 0
    with _local_server(out / "data") as base_url:
        result = run_demo(base_url, data, out, args.api_key)
        print(_summary(result, base_url, served=args.serve))
        if args.serve:
            print("\nserving; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the whole audit on synthetic data and write its reports",
        description="Makes a synthetic real set and a generated batch with known copies, "
        "registers, matches, classifies and writes both reports.",
    )
    demo.add_argument("--out", default="memaudit-demo", help="folder for the data and reports")
    demo.add_argument("--server", help="use this running server (default: start one here)")
    demo.add_argument("--api-key", help="API key for a server that requires one")
    demo.add_argument(
        "--serve", action="store_true", help="keep the local server running for a browser"
    )
    demo.set_defaults(func=cmd_demo)
