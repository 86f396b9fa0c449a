"""A ModelScope double on 127.0.0.1, serving a folder of model repos: `<root>/<owner>/<name>/<files>`.

Why it exists: no ModelScope site is reachable here, and the console's ModelScope datasets must be
tested over HTTP, against the API's real shapes, not through a patched client. It serves the
calls the `modelscope` package's client makes to read a model repo, with the answers that client
expects, as read from its source (github.com/modelscope/modelscope: modelscope/hub/api.py
`HubApi.login`, `get_model_branches_and_tags_details`, `get_valid_revision_detail`,
`get_model_files`; modelscope/hub/file_download.py `get_file_download_url`,
`http_get_model_file`, `download_file`; modelscope/hub/errors.py `is_ok`,
`handle_http_response`, `raise_on_error`; modelscope/hub/utils/caching.py for the file fields;
modelscope/hub/constants.py: FILE_HASH = 'Sha256', the default endpoint www.modelscope.cn):

- Every JSON answer is the API's envelope `{"Code": 200, "Data": ..., "Message": "success",
  "RequestId": ..., "Success": true}`.
- `POST /api/v1/login` `{"AccessToken": token}`: `Data` with `AccessToken` (the git token),
  `Username`, `Email`, and a `Set-Cookie: m_session_id=...` that authenticates later calls.
  The cookie may also carry the SDK token itself (what `HubApi.get_cookies(token)` sends).
- `GET /api/v1/models/{owner}/{name}/revisions`: `Data.RevisionMap.Branches` / `.Tags`, items
  with `Revision` (the name) and `CreatedAt` (seconds).
- `GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=True|False[&Root=]`:
  `Data.Files`, items with `Name`, `Path`, `Type` (`blob`/`tree`), `Size`, `Sha256` (of the
  content), `Revision` (the commit that last changed the file), `IsLFS`, `Mode`,
  `CommitMessage`, `CommittedDate`, `CommitterName`; plus `.gitattributes`, which the client skips.
- `GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=`: the file, honouring `Range`
  (206, or 416 past the end), as the client's resumed and parallel part downloads rely on.
- Errors as `handle_http_response` reads them: 404 for a repo that does not exist, 403 for a
  private repo without a valid session ("may not exist or may be private"), bodies with
  `Success: false` and a non-200 `Code`.

Assumptions (the client's source does not show them; documented, not seen by the copier's
checks): a wrong token is refused by the login call with HTTP 401 and `Success: false`; an
unknown session cookie reads as anonymous; a listing at a revision that is neither a branch nor a
tag answers `Code` != 200 in an HTTP 200 (the client checks the revision list first, and so do
we); a `Root` that is not a folder lists nothing. The numeric error codes are placeholders
shaped like the one in errors.py's docstring (10010101004).

Simplifications: one valid token; every repo has one branch, `master`, plus the tags the test
adds, all pointing at the current files (no history); a file's commit id is a hash of its path,
size and mtime. `corrupt` serves chosen files with one byte flipped (the listing keeps the true
sha256), and `rate` throttles file bodies, for the copier's verification and interruption tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

MASTER = "master"
LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".model"}
LFS_MIN_SIZE = 1024 * 1024  # UPLOAD_SIZE_THRESHOLD_TO_ENFORCE_LFS in the client's constants
CODE_UNAUTHORIZED = 10010101004
CODE_NOT_FOUND = 10010205001
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    status: int
    cookie: str  # the Cookie header as sent ("" when none)


@dataclass
class ModelScopeServer:
    root: Path  # <root>/<owner>/<name>/<files>
    token: str  # the one SDK token the site accepts
    endpoint: str = ""
    private: set[str] = field(default_factory=set)
    tags: dict[str, set[str]] = field(default_factory=dict)
    corrupt: set[tuple[str, str]] = field(default_factory=set)  # (repo, path) served with a flipped byte
    rate: int = 0  # bytes per second for file bodies; 0: unthrottled
    requests: list[Request] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)
    _hashes: dict[tuple, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def repo(self, repo_id: str, *, private: bool = False, tags: tuple[str, ...] = ()) -> Path:
        """A new, empty repo folder; files written into it are served at once."""
        folder = self.root / repo_id
        folder.mkdir(parents=True)
        if private:
            self.private.add(repo_id)
        self.tags[repo_id] = set(tags)
        return folder

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def sha256(self, full: Path) -> str:
        st = full.stat()
        key = (str(full), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            known = self._hashes.get(key)
        if known is None:
            with full.open("rb") as f:
                known = hashlib.file_digest(f, "sha256").hexdigest()
            with self._lock:
                self._hashes[key] = known
        return known


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _file_commit(path: str, st: os.stat_result) -> str:
    return hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()


class _Reply(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    site: ModelScopeServer

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        self._status = 500
        try:
            self._route(url.path, query)
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-download
            self.close_connection = True
        except _Reply as reply:
            self._envelope(reply.status, None, code=reply.code, message=reply.message)
        self.site.log(Request(self.command, url.path, query, self._status, self.headers.get("Cookie", "")))

    # -- helpers

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _envelope(
        self, status: int, data: object, *, code: int = 200, message: str = "success", headers=None
    ) -> None:
        body = {
            "Code": code,
            "Data": data,
            "Message": message,
            "RequestId": self.headers.get("X-Request-ID") or secrets.token_hex(16),
            "Success": code == 200,
        }
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _authenticated(self) -> bool:
        cookie = self.headers.get("Cookie", "")
        values = [
            part.split("=", 1)[1].strip()
            for part in cookie.split(";")
            if part.strip().startswith("m_session_id=")
        ]
        for value in values:
            if value in self.site.sessions or hmac.compare_digest(value, self.site.token):
                return True
        return False

    def _repo(self, owner: str, name: str) -> tuple[str, Path]:
        repo_id = f"{owner}/{name}"
        folder = self.site.root / owner / name
        if not folder.is_dir():
            raise _Reply(404, CODE_NOT_FOUND, f"model {repo_id} not found")
        if repo_id in self.site.private and not self._authenticated():
            raise _Reply(403, CODE_UNAUTHORIZED, "get model info failed, err: unauthorized permission")
        return repo_id, folder

    def _check_revision(self, repo_id: str, revision: str) -> None:
        if revision not in {MASTER, *self.site.tags.get(repo_id, ())}:
            raise _Reply(200, CODE_NOT_FOUND, f"revision {revision} not found")

    # -- routes

    def _route(self, path: str, query: dict[str, str]) -> None:
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if self.command == "POST" and parts == ["api", "v1", "login"]:
            return self._login()
        if self.command == "GET" and parts[:3] == ["api", "v1", "models"] and len(parts) >= 6:
            owner, name, rest = parts[3], parts[4], parts[5:]
            if rest == ["revisions"]:
                return self._revisions(*self._repo(owner, name))
            if rest == ["repo", "files"]:
                repo_id, folder = self._repo(owner, name)
                self._check_revision(repo_id, query.get("Revision") or MASTER)
                return self._list(folder, query)
            if rest == ["repo"]:
                repo_id, folder = self._repo(owner, name)
                self._check_revision(repo_id, query.get("Revision") or MASTER)
                return self._file(repo_id, folder, query.get("FilePath", ""))
        raise _Reply(404, CODE_NOT_FOUND, "Not Found")

    def _login(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            given = str(json.loads(raw or b"{}").get("AccessToken") or "")
        except (ValueError, AttributeError):
            given = ""
        if not given or not hmac.compare_digest(given, self.site.token):
            raise _Reply(401, CODE_UNAUTHORIZED, "login failed, err: invalid access token")
        session = secrets.token_hex(16)
        with self.site._lock:
            self.site.sessions.add(session)
        data = {"AccessToken": "git-" + secrets.token_hex(8), "Username": "tester", "Email": "t@example.com"}
        cookie = f"m_session_id={session}; Path=/; HttpOnly"
        self._envelope(200, data, headers={"Set-Cookie": cookie})

    def _revisions(self, repo_id: str, folder: Path) -> None:
        created = int(folder.stat().st_mtime)
        tags = [{"Revision": t, "CreatedAt": created} for t in sorted(self.site.tags.get(repo_id, ()))]
        branches = [{"Revision": MASTER, "CreatedAt": created}]
        self._envelope(200, {"RevisionMap": {"Branches": branches, "Tags": tags}})

    def _entry(self, folder: Path, full: Path) -> dict:
        path = full.relative_to(folder).as_posix()
        st = full.stat()
        entry = {
            "CommitMessage": "upload",
            "CommittedDate": int(st.st_mtime),
            "CommitterName": "tester",
            "Name": full.name,
            "Path": path,
            "Revision": _file_commit(path, st),
        }
        if full.is_dir():
            return entry | {"IsLFS": False, "Mode": "040000", "Sha256": "", "Size": 0, "Type": "tree"}
        lfs = full.suffix in LFS_SUFFIXES or st.st_size > LFS_MIN_SIZE
        return entry | {
            "IsLFS": lfs,
            "Mode": "100644",
            "Sha256": self.site.sha256(full),
            "Size": st.st_size,
            "Type": "blob",
        }

    def _list(self, folder: Path, query: dict[str, str]) -> None:
        root = query.get("Root", "").strip("/")
        base = folder / root
        if ".." in root.split("/") or not base.is_dir():
            return self._envelope(200, {"Files": []})
        recursive = query.get("Recursive", "False").lower() in ("true", "1")
        found = sorted(base.rglob("*") if recursive else base.iterdir())
        files = [self._entry(folder, p) for p in found]
        if not root:  # the repo's own .gitattributes, which the client filters out
            files.insert(
                0,
                {
                    "Name": ".gitattributes",
                    "Path": ".gitattributes",
                    "Type": "blob",
                    "Size": len(GITATTRIBUTES),
                    "Sha256": hashlib.sha256(GITATTRIBUTES).hexdigest(),
                    "Revision": "0" * 40,
                    "IsLFS": False,
                },
            )
        self._envelope(200, {"Files": files})

    def _file(self, repo_id: str, folder: Path, path: str) -> None:
        full = folder / path
        if not path or ".." in path.split("/") or not full.is_file():
            raise _Reply(404, CODE_NOT_FOUND, f"file {path} not found")
        size = full.stat().st_size
        start, end, status = 0, size - 1, 200
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and "," not in wanted:
            first, _, last = wanted[6:].partition("-")
            if first:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            else:  # a suffix: the last N bytes
                start, end = max(0, size - int(last)), size - 1
            if start >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        flip = (repo_id, path) in self.site.corrupt
        began, sent = time.monotonic(), 0
        with full.open("rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(length, 256 * 1024))
                if not chunk:
                    break
                if flip and sent == 0 and start == 0:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                self.wfile.write(chunk)
                length -= len(chunk)
                sent += len(chunk)
                if self.site.rate:
                    ahead = sent / self.site.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)  # throttling the double's output, not waiting for work


def start_modelscope(root: Path, token: str) -> tuple[ModelScopeServer, ThreadingHTTPServer]:
    site = ModelScopeServer(root=root, token=token)
    handler = type("ModelScopeHandler", (_Handler,), {"site": site})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return site, server


@pytest.fixture(scope="session")
def modelscope_server(tmp_path_factory) -> Iterator[ModelScopeServer]:
    site, server = start_modelscope(tmp_path_factory.mktemp("modelscope"), "ms-" + secrets.token_hex(16))
    yield site
    server.shutdown()
    server.server_close()
