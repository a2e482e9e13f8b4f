"""What every benchmark needs, once: a memaudit server on a free port (from any source tree),
a throwaway PostgreSQL database, request bodies, memory of a process tree, timing and the
load of the shared machine, so each bench script holds only its own question.

Scripts put the checkout on ``sys.path`` and import this module as ``bench.common``:

    ROOT = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(ROOT))
    from bench.common import memaudit_server, ...  # noqa: E402
"""

from __future__ import annotations

import contextlib
import glob
import io
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Real CT slices shared by the workers of this machine (never committed).
CT_DIR = ROOT.parent / "shared/data/ct"
#: Pixel limit the benchmarks decode with (the service's default is of the same order).
MAX_PIXELS = 50_000_000
#: Cores of the benchmark machine the 2-process rows are sized for.
CORES = 2


# -- servers and databases ---------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def memaudit_server(
    env: dict[str, str] | None = None, tree: Path = ROOT, port: int | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    """`memaudit serve` on a free loopback port, running the code of source tree ``tree``
    (default this checkout) with this interpreter, by default on a fresh SQLite database in a
    fresh data dir; ``env`` overrides settings (DATABASE_URL, a shared MEMAUDIT_DATA_DIR,
    MEMAUDIT_HASH_WORKERS, ...), on ``port`` when given (a restart on the same address).
    Yields (process, base URL) once /ready answers."""
    tree = Path(tree).resolve()
    if not ((tree / "app" / "cli.py").exists() or (tree / "app" / "cli").is_dir()):
        raise SystemExit(f"{tree} is not a memaudit source tree (no app/cli)")
    port = port or free_port()
    full_env = dict(os.environ, MEMAUDIT_DATA_DIR=tempfile.mkdtemp(), MEMAUDIT_LOG_LEVEL="WARNING")
    full_env.pop("DATABASE_URL", None)
    full_env.update(env or {})
    # The tree's code, not whatever the venv's editable install points at (another worktree).
    full_env["PYTHONPATH"] = str(tree)
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=full_env,
        cwd=tree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                raise RuntimeError(f"memaudit serve ({tree}) exited with {server.returncode}")
            try:
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield server, base
    finally:
        server.terminate()
        server.wait()


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (fsync on, as in production) with an empty database
    `bench`; yields its SQLAlchemy URL. Exits with a hint when the server binaries are missing."""
    import psycopg

    from tests.pgcluster import pg_bindir, pg_cluster

    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    with pg_cluster(bindir, fsync=True) as address:
        with psycopg.connect(f"postgresql://memaudit@{address}/postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE bench")
        yield f"postgresql+psycopg://memaudit@{address}/bench"


# -- data and request bodies -------------------------------------------------------------------


def image_folders(folder: Path) -> tuple[list[Path], list[Path]]:
    """DIR/real/*.png and DIR/generated/*.png as written by make_generated.py, sorted."""
    reals = sorted((folder / "real").glob("*.png"))
    gens = sorted((folder / "generated").glob("*.png"))
    if not reals or not gens:
        raise SystemExit(f"no {folder}/real or {folder}/generated PNGs: run make_generated.py")
    return reals, gens


def sample_pngs(n: int, data: Path = CT_DIR, *, cycle: bool = False) -> tuple[list[bytes], str]:
    """Up to ``n`` encoded PNGs from ``data``/*/*.png (exactly ``n`` with ``cycle``, repeating
    files), else ``n`` synthetic phantoms; with a description of what they are."""
    files = sorted(glob.glob(str(data / "*/*.png")))
    if files and cycle:
        blobs = [Path(files[i % len(files)]).read_bytes() for i in range(n)]
        return blobs, f"{n} real CT PNGs ({min(n, len(files))} distinct)"
    if files:
        return [Path(f).read_bytes() for f in files[:n]], f"{min(n, len(files))} real CT PNGs"
    from tests.imagegen import phantom, png

    return [png(phantom(i, 256)) for i in range(n)], f"{n} synthetic phantom PNGs"


def file_parts(paths: Sequence[Path], field: str = "files") -> list[tuple[str, tuple]]:
    """One multipart file part per image (httpx ``files=``)."""
    return [(field, (p.name, p.read_bytes(), "image/png")) for p in paths]


def zip_part(paths: Sequence[Path], field: str = "files", name: str = "images.zip") -> list:
    """All images in one stored (uncompressed: PNGs do not shrink) zip, as one file part."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in paths:
            zf.writestr(p.name, p.read_bytes())
    return [(field, (name, buf.getvalue(), "application/zip"))]


def upload_parts(paths: Sequence[Path], as_zip: bool, field: str = "files") -> list:
    """The images as file parts or as one zip part."""
    return zip_part(paths, field, f"{field}.zip") if as_zip else file_parts(paths, field)


@dataclass(frozen=True)
class Body:
    """An encoded multipart request body, built once before any timing and sent as is, so
    every server and every repeat receives the same bytes and encoding is not timed."""

    content: bytes
    headers: dict[str, str]

    @classmethod
    def multipart(cls, fields: dict[str, str], files: list) -> Body:
        """Text fields first (as every client in the docs sends them), then the files."""
        request = httpx.Request("POST", "http://encode.invalid/", data=fields, files=files)
        return cls(request.read(), {"content-type": request.headers["content-type"]})

    def post(self, client: httpx.Client, url: str) -> httpx.Response:
        response = client.post(url, content=self.content, headers=self.headers)
        response.raise_for_status()
        return response


