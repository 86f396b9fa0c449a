"""A Hugging Face Hub double on 127.0.0.1, serving a folder of repos: `<root>/<owner>/<name>/<files>`.

Why it exists: this machine (and CI) reaches no hub, and the console's Hugging Face datasets
must be tested through the real client, `huggingface_hub`, not a mock of it. So this serves the
few HTTP endpoints that client calls for what the console does, with the answers the real hub
gives (read from huggingface_hub's source: hf_api.py, file_download.py, utils/_http.py):

- `GET /api/models/{repo}[/revision/{rev}]`: model info; `sha` is the commit the revision
  resolves to (`HfApi.model_info`).
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=&expand=`: entries with `type`, `oid`,
  `size`, `path` and `lfs` for LFS files, paginated with a `Link: <...>; rel="next"` header
  (`HfApi.list_repo_tree`).
- `POST /api/models/{repo}/paths-info/{rev}` (form or JSON `paths`): the entries that exist
  (`HfApi.get_paths_info`).
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: `ETag` (the git blob id), `X-Repo-Commit`,
  `Content-Length`, `Accept-Ranges`, `Range` -> 206 / 416. LFS files (weights, or anything over
  10 MiB) answer 302 to a second listener standing in for the CDN, with `X-Linked-Etag` (the
  sha256) and `X-Linked-Size`, as the hub does; the CDN URL is signed and takes no token, and
  the client drops the Authorization header on the way there (another origin).
- Errors as `hf_raise_for_status` reads them: `X-Error-Code` RepoNotFound / RevisionNotFound /
  EntryNotFound, and 401 `X-Error-Message: Invalid credentials in Authorization header` for a
  wrong token. A private repo (or one that does not exist) answers 401 RepoNotFound without a
  valid token and 404 RepoNotFound with one, as the hub does so as not to leak which is which.

Simplifications (documented, none seen by the client): one valid token; a repo has one branch,
`main`, plus its current commit id (a hash of the files' paths, sizes and mtimes), and no
history, so an older commit id is RevisionNotFound; the LFS "sha256" is a hash of the file's
size, mtime and inode, because the test checkpoints are sparse multi-GB files and the client
only compares oids; no Xet headers are sent, so the client never tries Xet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".model"}
LFS_MIN_SIZE = 10 * 2**20
MAIN = "main"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


@dataclass
class HubServer:
    root: Path  # <root>/<owner>/<name>/<files>
    token: str  # the one token the hub accepts
    endpoint: str = ""
    cdn: str = ""
    page_size: int = 1000  # tree entries per page (the hub's is 1000)
    private: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, int, bool]] = field(default_factory=list)  # method, path, status, auth
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def repo(self, repo_id: str, *, private: bool = False) -> Path:
        """A new, empty repo folder; files written into it are served at once."""
        folder = self.root / repo_id
        folder.mkdir(parents=True)
        if private:
            self.private.add(repo_id)
        return folder

    def commit(self, repo_id: str) -> str:
        return _commit(self.root / repo_id)

    def log(self, method: str, path: str, status: int, auth: bool) -> None:
        with self._lock:
            self.requests.append((method, path, status, auth))

    def sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:32]


# --------------------------------------------------------------------------- the repo's git view


def _files(folder: Path) -> dict[str, os.stat_result]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[path.relative_to(folder).as_posix()] = path.stat()
    return out


def _commit(folder: Path) -> str:
    digest = hashlib.sha1(b"commit")
    for path, st in _files(folder).items():
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _is_lfs(path: str, size: int) -> bool:
    return Path(path).suffix in LFS_SUFFIXES or size > LFS_MIN_SIZE


def _blob_oid(full: Path, path: str, st: os.stat_result) -> str:
    if _is_lfs(path, st.st_size):  # the pointer file's blob id, as git stores LFS files
        return hashlib.sha1(f"pointer {_lfs_sha(st)}".encode()).hexdigest()
    data = full.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def _lfs_sha(st: os.stat_result) -> str:
    return hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode()).hexdigest()


def _entry(folder: Path, path: str) -> dict | None:
    full = folder / path
    if full.is_dir() and path:
        return {
            "type": "directory",
            "oid": hashlib.sha1(f"tree {path}".encode()).hexdigest(),
            "size": 0,
            "path": path,
        }
    if not full.is_file():
        return None
    st = full.stat()
    entry = {"type": "file", "oid": _blob_oid(full, path, st), "size": st.st_size, "path": path}
    if _is_lfs(path, st.st_size):
        entry["lfs"] = {"oid": _lfs_sha(st), "size": st.st_size, "pointerSize": 134}
    return entry


# --------------------------------------------------------------------------- HTTP


class _Reply(Exception):
    def __init__(self, status: int, code: str = "", message: str = "", **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    hub: HubServer
    is_cdn = False

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self._status = 500
        try:
            if self.is_cdn:
                self._cdn(url)
            else:
                self._hub(url)
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-download
            self.close_connection = True
        except _Reply as reply:
            body = json.dumps({"error": reply.message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": reply.message, **reply.headers}
            if reply.code:
                headers["X-Error-Code"] = reply.code
            self._send(reply.status, body, headers)
        self.hub.log(self.command, url.path, self._status, "authorization" in self.headers)

    # -- helpers

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self._status = status
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: object, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _authorize(self, repo_id: str) -> Path:
        """The repo's folder, or the hub's answer for a bad token, a private or a missing repo."""
        given = self.headers.get("authorization", "")
        authed = False
        if given:
            if not hmac.compare_digest(given, f"Bearer {self.hub.token}"):
                raise _Reply(401, "", INVALID_CREDENTIALS)
            authed = True
        folder = self.hub.root / repo_id
        if repo_id.count("/") != 1 or not folder.is_dir() or (repo_id in self.hub.private and not authed):
            raise _Reply(401 if not authed else 404, "RepoNotFound", "Repository not found")
        return folder

    def _resolve(self, folder: Path, revision: str) -> str:
        commit = _commit(folder)
        if revision not in (MAIN, commit):
            raise _Reply(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    # -- the hub

    def _hub(self, url: urllib.parse.SplitResult) -> None:
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")[1:]]
        query = urllib.parse.parse_qs(url.query)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            folder = self._authorize(repo_id)
            if self.command == "GET" and rest[:1] in ([], ["revision"]):
                revision = rest[1] if len(rest) == 2 else MAIN
                return self._model_info(folder, repo_id, self._resolve(folder, revision))
            if self.command == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                commit = self._resolve(folder, rest[1])
                return self._tree(url, folder, commit, "/".join(rest[2:]).strip("/"), query)
            if self.command == "POST" and rest[:1] == ["paths-info"] and len(rest) == 2:
                commit = self._resolve(folder, rest[1])
                return self._paths_info(folder, commit)
        if len(parts) >= 5 and parts[2] == "resolve" and self.command in ("GET", "HEAD"):
            repo_id = "/".join(parts[:2])
            folder = self._authorize(repo_id)
            commit = self._resolve(folder, parts[3])
            return self._resolve_file(folder, repo_id, commit, "/".join(parts[4:]))
        raise _Reply(404, "", "Not Found")

    def _model_info(self, folder: Path, repo_id: str, commit: str) -> None:
        files = _files(folder)
        newest = max((st.st_mtime for st in files.values()), default=0)
        self._json(
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit,
                "lastModified": datetime.fromtimestamp(newest, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "private": repo_id in self.hub.private,
                "gated": False,
                "disabled": False,
                "tags": [],
                "siblings": [{"rfilename": path} for path in files],
            }
        )

    def _tree(self, url, folder: Path, commit: str, path: str, query: dict) -> None:
        if path and not (folder / path).is_dir():
            raise _Reply(404, "EntryNotFound", f"{path} does not exist on {MAIN}")
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        base = folder / path
        found = base.rglob("*") if recursive else base.iterdir()
        entries = [_entry(folder, p.relative_to(folder).as_posix()) for p in sorted(found)]
        entries = [e for e in entries if e is not None]
        per_page = 50 if query.get("expand", ["false"])[0].lower() in ("true", "1") else self.hub.page_size
        start = int(base64.urlsafe_b64decode(query["cursor"][0]).decode()) if "cursor" in query else 0
        headers = {}
        if start + per_page < len(entries):
            cursor = base64.urlsafe_b64encode(str(start + per_page).encode()).decode()
            args = {k: v[0] for k, v in query.items() if k != "cursor"} | {"cursor": cursor}
            headers["Link"] = f'<{self.hub.endpoint}{url.path}?{urllib.parse.urlencode(args)}>; rel="next"'
        self._json(entries[start : start + per_page], headers)

    def _paths_info(self, folder: Path, commit: str) -> None:
        raw = self._body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(raw or b"{}").get("paths", [])
        else:
            paths = urllib.parse.parse_qs(raw.decode()).get("paths", [])
        entries = [_entry(folder, p.strip("/")) for p in paths if ".." not in p.split("/")]
        self._json([e for e in entries if e is not None])

    def _resolve_file(self, folder: Path, repo_id: str, commit: str, path: str) -> None:
        full = folder / path
        if ".." in path.split("/") or not full.is_file():
            # The hub names the commit even for a missing entry (the client caches the absence).
            raise _Reply(404, "EntryNotFound", f"{path} does not exist", **{"X-Repo-Commit": commit})
        st = full.stat()
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if _is_lfs(path, st.st_size):
            target = f"{repo_id}/{commit}/{urllib.parse.quote(path)}"
            location = f"{self.hub.cdn}/lfs/{target}?sig={self.hub.sign(target)}"
            headers |= {
                "Location": location,
                "ETag": f'"{_blob_oid(full, path, st)}"',
                "X-Linked-Etag": f'"{_lfs_sha(st)}"',
                "X-Linked-Size": str(st.st_size),
            }
            return self._send(302, b"", headers)
        self._file(full, headers | {"ETag": f'"{_blob_oid(full, path, st)}"'})

    def _file(self, full: Path, headers: dict[str, str]) -> None:
        size = full.stat().st_size
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and "," not in wanted:
            first, _, last = wanted[6:].partition("-")
            if first:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            else:  # a suffix: the last N bytes
                start, end = max(0, size - int(last)), size - 1
            if start >= size:
                self._status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
            headers = headers | {"Content-Range": f"bytes {start}-{end}/{size}"}
        length = end - start + 1
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        with full.open("rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(length, 2**20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                length -= len(chunk)

    # -- the CDN

    def _cdn(self, url: urllib.parse.SplitResult) -> None:
        target = url.path.removeprefix("/lfs/")
        signature = urllib.parse.parse_qs(url.query).get("sig", [""])[0]
        if self.command not in ("GET", "HEAD") or not hmac.compare_digest(signature, self.hub.sign(target)):
            raise _Reply(403, "", "Request has expired or the signature does not match")
        owner, name, commit, quoted = target.split("/", 3)
        folder = self.hub.root / owner / name
        path = urllib.parse.unquote(quoted)
        full = folder / path
        if commit != _commit(folder) or ".." in path.split("/") or not full.is_file():
            raise _Reply(404, "", "NoSuchKey")
        self._file(full, {"ETag": f'"{_lfs_sha(full.stat())}"', "Accept-Ranges": "bytes"})


def start_hub(root: Path, token: str) -> tuple[HubServer, list[ThreadingHTTPServer]]:
    hub = HubServer(root=root, token=token)
    servers = []
    for is_cdn in (False, True):
        handler = type("HubHandler", (_Handler,), {"hub": hub, "is_cdn": is_cdn})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    hub.endpoint = f"http://127.0.0.1:{servers[0].server_address[1]}"
    hub.cdn = f"http://127.0.0.1:{servers[1].server_address[1]}"
    return hub, servers


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory) -> Iterator[HubServer]:
    hub, servers = start_hub(tmp_path_factory.mktemp("hub"), "hf_" + secrets.token_hex(16))
    yield hub
    for server in servers:
        server.shutdown()
        server.server_close()
