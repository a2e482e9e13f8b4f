"""`memaudit client`: the API from another host, for pipelines (register, match, filter,
classify, report), with uploads streamed from disk and exit codes a CI job can branch on.

Uploads and audits run as server-side jobs (``Prefer: respond-async``): the client shows the
upload's progress, then the job's (files hashed, the stage), and reads the result when it is
done, so no proxy or client timeout cuts a long audit. Interrupted with Ctrl-C, the job goes
on at the server (its address is printed; ``curl -X DELETE`` it to cancel).

Exit codes: 0 done and nothing found; 3 the audit found something (`match`: a generated image
copies a real one, by `copy_of` or the pHash rule; `filter`: an image is withheld;
`classify`: a real image labelled used — choose with --fail-on); 4 the server refused the
request (4xx: its reason is printed); 5 the server could not be reached or failed (5xx,
network); 2 bad command line (argparse); 130 stopped with Ctrl-C (the job goes on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from app.cli.folders import ARCHIVE_SUFFIXES, IMAGE_SUFFIXES, image_and_archive_files

EXIT_FOUND = 3
EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5
#: Bytes read from disk per chunk of a streamed upload.
CHUNK = 1024 * 1024
#: Seconds the client waits for an answer after its upload (a large audit takes minutes).
ANSWER_TIMEOUT = 3600.0
#: Seconds between two looks at a job's progress.
POLL_SECONDS = 1.0
#: Seconds a job is followed while its server cannot be reached (a restart: the job goes on
#: in the restarted server, or another replica, from its stored upload).
RECONNECT_SECONDS = 300.0


class ClientError(SystemExit):
    """Ends the command with a message on stderr and one of the exit codes above."""

    def __init__(self, code: int, message: str) -> None:
        print(f"memaudit client: {message}", file=sys.stderr)
        super().__init__(code)


def upload_files(paths: Sequence[Path]) -> list[Path]:
    """Images and zips named, or found under the folders named (recursively), sorted."""
    suffixes = IMAGE_SUFFIXES | ARCHIVE_SUFFIXES | frozenset({".dcm"})
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(image_and_archive_files(path, suffixes))
        elif path.is_file():
            out.append(path)
        else:
            raise ClientError(2, f"{path} does not exist")
    if not out:
        raise ClientError(2, "no image or zip files among " + ", ".join(map(str, paths)))
    return out


class MultipartStream:
    """A multipart/form-data body generated while it is sent (files read in 1 MiB chunks, so
    a 10 GB upload needs 1 MiB here), reporting progress on stderr when it is a terminal."""

    def __init__(
        self, fields: dict[str, str | list[str]], files: Sequence[tuple[str, Path]]
    ) -> None:
        self.boundary = f"memaudit-{uuid.uuid4().hex}"
        self.fields = fields
        self.files = files
        self.total = sum(path.stat().st_size for _field, path in files)
        self.sent = 0
        self.show = sys.stderr.isatty()
        self._shown = 0.0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _progress(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.show and (final or now - self._shown > 0.5):
            self._shown = now
            share = self.sent / self.total if self.total else 1.0
            print(
                f"\rupload {self.sent / 1e6:,.1f} / {self.total / 1e6:,.1f} MB ({share:.0%})",
                end="\n" if final else "",
                file=sys.stderr,
                flush=True,
            )

    def __iter__(self) -> Iterator[bytes]:
        pairs = [
            (n, v) for n, vs in self.fields.items() for v in ([vs] if isinstance(vs, str) else vs)
        ]
        for name, value in pairs:
            yield (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n"
            ).encode()
        for field, path in self.files:
            quoted = path.name.replace("\\", "\\\\").replace('"', '\\"')
            zipped = path.suffix.lower() == ".zip"
            kind = "application/zip" if zipped else "application/octet-stream"
            yield (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{quoted}"\r\nContent-Type: {kind}\r\n\r\n'
            ).encode()
            with path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    self.sent += len(chunk)
                    self._progress()
                    yield chunk
            yield b"\r\n"
        self._progress(final=True)
        yield f"--{self.boundary}--\r\n".encode()


class JobProgressLine:
    """A job's progress on one stderr line (when it is a terminal): its stage, files hashed
    of those read so far, how much of the stored upload has been read."""

    #: Without a terminal (a CI log) a line is written at each new stage and this often.
    LOG_EVERY_S = 30.0

    def __init__(self) -> None:
        self.terminal = sys.stderr.isatty()
        self.shown = ""
        self.logged_stage = ""
        self.logged_at = 0.0

    def show(self, job: dict) -> None:
        progress = job["progress"]
        text = f"job {job['id'][:8]}: {progress['stage']}"
        if progress["total"]:
            share = progress["done"] / progress["total"]
            text += f" {progress['done']:,} / {progress['total']:,} ({share:.0%})"
        elif progress["done"]:
            text += f" {progress['done']:,}"
        if progress["stage"] in ("reading upload", "hashing") and progress["upload_bytes"]:
            text += f", upload read {progress['upload_read'] / progress['upload_bytes']:.0%}"
        ended = job["state"] in ("succeeded", "failed", "canceled")
        if self.terminal:
            if text != self.shown or ended:
                print(f"\r{text:<78}", end="\n" if ended else "", file=sys.stderr, flush=True)
        elif (
            progress["stage"] != self.logged_stage
            or time.monotonic() - self.logged_at >= self.LOG_EVERY_S
        ):
            print(text, file=sys.stderr, flush=True)
            self.logged_stage, self.logged_at = progress["stage"], time.monotonic()
        self.shown = text


class Api:
    """The server's URL and key; each call answers the JSON document or ends the command."""

    def __init__(self, server: str, api_key: str | None) -> None:
        self.server = server.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def call(self, method: str, path: str, **kwargs) -> dict:
        return self._answer(method, path, self._send(method, path, **kwargs))

    def _send(self, method: str, path: str, **kwargs):
        import httpx

        url = self.server + path
        timeout = httpx.Timeout(30.0, read=ANSWER_TIMEOUT)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            return httpx.request(method, url, headers=headers, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(EXIT_UNREACHABLE, f"cannot reach {url}: {exc}") from None

    def _answer(self, method: str, path: str, response) -> dict:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:500]
            raise self._refusal(method, path, response.status_code, detail)
        return response.json() if response.content else {}

    @staticmethod
    def _refusal(method: str, path: str, status: int, detail) -> ClientError:
        code = EXIT_REFUSED if status < 500 else EXIT_UNREACHABLE
        return ClientError(code, f"{method} {path} answered {status}: {detail_words(detail)}")

    def upload(
        self,
        path: str,
        fields: dict[str, str | list[str]],
        files: Sequence[tuple[str, Path]],
        result_params: dict[str, str] | None = None,
    ) -> dict:
        body = MultipartStream(fields, files)
        headers = {"Content-Type": body.content_type}
        return self.run_job("POST", path, result_params, content=iter(body), headers=headers)

    def run_job(
        self, method: str, path: str, result_params: dict[str, str] | None = None, **kwargs
    ) -> dict:
        """Send the request as a job, follow its progress, and answer its result document
        (what the request itself would have answered; a server that answers at once is
        fine too)."""
        headers = {**kwargs.pop("headers", {}), "Prefer": "respond-async"}
        response = self._send(method, path, headers=headers, **kwargs)
        if response.status_code != 202:
            return self._answer(method, path, response)
        job = self._follow(response.headers["location"], JobProgressLine())
        if job["state"] == "failed":
            error = job["error"] or {"status": 500, "detail": "unknown"}
            raise self._refusal(method, path, error["status"], error["detail"])
        if job["state"] != "succeeded":
            raise ClientError(EXIT_REFUSED, f"{method} {path}: the job was {job['state']}")
        document = self.call("GET", job["result"], params=result_params)
        document.setdefault("rejected", job["rejected"])  # a set's record does not keep them
        document.setdefault("duplicates", job["duplicates"])
        return document

    def _follow(self, location: str, line: JobProgressLine) -> dict:
        """Poll the job until it ends, through a restart of its server; Ctrl-C leaves it
        running and says where it is."""
        import httpx

        lost_since = None
        try:
            while True:
                try:
                    response = httpx.get(self.server + location, headers=self.headers, timeout=30)
                    unavailable = response.status_code >= 500
                except httpx.HTTPError:
                    unavailable = True
                if unavailable:
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since > RECONNECT_SECONDS:
                        job = self.call("GET", location)  # ends the command with the reason
                    time.sleep(POLL_SECONDS)
                    continue
                lost_since = None
                job = self._answer("GET", location, response)
                line.show(job)
                if job["state"] in ("succeeded", "failed", "canceled"):
                    return job
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            raise ClientError(
                130,
                f"stopped waiting; the job goes on at {self.server}{location} "
                f"(cancel: curl -X DELETE {self.server}{location})",
            ) from None


