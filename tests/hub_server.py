"""A local stand-in for the Hugging Face Hub, for testing the real ``huggingface_hub`` client.

Point the client at it with ``HF_ENDPOINT=<HubServer.url>`` (see ``conftest_hub.py`` for a fixture that
also patches the copies ``huggingface_hub`` made of its environment at import time).

Only the standard library is used (``http.server`` + ``threading``). The protocol was written against the
``huggingface_hub`` source (2.4.0: ``file_download.py``, ``_snapshot_download.py``, ``hf_api.py``,
``_commit_api.py``, ``_upload_pipeline.py``, ``utils/_http.py``) and implements what that client needs:

Downloads
    ``HEAD``/``GET /[datasets/|spaces/]{repo_id}/resolve/{revision}/{path}``
        Regular git files: ``200`` with ``X-Repo-Commit``, ``ETag`` (git blob sha1) and ``Content-Length``
        (``Range`` supported, the client uses it to resume). Files at or above ``lfs_threshold`` bytes are
        served like LFS files on the real Hub: ``302`` to a second "CDN" listener (a different origin, so
        the client stops following, takes ``X-Linked-Etag``/``X-Linked-Size`` from the redirect and drops
        the ``Authorization`` header for the blob ``GET``).
    ``GET /api/{models|datasets|spaces}/{repo_id}[/revision/{revision}]``  repo info (``sha``, ``siblings``)
    ``GET /api/{type}s/{repo_id}/tree/{revision}[/{path}]``  tree listing (``snapshot_download`` uses it)
    ``GET /api/{type}s/{repo_id}/refs``  branches
Uploads
    ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``POST /api/validate-yaml``,
    ``POST /api/{type}s/{repo_id}/preupload/{revision}`` (always answers ``uploadMode: regular`` so file
    contents come inline, base64, in the commit), ``POST /api/{type}s/{repo_id}/commit/{revision}`` (NDJSON)
Misc
    ``GET /api/whoami-v2``, ``GET /api/agent-harnesses`` (fetched by the client's user-agent builder when
    telemetry is enabled).

Errors carry the ``X-Error-Code`` header that ``huggingface_hub.utils.hf_raise_for_status`` maps to its
exceptions: ``RepoNotFound`` -> ``RepositoryNotFoundError`` (401 without valid credentials, 404 with them,
as the Hub does), ``RevisionNotFound`` -> ``RevisionNotFoundError``, ``EntryNotFound`` ->
``RemoteEntryNotFoundError``. A wrong token gets the Hub's ``401 Invalid credentials in Authorization
header`` (a plain ``HfHubHTTPError``).

Auth model: with ``token=None`` any bearer token counts as a logged-in user and anonymous writes are
allowed; with a token, only that token is valid, private repos need it and so do all writes.

Every listener binds to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

HOST = "127.0.0.1"
USER_NAME = "hub-test-user"  # namespace of repos created without an organization, and whoami's name

_TYPE_FROM_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # as in constants.REPO_TYPES_URL_PREFIXES
_REPO_SUBCOMMANDS = {"revision", "tree", "refs", "preupload", "commit", "paths-info"}
_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")
_INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub sends as ETag / ``oid`` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now_iso() -> str:
    # The client's parse_datetime only accepts "%Y-%m-%dT%H:%M:%S.%fZ".
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class _Commit:
    sha: str
    files: dict[str, bytes]  # the full tree at this commit, path -> content
    parent: str | None
    message: str
    date: str


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str = field(default_factory=_now_iso)
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit sha
    commits: dict[str, _Commit] = field(default_factory=dict)  # commit sha -> commit


class RequestRecord(NamedTuple):
    """One request as received (``path`` without the query string, still percent-encoded)."""

    method: str
    path: str
    query: str
    token: str | None  # the bearer token sent, if any
    cdn: bool  # True if it hit the CDN listener rather than the Hub one


class _HubHTTPError(Exception):
    """Raised by route handlers; rendered as a Hub-style error response."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}


