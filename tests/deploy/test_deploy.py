"""Deployment files: compose structure, documented settings, and the image's Python
environment built from scratch and started against PostgreSQL (no Docker engine here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


class ComposeLoader(yaml.SafeLoader):
    """YAML loader that understands Compose's `!reset` / `!override` merge tags."""


ComposeLoader.add_constructor("!reset", lambda loader, node: "__reset__")
ComposeLoader.add_constructor(
    "!override", lambda loader, node: loader.construct_mapping(node, deep=True)
)


def load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)


def merge(base: dict, override: dict) -> dict:
    """Compose's merge of an override file (enough for our files)."""
    out = dict(base)
    for key, value in override.items():
        if value == "__reset__":
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def env_names() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if alias is not None:
            names.add(alias.choices[0])
        else:
            names.add(f"MEMAUDIT_{field.upper()}")
    return names


def test_gpu_compose_structure():
    compose = load("docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"api", "db"}
    db, api = services["db"], services["api"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v.startswith("pgdata:") for v in db["volumes"])
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert api["build"]["args"]["FLAVOR"] == "gpu"
    assert "@db:5432/" in api["environment"]["DATABASE_URL"]
    assert any(v.endswith(":/var/lib/memaudit") for v in api["volumes"])
    assert any(str(p).endswith(":8000") for p in api["ports"])
    assert set(compose["volumes"]) == {"pgdata", "memaudit-data"}


def test_cpu_compose_drops_the_gpu():
    merged = merge(load("docker-compose.yml"), load("compose.cpu.yaml"))
    api = merged["services"]["api"]
    assert "deploy" not in api
    assert api["build"]["args"] == {"FLAVOR": "cpu", "BASE_IMAGE": "ubuntu:24.04"}
    assert api["environment"]["MEMAUDIT_USE_CUDA"] == "false"
    assert api["depends_on"]["db"]["condition"] == "service_healthy"


def test_scale_compose_puts_replicas_behind_a_load_balancer():
    """`--scale api=N` needs the replicas off the host port, and nginx streaming uploads."""
    for base in (
        load("docker-compose.yml"),
        merge(load("docker-compose.yml"), load("compose.cpu.yaml")),
    ):
        merged = merge(base, load("compose.scale.yaml"))
        services = merged["services"]
        assert set(services) == {"api", "db", "lb"}
        api, lb = services["api"], services["lb"]
        assert "ports" not in api and "8000" in api["expose"]
        assert api["environment"]["MEMAUDIT_HASH_WORKERS"].startswith("${MEMAUDIT_HASH_WORKERS")
        assert "@db:5432/" in api["environment"]["DATABASE_URL"]  # shared PostgreSQL
        assert any(v.endswith(":/var/lib/memaudit") for v in api["volumes"])  # shared store
        assert lb["image"].startswith("nginx:")
        assert any(str(p).endswith(":8000") for p in lb["ports"])
        assert lb["depends_on"]["api"]["condition"] == "service_healthy"
        assert any(v.startswith("./docker/nginx.conf:") for v in lb["volumes"])
    conf = (ROOT / "docker" / "nginx.conf").read_text()
    for directive in (
        "resolver 127.0.0.11",  # Docker's DNS: one address per replica
        "set $api http://api:8000;",
        "proxy_pass $api;",  # re-resolved, so a later --scale is picked up
        "client_max_body_size 0;",
        "proxy_request_buffering off;",  # hash while the upload streams
    ):
        assert directive in conf
    nginx = shutil.which("nginx")
    if nginx is not None:  # syntax check where nginx is installed
        run = subprocess.run(
            [
                nginx,
                "-t",
                "-q",
                "-c",
                str(ROOT / "docker/nginx.conf"),
                "-p",
                str(ROOT),
                "-e",
                "stderr",
                "-g",
                "pid /dev/null;",
            ],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr


def test_every_setting_is_documented():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / ".env.example").read_text()
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    names = env_names() | set(re.findall(r"\$\{(MEMAUDIT_[A-Z_]+)", entrypoint))
    for name in sorted(names):
        assert f"`{name}`" in readme, f"{name} missing from README"
        assert name in example, f"{name} missing from .env.example"


def test_dockerfile_and_pins():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "nvidia/cuda:13.0.2-cudnn-runtime" in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert "EXPOSE 8000" in dockerfile and "HEALTHCHECK" in dockerfile
    assert "/health" in dockerfile
    for flavor, runtime in (("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu")):
        lines = [
            line
            for line in (ROOT / f"requirements/serve-{flavor}.txt").read_text().splitlines()
            if line and not line.startswith("#")
        ]
        assert all("==" in line for line in lines)
        names = {line.split("==")[0].lower() for line in lines}
        assert runtime in names
        assert "torch" not in names and "pytest" not in names


def test_image_environment_from_scratch_serves_against_postgres(tmp_path, postgres_url):
    """The serving pins in a fresh virtualenv, migrations from an empty database, /ready."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements/serve-cpu.txt")], check=True)
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "DATABASE_URL": postgres_url,
        "MEMAUDIT_HOME": str(ROOT),
        "MEMAUDIT_MIGRATIONS_DIR": str(ROOT / "migrations"),
        "MEMAUDIT_MODELS_DIR": str(ROOT / "models"),
        "MEMAUDIT_DATA_DIR": str(tmp_path / "data"),
        "MEMAUDIT_HOST": "127.0.0.1",
        "MEMAUDIT_PORT": str(port),
        "MEMAUDIT_WORKERS": "2",
    }
    server = subprocess.Popen(
        ["sh", str(ROOT / "docker/entrypoint.sh")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        ready = None
        while time.time() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, (
            server.stdout.read().decode() if server.poll() is not None else "no answer"
        )
        body = ready.json()
        assert body["database"] == "postgresql"
        assert body["schema_revision"] == body["head_revision"]
        models = httpx.get(f"http://127.0.0.1:{port}/models", timeout=5).json()
        assert {m["method"]: m["status"] for m in models} == {
            "reference": "built-in",
            "phash": "built-in",
            "cnn": "loaded",
            "sift_knn": "loaded",
            "embedding": "loaded",  # the copy-detection embedding
        }
        cnn = next(m for m in models if m["method"] == "cnn")
        assert cnn["execution_provider"] == "CPUExecutionProvider"
        assert "CUDA" in (cnn["detail"] or "")  # says why it is not on the GPU
    finally:
        server.terminate()
        server.wait(timeout=30)
