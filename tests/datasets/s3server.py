"""A real S3-compatible server on 127.0.0.1 for the tests: `rclone serve s3` over a folder.

Faster and more faithful than patching boto3. Started once per session; each test gets its
own bucket (a sub-folder of the served directory), so tests never see each other's objects.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

RCLONE = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    root: Path  # the served folder: <root>/<bucket>/<key>

    def bucket_path(self, bucket: str) -> Path:
        return self.root / bucket

    def put_file(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object straight into the served folder (rclone serves what is there)."""
        path = self.root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(root: Path, *extra: str) -> Iterator[S3Server]:
    port = _free_port()
    access_key, secret_key = "test-" + secrets.token_hex(4), secrets.token_hex(16)
    process = subprocess.Popen(
        [
            RCLONE, "serve", "s3", str(root),
            "--addr", f"127.0.0.1:{port}",
            "--auth-key", f"{access_key},{secret_key}",
            # The default MD5 ETag re-hashes files on every listing: throughput collapses.
            "--etag-hash", "",
            "--dir-cache-time", "0s",
            "--vfs-cache-mode", "off",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)  # any HTTP answer means it is up
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"rclone serve s3 did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
    try:
        yield S3Server(endpoint_url=endpoint, access_key=access_key, secret_key=secret_key, root=root)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    with _serve(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def throttled_s3_server(s3_server: S3Server) -> Iterator[S3Server]:
    """The same buckets served at 16 MiB/s, for tests that must act while a copy is under way.

    Without the limit a loopback copy of a few hundred MiB can end before the test's next step,
    however fast the test is.
    """
    with _serve(s3_server.root, "--bwlimit", "16M") as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket for one test."""
    name = f"b-{uuid.uuid4().hex[:10]}"
    s3_server.bucket_path(name).mkdir()
    return name