# -- the decode floor --------------------------------------------------------------------------


def single_threaded() -> None:
    """One OpenCV/BLAS thread per process, as memaudit's hash workers run: with 2 processes on
    2 cores, more threads would only oversubscribe them."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)


def decode_files(paths: Sequence[str]) -> int:
    """Read and decode only: the work no pHash pipeline can skip."""
    from app.imaging.decode import decode_grayscale

    for p in paths:
        decode_grayscale(Path(p).read_bytes(), MAX_PIXELS)
    return len(paths)


def started_pool(workers: int = CORES) -> ProcessPoolExecutor:
    """Spawned, single-threaded workers, started before any timing: a script's pool start-up
    is left out of what it times."""
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=single_threaded
    )
    list(pool.map(time.sleep, [0.01] * workers))
    return pool


def decode_floor_s(pool: ProcessPoolExecutor, paths: Sequence[Path], chunk: int = 100) -> float:
    """Seconds to read and decode ``paths`` over the pool's processes: what any pHash service
    must spend on them, the floor an upload is measured against."""
    names = [str(p) for p in paths]
    return timed(lambda: sum(pool.map(decode_files, chunks(names, chunk))))[0]


# -- memory ------------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    """VmHWM of one process (since it started or since reset_peak_rss)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (hash workers, the resource tracker), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(parents.get(p, []))
    return tree


def reset_peak_rss(pids: Sequence[int]) -> bool:
    """Reset VmHWM (`echo 5 > clear_refs`) so the peak covers one request, not the server's
    whole life; False where the kernel or permissions refuse it."""
    try:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class TreeMemorySampler(threading.Thread):
    """Samples the summed VmRSS and Pss of a process tree every `period` s: the sum of
    per-process peaks (VmHWM) overstates the simultaneous peak, and RSS counts shared library
    pages once per process where PSS splits them."""

    def __init__(self, pids: Sequence[int], period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pids, self.period = list(pids), period
        self.rss_mb = self.pss_mb = 0.0
        self._stop_event = threading.Event()

    @staticmethod
    def _kb(path: str, key: str) -> int:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        return 0

    def run(self) -> None:
        while not self._stop_event.wait(self.period):
            rss = pss = 0
            for pid in self.pids:
                try:
                    rss += self._kb(f"/proc/{pid}/status", "VmRSS:")
                    pss += self._kb(f"/proc/{pid}/smaps_rollup", "Pss:")
                except OSError:
                    continue
            self.rss_mb, self.pss_mb = max(self.rss_mb, rss / 1024), max(self.pss_mb, pss / 1024)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# -- CPU and load ------------------------------------------------------------------------------


def process_cpu_s(pid: int | str) -> float:
    """User + system CPU seconds of one live process (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of every live process of a tree, by pid (diff two calls for one phase)."""
    out = {}
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            out[p] = process_cpu_s(p)
    return out


def _own_cpu_s() -> float:
    """CPU seconds of this process and every descendant, live or reaped, each counted once
    (a live process's own and reaped children's times; reaped ones are in os.times())."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    tick = os.sysconf("SC_CLK_TCK")
    for pid in process_tree(os.getpid())[1:]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def _busy_cpu_s() -> float:
    """CPU seconds all processes on the machine have used (/proc/stat, less idle and iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How much of the cores processes outside this benchmark (and the servers it started)
    used during each phase: the machine is shared, and a busy neighbour skews a comparison,
    so every ratio is printed beside it."""

    def __init__(self, cores: int = CORES) -> None:
        self.cores = cores
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start, busy, own = time.perf_counter(), _busy_cpu_s(), _own_cpu_s()
        yield
        wall = time.perf_counter() - start
        other = (_busy_cpu_s() - busy) - (_own_cpu_s() - own)
        self.phases[name] = max(0.0, other) / (wall * self.cores)

    def line(self) -> str:
        return ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.phases.items())


def load_average() -> str:
    """/proc/loadavg's 1, 5 and 15 minute figures, to print beside timings."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- timing and printing -----------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls."""
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def runs(times: Sequence[float], digits: int = 2) -> str:
    """'1.23, 1.25, 1.31' — every run, printed beside its median."""
    return ", ".join(f"{t:.{digits}f}" for t in times)


def side_by_side(label: str, before: Sequence[float], after: Sequence[float]) -> str:
    """One row: medians of two sets of runs, their ratio, and the runs themselves."""
    a, b = statistics.median(before), statistics.median(after)
    return (
        f"{label:34s} {a:8.2f} {b:8.2f} {b / a:7.3f}   "
        f"before [{runs(before)}]  after [{runs(after)}]"
    )


def spread(times: Sequence[float]) -> float:
    """(max - min) / median of the runs: the noise the ratio must be read against."""
    return (max(times) - min(times)) / statistics.median(times)