def detail_words(detail) -> str:
    """An error's ``detail`` as a person reads it: its sentence, and for an upload's
    problem its refused files (up to 10), one a line."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict) and "message" in detail:
        lines = [str(detail["message"])]
        rejected = detail.get("rejected") or []
        lines += [f"  rejected {r['filename']}: {r['reason']}" for r in rejected[:10]]
        if len(rejected) > 10:
            lines.append(f"  ... and {len(rejected) - 10} more (--json prints them all)")
        return "\n".join(lines)
    return json.dumps(detail)[:2000]


def _print(document: dict, args: argparse.Namespace, summary: str) -> None:
    print(json.dumps(document, indent=1) if args.json else summary)


def cmd_register(args: argparse.Namespace) -> int:
    api = Api(args.server, args.api_key)
    files = [("files", p) for p in upload_files(args.paths)]
    fields = {"hash_size": str(args.hash_size)}
    if args.set is None:
        doc = api.upload("/real-sets", {"name": args.name, **fields}, files)
    else:
        doc = api.upload(f"/real-sets/{args.set}/images", {}, files)
    set_id = doc.get("id", args.set)
    summary = (
        f"real set {set_id}: {doc.get('image_count')} images"
        f" ({len(doc.get('rejected', []))} files rejected, "
        f"{len(doc.get('duplicates', []))} duplicates)"
    )
    _print(doc, args, summary)
    for item in doc.get("rejected", []):
        print(f"rejected {item['filename']}: {item['reason']}", file=sys.stderr)
    return 0


def stale_descriptors(doc: dict) -> str | None:
    """The batch's copy rule when copy_of was not decided because the set's descriptors are
    another embedding's: the pHash rule alone must not pass a pipeline that would have failed
    on copy_of (`memaudit reembed` fixes it)."""
    from app.search.copies import STALE_DESCRIPTORS

    rule = doc.get("copy_rule") or ""
    return (
        rule if doc.get("copy_threshold") is None and rule.startswith(STALE_DESCRIPTORS) else None
    )


def cmd_match(args: argparse.Namespace) -> int:
    api = Api(args.server, args.api_key)
    fields = {"real_set_id": str(args.set), "real_summary": "used"}
    if args.threshold is not None:
        fields["threshold"] = str(args.threshold)
    files = [("files", p) for p in upload_files(args.paths)]
    doc = api.upload("/match", fields, files, result_params={"real_summary": "used"})
    copies = [m for m in doc["matches"] if m.get("copy_of")]
    matched = [m for m in doc["matches"] if m.get("source")]
    summary = (
        f"batch {doc['batch_id']}: {doc['generated_count']} generated images; "
        f"{len(copies)} copies by the embedding (copy_of), {len(matched)} within pHash distance "
        f"{doc['threshold']} of a real image; report: {args.server.rstrip('/')}/match/"
        f"{doc['batch_id']}/report"
    )
    _print(doc, args, summary)
    if not args.json:
        for m in copies:
            c = m["copy_of"]
            verified = c.get("verified_inliers")
            how = f", verified by {verified} matching keypoints" if verified else ""
            print(f"copy {m['generated']} -> {c['real']} (similarity {c['similarity']:.3f}{how})")
        for m in matched:
            print(f"phash {m['generated']} -> {m['source']} (distance {m['distance']})")
    undecided = doc.get("copy_threshold") is None
    stale = stale_descriptors(doc)
    if stale is not None and args.fail_on != "never":
        raise ClientError(EXIT_REFUSED, f"copy_of could not be decided: {stale}")
    if undecided and not args.json:
        print(f"note: copy_of was not decided ({doc.get('copy_rule')}); pHash sources count")
    found = {
        # copy_of where it was decided, else the paper's pHash sources (never nothing at all)
        "copies": matched if undecided else copies,
        "any": copies or matched,  # either evidence, as the /filter release gate
        "never": [],
    }[args.fail_on]
    return EXIT_FOUND if found else 0


def cmd_filter(args: argparse.Namespace) -> int:
    """The release gate: withheld images listed with their reasons, the rest saved to --out."""
    api = Api(args.server, args.api_key)
    fields: dict[str, str | list[str]] = {"real_set_id": [str(s) for s in args.set]}
    doc = api.upload("/filter", fields, [("files", p) for p in upload_files(args.paths)])
    summary = (
        f"batch {doc['batch_id']}: {doc['released_count']} of {doc['generated_count']} "
        f"generated images may be released, {doc['withheld_count']} withheld"
    )
    _print(doc, args, summary)
    if not args.json:
        for image in doc["images"]:
            if image["decision"] == "withhold":
                print(f"withhold {image['generated']}: {'; '.join(image['reasons'])}")
    if args.out:
        _download(api, f"/filter/{doc['batch_id']}/released", Path(args.out))
        print(f"wrote {args.out} ({doc['released_count']} images and the manifest)")
    return EXIT_FOUND if doc["withheld_count"] else 0


def _download(api: Api, path: str, out: Path, params: dict[str, str] | None = None) -> None:
    """Stream an answer to ``out`` (a partial file is removed on failure)."""
    import httpx

    url = api.server + path
    try:
        with httpx.stream("GET", url, params=params, headers=api.headers, timeout=300) as response:
            if response.status_code != 200:
                text = response.read()[:2000].decode(errors="replace")
                try:
                    detail = json.loads(text).get("detail", text)
                except (ValueError, AttributeError):
                    detail = text
                raise Api._refusal("GET", path, response.status_code, detail)
            with out.open("wb") as fh:
                for chunk in response.iter_bytes(CHUNK):
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        out.unlink(missing_ok=True)
        raise ClientError(EXIT_UNREACHABLE, f"cannot reach {url}: {exc}") from None


def cmd_classify(args: argparse.Namespace) -> int:
    api = Api(args.server, args.api_key)
    fields = {"method": args.method, "real_set_id": str(args.set)}
    if args.batch is not None:  # the methods that compare with the generator's output
        fields["batch_id"] = str(args.batch)
    if args.threshold is not None:
        fields["threshold"] = str(args.threshold)
    doc = api.run_job("POST", "/classify", data=fields)
    results = doc.get("results", [])
    used = [r for r in results if r.get("label") == "used"]
    summary = (
        f"classification {doc['classification_id']}: {len(used)} of {len(results)} real "
        f"images labelled used by {doc.get('method')}; report: "
        f"{args.server.rstrip('/')}/classify/{doc['classification_id']}/report"
    )
    _print(doc, args, summary)
    return EXIT_FOUND if used and args.fail_on == "used" else 0


def cmd_report(args: argparse.Namespace) -> int:
    api = Api(args.server, args.api_key)
    from app.cli.report import report_path  # (the offline report's module, imported late)

    path = report_path(args)
    _download(api, path, Path(args.out), params={"form": "false"})  # a saved page cannot post
    print(f"wrote {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    client = sub.add_parser(
        "client",
        help="use a running memaudit server (register, match, classify, report) from a "
        "pipeline; exit 3 when the audit finds copies or used images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    client.add_argument(
        "--server",
        default=os.environ.get("MEMAUDIT_SERVER", "http://127.0.0.1:8000"),
        help="the server's URL (env MEMAUDIT_SERVER)",
    )
    client.add_argument(
        "--api-key",
        default=os.environ.get("MEMAUDIT_API_KEY"),
        help="sent as a bearer token (env MEMAUDIT_API_KEY; prefer the environment)",
    )
    client.add_argument("--json", action="store_true", help="print the whole JSON answer")
    commands = client.add_subparsers(dest="client_command", required=True)

    register = commands.add_parser("register", help="register a real set, or add to one")
    register.add_argument("paths", nargs="+", type=Path, help="images, zips or folders")
    group = register.add_mutually_exclusive_group(required=True)
    group.add_argument("--name", help="a new set's name")
    group.add_argument("--set", type=int, help="add the images to this set")
    register.add_argument("--hash-size", type=int, default=16)
    register.set_defaults(func=cmd_register)

    match = commands.add_parser("match", help="match generated images against a set")
    match.add_argument("paths", nargs="+", type=Path, help="images, zips or folders")
    match.add_argument("--set", type=int, required=True, help="the real set's id")
    match.add_argument("--threshold", type=int, help="pHash threshold (default: the set's)")
    match.add_argument(
        "--fail-on",
        choices=["copies", "any", "never"],
        default="copies",
        help="exit 3 when: copy_of names a real image, or, where the batch's copy_of could "
        "not be decided, a pHash source is within the threshold (copies, default); either "
        "evidence, as /filter withholds (any); never",
    )
    match.set_defaults(func=cmd_match)

    gate = commands.add_parser(
        "filter", help="the release gate: which generated images may leave; exit 3 if any withheld"
    )
    gate.add_argument("paths", nargs="+", type=Path, help="images, zips or folders")
    gate.add_argument(
        "--set",
        type=int,
        action="append",
        required=True,
        help="a real set's id; repeat to check against several (withheld if any calls it a copy)",
    )
    gate.add_argument("--out", help="save a zip of the released images (and the manifest) here")
    gate.set_defaults(func=cmd_filter)

    classify = commands.add_parser("classify", help="which real images trained the generator")
    classify.add_argument("--set", type=int, required=True, help="the real set's id")
    classify.add_argument(
        "--batch",
        type=int,
        help="a /match batch's id (reference and phash compare with it; cnn and sift_knn "
        "score the real images alone)",
    )
    classify.add_argument(
        "--method",
        default="reference",
        help="reference (default), phash, cnn or sift_knn (GET /models lists what the server has)",
    )
    classify.add_argument("--threshold", type=float, help="label used above this score")
    classify.add_argument(
        "--fail-on",
        choices=["used", "never"],
        default="used",
        help="exit 3 when: some real image is labelled used (default); never",
    )
    classify.set_defaults(func=cmd_classify)

    report = commands.add_parser("report", help="save the HTML audit report of a batch")
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--match", type=int, help="a /match (or /filter) batch's id")
    which.add_argument("--classify", type=int, help="a /classify id")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.set_defaults(func=cmd_report)
    for command in (register, match, gate, classify, report):  # also after the subcommand
        command.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="the whole answer"
        )
