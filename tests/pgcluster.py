"""A throwaway PostgreSQL cluster from the Debian server binaries, on a free loopback port.
Used by the test fixtures and by benchmarks."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def pg_cluster(bindir: Path, fsync: bool = False) -> Iterator[str]:
    """Yields "127.0.0.1:PORT" of a fresh cluster (superuser `memaudit`, trust auth)."""
    base = Path(tempfile.mkdtemp(prefix="memaudit-pg-"))
    base.chmod(0o755)
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = "postgres"
        try:
            import pwd

            pwd.getpwnam(user)
        except KeyError:
            user = "nobody"
        shutil.chown(base, user=user)
        prefix = ["runuser", "-u", user, "--"]
    data = base / "data"
    port = free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "memaudit", "--auth=trust"]
    subprocess.run(
        [*prefix, *initdb, "-E", "UTF8", "--no-instructions"], check=True, capture_output=True
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    if not fsync:
        options += " -c fsync=off"
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(base / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