class _ThreadingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can close its keep-alive connections and join its threads with a timeout.

    The client keeps HTTP/1.1 connections open in a shared pool, so a handler thread can sit blocked on the
    next request line forever; ``server_close()`` alone would then hang (or leak the thread). We track open
    connections, shut them down on stop (which wakes the blocked readers) and join with a timeout.
    """

    daemon_threads = True  # never keep the interpreter alive
    block_on_close = False  # we join ourselves in close_all(), with a timeout

    def __init__(self, hub: HubServer, role: str):
        self.hub = hub
        self.role = role  # "hub" or "cdn"
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        super().__init__((HOST, 0), _Handler)

    def process_request(self, request, client_address):
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), name=f"hubserver-{self.role}"
        )
        thread.daemon = True
        with self._conn_lock:
            self._connections.add(request)
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()]
            self._handler_threads.append(thread)
        thread.start()

    def shutdown_request(self, request):
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_all(self, timeout: float) -> list[threading.Thread]:
        """Close every open connection and join handler threads; returns the threads still alive."""
        with self._conn_lock:
            connections = list(self._connections)
            threads = list(self._handler_threads)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout)
        self.server_close()
        return [t for t in threads if t.is_alive()]


class HubServer:
    """In-memory Hub with git-like history, served over HTTP on 127.0.0.1.

    Use as a context manager (or call ``start()``/``stop()``)::

        with HubServer(token="hf_secret") as hub:
            sha = hub.add_commit("org/model", {"config.json": b"{}"})
            os.environ["HF_ENDPOINT"] = hub.url

    Args:
        token: the only valid token (see the module docstring for the auth model).
        lfs_threshold: files of at least this many bytes are served LFS-style (302 to the CDN listener);
            ``None`` serves every file as a regular git file.
    """

    def __init__(self, token: str | None = None, *, lfs_threshold: int | None = None):
        self.token = token
        self.lfs_threshold = lfs_threshold
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in arrival order
        self.request_log: list[RequestRecord] = []  # same requests, with query, token and listener
        self.server_errors: list[str] = []  # tracebacks of unexpected exceptions in handlers (bugs here)
        self._lock = threading.RLock()  # guards repos, blobs and the logs; handlers run concurrently
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._renamed: dict[tuple[str, str], str] = {}  # (type, old id) -> new id, answered with a 307
        self._blobs: dict[str, bytes] = {}  # sha256 -> content, what the CDN listener serves
        self._counter = itertools.count()  # makes commit shas unique even for identical trees
        self._hub: _ThreadingServer | None = None
        self._cdn: _ThreadingServer | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL to use as ``HF_ENDPOINT``, e.g. ``http://127.0.0.1:PORT``."""
        if self._hub is None:
            raise RuntimeError("HubServer is not started")
        return f"http://{HOST}:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        if self._cdn is None:
            raise RuntimeError("HubServer is not started")
        return f"http://{HOST}:{self._cdn.server_address[1]}"

    def start(self) -> HubServer:
        if self._hub is not None:
            return self
        self._hub = _ThreadingServer(self, "hub")
        self._cdn = _ThreadingServer(self, "cdn")
        for server in (self._hub, self._cdn):
            # A short poll interval keeps stop() fast (shutdown() waits for the serve_forever loop to notice).
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"hubserver-{server.role}-loop"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both listeners, close keep-alive connections and join every thread this server started."""
        leftovers: list[threading.Thread] = []
        for server in (self._hub, self._cdn):
            if server is not None:
                server.shutdown()
                leftovers += server.close_all(timeout)
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                leftovers.append(thread)
        self._hub = self._cdn = None
        self._threads = []
        if leftovers:
            raise RuntimeError(f"HubServer threads did not stop: {[t.name for t in leftovers]}")

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ test API

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        private: bool | None = None,
        repo_type: str = "model",
        message: str = "add_commit",
    ) -> str:
        """Commit ``files`` as the whole new tree of ``branch`` (created, with the repo, if missing).

        ``private`` sets the repo visibility; ``None`` keeps it (new repos are public). Returns the new
        40-hex commit sha; the previous commits stay downloadable by sha.
        """
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                repo = self._create_repo(repo_type, repo_id, private=bool(private), initial_commit=False)
            elif private is not None:
                repo.private = private
            parent = repo.branches.get(branch)
            return self._commit(repo, branch, dict(files), parent, message)

    def files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        """The tree at ``revision`` (branch name or commit sha), as path -> content."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            try:
                sha = self._resolve_revision(repo, revision)
            except _HubHTTPError:
                raise KeyError(revision) from None
            return dict(repo.commits[sha].files)

    def head(self, repo_id: str, branch: str = "main", *, repo_type: str = "model") -> str:
        """The commit sha ``branch`` points to."""
        with self._lock:
            return self._repos[(repo_type, repo_id)].branches[branch]

    def rename_repo(self, old_repo_id: str, new_repo_id: str, *, repo_type: str = "model") -> None:
        """Move a repo; requests for the old id then get a 307 to the new one, like on the Hub."""
        with self._lock:
            repo = self._repos.pop((repo_type, old_repo_id))
            repo.repo_id = new_repo_id
            self._repos[(repo_type, new_repo_id)] = repo
            self._renamed[(repo_type, old_repo_id)] = new_repo_id

    # ------------------------------------------------------------------ state helpers (hold self._lock)

    def _create_repo(self, repo_type: str, repo_id: str, *, private: bool, initial_commit: bool) -> _Repo:
        repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private)
        self._repos[(repo_type, repo_id)] = repo
        if initial_commit:
            # The Hub creates repos with an initial commit on main (it holds a .gitattributes there; we keep
            # the tree empty so tests see exactly the files they upload).
            self._commit(repo, "main", {}, None, "initial commit")
        return repo

    def _commit(self, repo: _Repo, branch: str, files: dict[str, bytes], parent: str | None, message: str) -> str:
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_type}/{repo.repo_id}\0{parent}\0{message}\0{next(self._counter)}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_sha1(files[path])}\0".encode())
        sha = digest.hexdigest()
        repo.commits[sha] = _Commit(sha=sha, files=files, parent=parent, message=message, date=_now_iso())
        repo.branches[branch] = sha
        for content in files.values():
            if self._is_lfs(content):
                self._blobs[hashlib.sha256(content).hexdigest()] = content
        return sha

    def _is_lfs(self, content: bytes) -> bool:
        return self.lfs_threshold is not None and len(content) >= self.lfs_threshold

    @staticmethod
    def _resolve_revision(repo: _Repo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if _SHA1_RE.fullmatch(revision) and revision in repo.commits:
            return revision
        raise _HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append((record.method, record.path))
            self.request_log.append(record)

    # ------------------------------------------------------------------ auth helpers

    def _authenticated(self, bearer: str | None) -> bool:
        """Whether the request is from a logged-in user. Raises the Hub's 401 for a wrong token."""
        if bearer is None:
            return False
        if self.token is not None and bearer != self.token:
            raise _HubHTTPError(401, _INVALID_CREDENTIALS)
        return True

    def _get_repo(self, repo_type: str, repo_id: str, bearer: str | None, *, path_tail: str = "") -> _Repo:
        """Look a repo up as the Hub does: a private repo is indistinguishable from a missing one."""
        authenticated = self._authenticated(bearer)
        repo = self._repos.get((repo_type, repo_id))
        if repo is None and (repo_type, repo_id) in self._renamed:
            # Renamed repos answer with a relative redirect; the client follows it (same host).
            new_id = self._renamed[(repo_type, repo_id)]
            raise _HubHTTPError(307, "Moved", headers={"Location": path_tail.replace(repo_id, new_id, 1)})
        if repo is None or (repo.private and not authenticated):
            raise _HubHTTPError(401 if not authenticated else 404, "Repository not found", "RepoNotFound")
        return repo

    def _require_write(self, bearer: str | None) -> None:
        if self.token is not None and not self._authenticated(bearer):
            raise _HubHTTPError(401, "You must be authenticated to perform this action (set a token)")


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the HubServer; all state lives in ``self.server.hub``."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub (the client pools connections)
    server_version = "HubServer/1.0"
    timeout = 30  # an idle keep-alive connection gives its thread back after this long

    server: _ThreadingServer

    def log_message(self, format, *args):  # noqa: A002 - signature from BaseHTTPRequestHandler
        pass  # keep pytest output clean; HubServer.requests is the log

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    # ------------------------------------------------------------------ plumbing

    def _dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        auth = self.headers.get("Authorization") or ""
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        hub._log(RequestRecord(self.command, split.path, split.query, bearer, self.server.role == "cdn"))
        # Always consume the body first: an unread body would corrupt the next request on this keep-alive
        # connection.
        body = self._read_body()
        try:
            if self.server.role == "cdn":
                self._route_cdn(split.path)
            else:
                self._route_hub(split.path, parse_qs(split.query), body, bearer)
        except _HubHTTPError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-response (e.g. an interrupted download)
        except Exception:  # a bug in this server: report it to the client and to the test
            tb = traceback.format_exc()
            with hub._lock:
                hub.server_errors.append(tb)
            print(f"HubServer internal error on {self.command} {self.path}:\n{tb}", file=sys.stderr)
            # 501, not 500: the client retries 500/502/503/504 for ~23 s; a bug here should fail fast.
            self._send_error(_HubHTTPError(501, "HubServer internal error"))

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Send a complete response. HEAD gets the same headers (incl. Content-Length) but no body."""
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, data, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send_error(self, err: _HubHTTPError) -> None:
        headers = {"Content-Type": "application/json", **err.headers}
        if err.status >= 400:
            headers["X-Error-Message"] = _latin1_safe(err.message)  # may echo non-ASCII paths from the URL
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        body = json.dumps({"error": err.message}).encode() if err.status >= 400 else b""
        self._send(err.status, body, headers)

    # ------------------------------------------------------------------ routing

    def _route_hub(self, path: str, query: dict[str, list[str]], body: bytes, bearer: str | None) -> None:
        hub = self.server.hub
        method = self.command
        if path == "/api/whoami-v2" and method == "GET":
            return self._whoami(bearer)
        if path == "/api/agent-harnesses" and method == "GET":
            return self._send_json({"standardEnvVars": [], "harnesses": {}})
        if path == "/api/validate-yaml" and method == "POST":
            return self._send_json({"errors": [], "warnings": []})
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body or b"{}"), bearer)
        if path == "/api/repos/delete" and method == "DELETE":
            return self._delete_repo(json.loads(body or b"{}"), bearer)

        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "api" and parts[1] in _TYPE_FROM_PLURAL:
            repo_type = _TYPE_FROM_PLURAL[parts[1]]
            repo_id, rest = _split_repo_id(parts[2:], _REPO_SUBCOMMANDS)
            with hub._lock:
                return self._route_repo_api(repo_type, repo_id, rest, query, body, bearer, path)

        if "resolve" in parts and method in ("GET", "HEAD"):
            repo_type = "model"
            if parts[0] in ("datasets", "spaces"):
                repo_type, parts = _TYPE_FROM_PLURAL[parts[0]], parts[1:]
            repo_id, rest = _split_repo_id(parts, {"resolve"})
            if len(rest) >= 3:
                # The revision is quoted with safe="" (so "refs/pr/1" is one segment); the filename keeps "/".
                revision, filename = unquote(rest[1]), unquote("/".join(rest[2:]))
                return self._resolve(repo_type, repo_id, revision, filename, bearer)

        raise _HubHTTPError(404, f"HubServer: no route for {method} {path}")

    def _route_repo_api(self, repo_type, repo_id, rest, query, body, bearer, path) -> None:
        hub = self.server.hub
        method = self.command
        repo = hub._get_repo(repo_type, repo_id, bearer, path_tail=self.path)
        sub = rest[0] if rest else None
        revision = unquote(rest[1]) if len(rest) >= 2 else "main"

        if method == "GET" and sub in (None, "revision"):
            sha = hub._resolve_revision(repo, revision)
            return self._send_json(self._repo_info(repo, sha, with_blobs=_flag(query, "blobs")))
        if method == "GET" and sub == "tree":
            sha = hub._resolve_revision(repo, revision)
            prefix = unquote("/".join(rest[2:])).strip("/")
            return self._send_json(self._tree(repo.commits[sha].files, prefix, _flag(query, "recursive"), sha))
        if method == "POST" and sub == "paths-info":  # used by get_paths_info / CommitOperationCopy
            sha = hub._resolve_revision(repo, revision)
            paths = parse_qs(body.decode())["paths"] if body else []
            return self._send_json(self._paths_info(repo.commits[sha].files, paths, sha))
        if method == "GET" and sub == "refs":
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha} for name, sha in repo.branches.items()
            ]
            return self._send_json({"branches": branches, "converts": [], "tags": []})
        if method == "POST" and sub == "preupload":
            hub._require_write(bearer)
            sha = hub._resolve_revision(repo, revision)
            return self._preupload(repo.commits[sha], json.loads(body or b"{}"))
        if method == "POST" and sub == "commit":
            hub._require_write(bearer)
            if _flag(query, "create_pr"):
                raise _HubHTTPError(400, "HubServer does not support create_pr")
            return self._commit(repo, revision, body)
        raise _HubHTTPError(404, f"HubServer: no route for {method} {path}")

    # ------------------------------------------------------------------ downloads

    def _resolve(self, repo_type: str, repo_id: str, revision: str, filename: str, bearer: str | None) -> None:
        hub = self.server.hub
        with hub._lock:  # look up under the lock, but stream the bytes without it (downloads run in parallel)
            repo = hub._get_repo(repo_type, repo_id, bearer, path_tail=self.path)
            sha = hub._resolve_revision(repo, revision)
            content = repo.commits[sha].files.get(filename)
        if content is None:
            # X-Repo-Commit on a 404 lets the client cache the file's absence for that commit (.no_exist).
            raise _HubHTTPError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
        if hub._is_lfs(content):
            oid = hashlib.sha256(content).hexdigest()
            location = f"{hub.cdn_url}/cdn-lfs/{oid}?filename={quote(filename.rsplit('/', 1)[-1])}"
            # Like the Hub for LFS files: the metadata is on the redirect itself (X-Linked-*).
            return self._send(
                302,
                headers={
                    "Location": location,
                    "X-Repo-Commit": sha,
                    "ETag": f'"{oid}"',
                    "X-Linked-Etag": f'"{oid}"',
                    "X-Linked-Size": str(len(content)),
                },
            )
        self._send_content(content, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(content)}"'}, filename)

    def _route_cdn(self, path: str) -> None:
        match = re.fullmatch(r"/cdn-lfs/([0-9a-f]{64})", path)
        if self.command not in ("GET", "HEAD") or match is None:
            raise _HubHTTPError(404, "Not found")
        with self.server.hub._lock:
            content = self.server.hub._blobs.get(match.group(1))
        if content is None:
            raise _HubHTTPError(404, "Not found")
        self._send_content(content, {"ETag": f'"{match.group(1)}"'}, None)

    def _send_content(self, content: bytes, headers: dict[str, str], filename: str | None) -> None:
        """Serve file bytes, honouring a single ``Range`` (the client resumes interrupted downloads with it)."""
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}
        if filename is not None:
            name = filename.rsplit("/", 1)[-1]
            plain_name = _latin1_safe(name).replace('"', "")
            headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{plain_name}\";"
        range_header = self.headers.get("Range")
        if range_header and (match := _RANGE_RE.fullmatch(range_header.strip())):
            start_s, end_s = match.groups()
            size = len(content)
            if start_s:
                start, end = int(start_s), min(int(end_s), size - 1) if end_s else size - 1
            else:  # suffix range: the last N bytes
                start, end = max(size - int(end_s or 0), 0), size - 1
            if start >= size or start > end:
                raise _HubHTTPError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return self._send(206, content[start : end + 1], headers)
        self._send(200, content, headers)

    def _repo_info(self, repo: _Repo, sha: str, with_blobs: bool) -> dict:
        hub = self.server.hub
        commit = repo.commits[sha]
        siblings = []
        for path, content in sorted(commit.files.items()):
            sibling: dict = {"rfilename": path}
            if with_blobs:
                sibling.update(size=len(content), blobId=git_blob_sha1(content))
                if hub._is_lfs(content):
                    sibling["lfs"] = {**_lfs_info(content), "sha256": _lfs_info(content)["oid"]}
            siblings.append(sibling)
        namespace = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": namespace,
            "sha": sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(c) for c in commit.files.values()),
        }

    def _tree(self, files: dict[str, bytes], prefix: str, recursive: bool, sha: str) -> list[dict]:
        base = f"{prefix}/" if prefix else ""
        below = {p: c for p, c in files.items() if p.startswith(base)}
        if prefix and not below:
            raise _HubHTTPError(404, f"Entry not found: {prefix}", "EntryNotFound", headers={"X-Repo-Commit": sha})
        entries: dict[str, dict] = {}
        for path, content in sorted(below.items()):
            rel_parts = path[len(base) :].split("/")
            # Folders between `prefix` and the file (only the first level unless recursive).
            for depth in range(1, len(rel_parts) if recursive else min(2, len(rel_parts))):
                folder = base + "/".join(rel_parts[:depth])
                entries.setdefault(folder, _folder_entry(folder, sha))
            if recursive or len(rel_parts) == 1:
                entries[path] = self._file_entry(path, content)
        return list(entries.values())

    def _file_entry(self, path: str, content: bytes) -> dict:
        entry = {"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": path}
        if self.server.hub._is_lfs(content):
            entry["lfs"] = _lfs_info(content)
        return entry

    def _paths_info(self, files: dict[str, bytes], paths: list[str], sha: str) -> list[dict]:
        """Entries for the requested paths that exist (files or folders); missing ones are left out."""
        result = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                result.append(self._file_entry(path, files[path]))
            elif any(p.startswith(path + "/") for p in files):
                result.append(_folder_entry(path, sha))
        return result

    # ------------------------------------------------------------------ uploads

    def _whoami(self, bearer: str | None) -> None:
        if not self.server.hub._authenticated(bearer):
            raise _HubHTTPError(401, _INVALID_CREDENTIALS)
        self._send_json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": USER_NAME,
                "fullname": "Hub Test User",
                "email": None,
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "hubserver", "role": "write"}},
            }
        )

    def _create_repo(self, payload: dict, bearer: str | None) -> None:
        hub = self.server.hub
        hub._require_write(bearer)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER_NAME}/{payload['name']}"
        url = f"{hub.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        with hub._lock:
            if (repo_type, repo_id) in hub._repos:
                # create_repo(exist_ok=True) swallows exactly this 409.
                return self._send_json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            hub._create_repo(repo_type, repo_id, private=payload.get("visibility") == "private", initial_commit=True)
        self._send_json({"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self, payload: dict, bearer: str | None) -> None:
        hub = self.server.hub
        hub._require_write(bearer)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER_NAME}/{payload['name']}"
        with hub._lock:
            if hub._repos.pop((repo_type, repo_id), None) is None:
                raise _HubHTTPError(404, "Repository not found", "RepoNotFound")
        self._send_json({})

    def _preupload(self, commit: _Commit, payload: dict) -> None:
        files = []
        for item in payload.get("files", []):
            info = {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False}
            existing = commit.files.get(item["path"])
            if existing is not None:
                # The client skips committing files whose remote oid equals the local git sha1.
                info["oid"] = git_blob_sha1(existing)
            files.append(info)
        self._send_json({"files": files, "commitOid": commit.sha})

    def _commit(self, repo: _Repo, branch: str, body: bytes) -> None:
        hub = self.server.hub
        if branch not in repo.branches:
            raise _HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head = repo.branches[branch]
        files = dict(repo.commits[head].files)
        summary = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent is not None and parent != head:
                    raise _HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HubHTTPError(400, f"Unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                # Only blobs this server already holds (e.g. CommitOperationCopy); LFS/Xet uploads are never
                # requested since preupload always answers "regular".
                content = hub._blobs.get(value["oid"])
                if content is None:
                    raise _HubHTTPError(422, f"HubServer has no LFS blob {value['oid']}")
                files[value["path"]] = content
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise _HubHTTPError(404, f"File not found: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(folder)]:
                    del files[path]
            else:
                raise _HubHTTPError(400, f"Unsupported commit operation {key!r}")
        sha = hub._commit(repo, branch, files, head, summary)
        self._send_json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{hub.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}",
                "hookOutput": "",
            }
        )


def _split_repo_id(parts: list[str], markers: set[str]) -> tuple[str, list[str]]:
    """Split path segments into a repo id ("name" or "namespace/name") and what follows it.

    The Hub has the same ambiguity: a one-segment (legacy, namespace-less) id is recognised by the next
    segment being a known marker ("resolve", "tree", ...).
    """
    if len(parts) >= 2 and parts[1] in markers:
        return parts[0], parts[1:]
    return "/".join(parts[:2]), parts[2:]


def _latin1_safe(text: str) -> str:
    # http.server encodes header values as latin-1 (strict): escape anything outside ASCII.
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _lfs_info(content: bytes) -> dict:
    # pointerSize: size of the git-lfs pointer file stored in git (the client only parses it).
    return {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}


def _folder_entry(path: str, commit_sha: str) -> dict:
    # Folders have no content here; a stable fake tree oid is enough for the client.
    oid = hashlib.sha1(f"tree\0{commit_sha}\0{path}".encode()).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    values = query.get(name)
    return bool(values) and values[-1].lower() in ("1", "true", "yes")
