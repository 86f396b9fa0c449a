"""The prewarm copier (datasets.copier), run as the Job runs it: a subprocess with arguments and
environment, against a real S3 server on 127.0.0.1 (rclone serve s3) and local folders.

No database and no Django: the copier must work with neither.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20


@dataclass
class Run:
    events: list[dict[str, Any]]
    returncode: int

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def first(self, kind: str) -> dict[str, Any]:
        return next(e for e in self.events if e["event"] == kind)

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]


class Copier:
    """A running `python -m datasets.copier`; its stdout is read line by line with a deadline."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "datasets.copier", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next_event(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line, or None at the end of the output."""
        if self._ended:
            return None
        line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        if line is None:
            self._ended = True
            return None
        event = json.loads(line)  # every stdout line must be JSON
        self.events.append(event)
        return event

    def finish(self, timeout: float = 120) -> Run:
        deadline = time.monotonic() + timeout
        while self.next_event(deadline) is not None:
            pass
        returncode = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        return Run(self.events, returncode)


def s3_env(s3_server, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(overrides)
    return env


def s3_args(s3_server, bucket: str, prefix: str, dest: Path, *more: str) -> list[str]:
    return [
        f"--source=s3://{bucket}/{prefix}",
        f"--dest={dest}",
        f"--endpoint-url={s3_server.endpoint_url}",
        "--region=us-east-1",
        "--path-style",
        *more,
    ]


def copy_s3(s3_server, bucket: str, prefix: str, dest: Path, *more: str, **env: str) -> Run:
    return Copier(s3_args(s3_server, bucket, prefix, dest, *more), s3_env(s3_server, **env)).finish()


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of the copied files (the copier's own dot-files left out)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".prewarm-")
    }


def leftovers(folder: Path) -> list[str]:
    """Anything in the destination that is neither a copied file nor the manifest or lock."""
    keep = {".prewarm-manifest.json", ".prewarm-lock"}
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name not in keep]


def lock_released(dest: Path, timeout: float) -> bool:
    """True once nothing (no copier, no s5cmd child) holds the destination's lock."""
    fd = os.open(dest / ".prewarm-lock", os.O_RDWR)
    try:
        taker = threading.Thread(target=fcntl.flock, args=(fd, fcntl.LOCK_EX), daemon=True)
        taker.start()
        taker.join(timeout)
        return not taker.is_alive()
    finally:
        os.close(fd)  # closing also drops the lock if the thread got it


def exited_within(pid: int, timeout: float) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])  # readable once the process is gone
    finally:
        os.close(pidfd)


@pytest.fixture
def model(s3_server, s3_bucket) -> dict[str, bytes]:
    """A small Hugging Face style tree with one ~20 MiB weight file, written into the bucket."""
    files = {
        "config.json": b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}',
        "tokenizer.json": b'{"version": "1.0"}' * 50,
        "model.safetensors": os.urandom(20 * MiB + 12345),
        "extra/notes.txt": b"hello\n",
    }
    for path, data in files.items():
        s3_server.put_file(s3_bucket, f"models/tiny/{path}", data)
    s3_server.put_file(s3_bucket, "models/other/not-this.txt", b"outside the prefix")
    return files


def test_s3_copy_of_a_model_tree(s3_server, s3_bucket, model, tmp_path):
    dest = tmp_path / "cache"
    run = copy_s3(s3_server, s3_bucket, "models/tiny", dest)

    assert run.returncode == 0, run.events
    assert run.kinds()[0] == "plan"
    assert "progress" in run.kinds()
    assert run.last["event"] == "done"
    plan = run.first("plan")
    assert plan["files_total"] == 4
    assert plan["bytes_total"] == sum(len(d) for d in model.values())
    assert (plan["files_skipped"], plan["bytes_skipped"]) == (0, 0)
    assert tree(dest) == model
    assert leftovers(dest) == []

    progress = [e for e in run.events if e["event"] == "progress"]
    fields = {
        "files_done",
        "files_total",
        "bytes_done",
        "bytes_total",
        "rate_bytes_per_second",
        "eta_seconds",
    }
    assert fields <= set(progress[0])
    done_bytes = [e["bytes_done"] for e in progress]
    assert done_bytes == sorted(done_bytes) and done_bytes[-1] <= plan["bytes_total"]
    listed = [tuple(f) for e in run.events if e["event"] == "files" for f in e["files"]]
    assert sorted(listed) == sorted((path, len(data)) for path, data in model.items())
    done = run.last
    assert (done["files_copied"], done["bytes_copied"]) == (4, plan["bytes_total"])
    assert done["seconds"] > 0
    assert s3_server.secret_key not in json.dumps(run.events)


def test_awkward_names_are_copied_as_they_are(s3_server, s3_bucket, tmp_path):
    # ".." inside a name, spaces, quotes, a backslash, a glob character, non-ASCII.
    files = {
        "v1..v2/weights.bin": b"w" * 1000,
        "with space/a \"quoted\" 'name'.txt": b"q",
        "back\\slash/star*.json": b"{}",
        "ünïcode/файл.txt": "ü".encode(),
        "plain/config.json": b"{}",
    }
    for path, data in files.items():
        s3_server.put_file(s3_bucket, f"m/{path}", data)
    dest = tmp_path / "cache"
    first = copy_s3(s3_server, s3_bucket, "m", dest)
    assert first.returncode == 0, first.events
    assert tree(dest) == files

    # Again after a change, now through per-file commands rather than the first run's wildcard.
    s3_server.put_file(s3_bucket, "m/v1..v2/weights.bin", b"W" * 1001)
    s3_server.put_file(s3_bucket, "m/with space/a \"quoted\" 'name'.txt", b"Q!")
    again = copy_s3(s3_server, s3_bucket, "m", dest)
    assert again.returncode == 0, again.events
    assert again.first("plan")["files_to_copy"] == 2
    assert tree(dest) == {
        **files,
        "v1..v2/weights.bin": b"W" * 1001,
        "with space/a \"quoted\" 'name'.txt": b"Q!",
    }

    # A new folder, all of it to copy: one wildcard command for it.
    for name in ("one.bin", "two [2].bin"):
        s3_server.put_file(s3_bucket, f"m/new folder/{name}", name.encode())
    third = copy_s3(s3_server, s3_bucket, "m", dest)
    assert (third.returncode, third.first("plan")["files_to_copy"]) == (0, 2)
    assert (dest / "new folder/two [2].bin").read_bytes() == b"two [2].bin"


def test_a_rerun_skips_everything_and_then_copies_only_what_changed(s3_server, s3_bucket, model, tmp_path):
    dest = tmp_path / "cache"
    assert copy_s3(s3_server, s3_bucket, "models/tiny", dest).returncode == 0
    weights = dest / "model.safetensors"
    weights_before = weights.stat()
    folder_before = dest.stat().st_mtime_ns

    hit = copy_s3(s3_server, s3_bucket, "models/tiny", dest)
    assert hit.returncode == 0
    assert dest.stat().st_mtime_ns == folder_before  # nothing created or removed in it
    plan = hit.first("plan")
    assert (plan["files_skipped"], plan["files_to_copy"]) == (4, 0)
    assert plan["bytes_skipped"] == plan["bytes_total"]
    assert hit.last["event"] == "done" and hit.last["files_copied"] == 0
    # How long a cache hit takes is measured by bench/prewarm.py, not asserted here.

    # One object rewritten with the same size (only its version differs), one gone.
    s3_server.put_file(s3_bucket, "models/tiny/config.json", model["config.json"].replace(b"64", b"65"))
    (s3_server.bucket_path(s3_bucket) / "models/tiny/extra/notes.txt").unlink()
    changed = copy_s3(s3_server, s3_bucket, "models/tiny", dest)

    assert changed.returncode == 0, changed.events
    plan = changed.first("plan")
    assert (plan["files_total"], plan["files_to_copy"], plan["files_skipped"]) == (3, 1, 2)
    assert plan["bytes_to_copy"] == len(model["config.json"])
    assert (plan["files_removed"], plan["removed"]) == (1, ["extra/notes.txt"])
    assert "removed" in plan["message"] and "extra/notes.txt" in plan["message"]
    assert (dest / "config.json").read_bytes() == model["config.json"].replace(b"64", b"65")
    assert not (dest / "extra").exists()
    # The 20 MiB file was not touched.
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns) == (weights_before.st_ino, weights_before.st_mtime_ns)
    assert changed.last["files_removed"] == 1


def test_a_killed_copy_resumes_with_only_the_missing_files(
    s3_server, throttled_s3_server, s3_bucket, tmp_path
):
    files = {f"big/shard-{i}.bin": os.urandom(32 * MiB) for i in range(8)}
    for path, data in files.items():
        s3_server.put_file(s3_bucket, path, data)
    dest = tmp_path / "cache"

    # 256 MiB at 16 MiB/s: the kill lands mid-way, however fast the machine.
    slow = ["--workers=1", "--progress-interval=0.05"]
    copier = Copier(s3_args(throttled_s3_server, s3_bucket, "big", dest, *slow), s3_env(throttled_s3_server))
    deadline = time.monotonic() + 60
    while True:
        event = copier.next_event(deadline)
        assert event is not None and event["event"] not in ("done", "error"), copier.events
        # Mid-way: some files finished, more in flight.
        if event["event"] == "progress" and event["bytes_done"] > 0 and event["files_done"] >= 2:
            pid = copier.process.pid
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            copier.process.kill()
            break
    copier.process.wait(timeout=10)
    assert children, "s5cmd was not running when the copier was killed"
    # s5cmd died with the copier (it did not finish the copy on its own) and holds nothing.
    for child in children:
        assert exited_within(child, timeout=10)
    assert lock_released(dest, timeout=10)
    # s5cmd writes shard-3.bin into a temporary shard-3.bin123456 beside it and renames it when
    # complete; the kill leaves that temporary file behind.
    temporary = [p.name for p in dest.glob("shard-*.bin[0-9]*")]
    assert temporary, "no copy was in flight when the copier was killed"
    in_flight = {name.split(".bin")[0] for name in temporary}
    started = in_flight | {p.stem for p in dest.glob("shard-*.bin")}
    complete = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.glob("shard-*.bin")}
    assert len(complete) >= 2 and len(started) < len(files), (complete, started)
    for name in complete:  # a file under its final name is always whole
        assert (dest / name).read_bytes() == files[f"big/{name}"]

    resumed = copy_s3(s3_server, s3_bucket, "big", dest, "--workers=4")
    assert resumed.returncode == 0, resumed.events
    plan = resumed.first("plan")
    assert plan["files_skipped"] == len(complete)
    assert plan["files_to_copy"] == len(files) - len(complete)
    assert plan["bytes_skipped"] == len(complete) * 32 * MiB
    # The killed s5cmd's temporary files are gone too.
    assert tree(dest) == {path.removeprefix("big/"): data for path, data in files.items()}
    for name, identity in complete.items():
        assert ((dest / name).stat().st_ino, (dest / name).stat().st_mtime_ns) == identity
    assert leftovers(dest) == []


def test_sigterm_stops_the_copy_with_an_error_and_no_leftovers(
    s3_server, throttled_s3_server, s3_bucket, tmp_path
):
    for i in range(8):
        s3_server.put_file(s3_bucket, f"big/shard-{i}.bin", os.urandom(32 * MiB))
    dest = tmp_path / "cache"
    slow = ["--workers=1", "--progress-interval=0.05"]
    server = throttled_s3_server  # the signal lands mid-copy, however fast the machine
    copier = Copier(s3_args(server, s3_bucket, "big", dest, *slow), s3_env(server))
    deadline = time.monotonic() + 60
    while (event := copier.next_event(deadline)) is not None:
        if event["event"] == "progress" and event["bytes_done"] > 0:
            copier.process.send_signal(signal.SIGTERM)  # what Kubernetes sends when the pod goes
            break
    run = copier.finish()
    assert (run.returncode, run.last["event"], run.last["reason"]) == (2, "error", "Interrupted")
    assert lock_released(dest, timeout=10)
    assert leftovers(dest) == []


def test_verify_md5_says_what_it_could_not_check(s3_server, s3_bucket, model, tmp_path):
    # rclone serve s3 --etag-hash '' gives no ETags: sizes are checked, MD5s cannot be.
    run = copy_s3(s3_server, s3_bucket, "models/tiny", tmp_path / "cache", "--verify-md5")
    assert run.returncode == 0, run.events
    assert (run.last["md5_verified"], run.last["md5_unverifiable"]) == (0, 4)
    assert "size checked only" in run.last["message"]


def test_wrong_credentials_are_access_denied(s3_server, s3_bucket, model, tmp_path):
    wrong = "not-the-secret-0123456789"
    run = copy_s3(s3_server, s3_bucket, "models/tiny", tmp_path / "cache", AWS_SECRET_ACCESS_KEY=wrong)
    assert run.returncode == 2
    assert run.kinds() == ["error"]
    assert run.last["reason"] == "AccessDenied"
    assert "access key" in run.last["message"]
    assert wrong not in json.dumps(run.events)


def test_a_missing_bucket_is_no_such_bucket(s3_server, tmp_path):
    run = copy_s3(s3_server, "no-such-bucket-here", "models", tmp_path / "cache")
    assert (run.returncode, run.last["event"], run.last["reason"]) == (2, "error", "NoSuchBucket")
    assert "no-such-bucket-here" in run.last["message"]


def test_an_empty_prefix_is_empty_source(s3_server, s3_bucket, model, tmp_path):
    run = copy_s3(s3_server, s3_bucket, "models/tinyy", tmp_path / "cache")
    assert (run.returncode, run.last["event"], run.last["reason"]) == (2, "error", "EmptySource")
    assert "models/tinyy/" in run.last["message"]


def test_an_unreachable_endpoint_is_source_unreachable(s3_server, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    args = [
        "--source=s3://bucket/models",
        f"--dest={tmp_path / 'cache'}",
        f"--endpoint-url=http://127.0.0.1:{closed_port}",
    ]
    run = Copier(args, s3_env(s3_server)).finish()
    assert (run.returncode, run.last["reason"]) == (2, "SourceUnreachable")


def test_bad_arguments_are_an_error_event(tmp_path):
    run = Copier([f"--dest={tmp_path}", "--workers=0", "--source=/x"], dict(os.environ)).finish()
    assert (run.returncode, run.last["event"], run.last["reason"]) == (2, "error", "BadArguments")


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def copy_local(source: Path, dest: Path, *more: str) -> Run:
    return Copier([f"--source={source}", f"--dest={dest}", *more], dict(os.environ)).finish()


def test_a_local_folder_is_copied_and_then_copied_incrementally(tmp_path):
    source, dest = tmp_path / "nfs-export", tmp_path / "cache"
    files = {
        "config.json": b'{"architectures": ["X"]}',
        "weights/model-00001-of-00002.safetensors": os.urandom(3 * MiB),
        "weights/model-00002-of-00002.safetensors": os.urandom(2 * MiB),
        "tokenizer/vocab.txt": b"a\nb\n",
    }
    write_tree(source, files)

    first = copy_local(source, dest, "--verify-md5")
    assert first.returncode == 0, first.events
    assert first.first("plan")["bytes_total"] == sum(len(d) for d in files.values())
    assert tree(dest) == files
    assert first.last["md5_verified"] == 4
    assert leftovers(dest) == []

    manifest = dest / ".prewarm-manifest.json"
    written = (manifest.stat().st_ino, manifest.stat().st_mtime_ns, dest.stat().st_mtime_ns)
    hit = copy_local(source, dest)
    assert (hit.first("plan")["files_skipped"], hit.first("plan")["files_to_copy"]) == (4, 0)
    assert hit.last["files_copied"] == 0  # how long it takes is measured by bench/prewarm.py
    # Nothing changed, nothing written, not even a file or folder created and removed (the
    # folder's mtime): a cache hit cannot stall behind a disk busy writing back a big copy.
    assert (manifest.stat().st_ino, manifest.stat().st_mtime_ns, dest.stat().st_mtime_ns) == written

    # Same size, newer mtime: copied again. Different size: copied. Deleted: removed.
    vocab = source / "tokenizer/vocab.txt"
    vocab.write_bytes(b"c\nd\n")
    os.utime(vocab, ns=(vocab.stat().st_atime_ns, vocab.stat().st_mtime_ns + 10**9))
    (source / "config.json").write_bytes(b'{"architectures": ["Y"], "more": 1}')
    (source / "weights/model-00002-of-00002.safetensors").unlink()
    untouched = (dest / "weights/model-00001-of-00002.safetensors").stat()

    changed = copy_local(source, dest)
    assert changed.returncode == 0, changed.events
    plan = changed.first("plan")
    assert (plan["files_to_copy"], plan["files_skipped"], plan["files_removed"]) == (2, 1, 1)
    assert plan["removed"] == ["weights/model-00002-of-00002.safetensors"]
    assert tree(dest) == tree(source)
    after = (dest / "weights/model-00001-of-00002.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)
    assert manifest.stat().st_ino != written[0]  # rewritten with the changes
    assert set(json.loads(manifest.read_text())["files"]) == set(files) - {
        "weights/model-00002-of-00002.safetensors"
    }


def test_a_missing_or_empty_local_folder_says_so(tmp_path):
    missing = copy_local(tmp_path / "not-mounted", tmp_path / "cache")
    assert (missing.returncode, missing.last["reason"]) == (2, "SourceUnreachable")
    (tmp_path / "empty").mkdir()
    empty = copy_local(tmp_path / "empty", tmp_path / "cache")
    assert (empty.returncode, empty.last["reason"]) == (2, "EmptySource")


def test_a_destination_that_cannot_be_written_says_so(tmp_path):
    write_tree(tmp_path / "export", {"config.json": b"{}"})
    (tmp_path / "volume").write_bytes(b"")  # a file where the cache volume should be a folder
    run = copy_local(tmp_path / "export", tmp_path / "volume/cache")
    assert (run.returncode, run.last["reason"]) == (2, "DestinationUnwritable")
    assert "volume/cache" in run.last["message"] and "read-write" in run.last["message"]


def test_folders_whose_objects_all_need_copying_become_one_wildcard():
    from datasets.copier.plan import SourceFile
    from datasets.copier.s3 import S3Source, commands

    source = S3Source.parse("s3://bkt/models/m")
    listed = ["a/1", "a/2", "b/1", "b/2", "c/x/1", "c/y/1", "top.json"]
    to_copy = [SourceFile(p, 1, {}, f"models/m/{p}") for p in ["a/1", "a/2", "b/1", "c/x/1", "c/y/1"]]
    assert commands(source, to_copy, listed, Path("/cache/.prewarm-partial")) == [
        'cp "s3://bkt/models/m/a/*" "/cache/.prewarm-partial/a/"',
        'cp --raw "s3://bkt/models/m/b/1" "/cache/.prewarm-partial/b/1"',
        'cp "s3://bkt/models/m/c/*" "/cache/.prewarm-partial/c/"',
    ]
    everything = [SourceFile(p, 1, {}, f"models/m/{p}") for p in listed]
    assert commands(source, everything, listed, Path("/p")) == ['cp "s3://bkt/models/m/*" "/p/"']


def test_a_prefix_with_glob_characters_is_listed_literally(s3_server, s3_bucket, tmp_path):
    # s5cmd reads "[" in a pattern as a glob: the copier lists from before it and filters.
    s3_server.put_file(s3_bucket, "runs/v[1]/model.bin", b"one")
    s3_server.put_file(s3_bucket, "runs/v1/model.bin", b"not this")
    s3_server.put_file(s3_bucket, "runs/v[1]-old/model.bin", b"nor this")
    run = copy_s3(s3_server, s3_bucket, "runs/v[1]", tmp_path / "cache")
    assert run.returncode == 0, run.events
    assert run.first("plan")["files_total"] == 1
    assert tree(tmp_path / "cache") == {"model.bin": b"one"}


def test_the_sweep_removes_only_what_a_killed_s5cmd_leaves(tmp_path):
    from datasets.copier.plan import Destination

    files = {
        "a/model.bin": b"whole",
        "a/model.bin4026531": b"half",  # s5cmd's temporary file of a/model.bin
        "a/shard-1": b"whole",
        "a/shard-12": b"a listed file whose name is another's plus digits",
        "a/shard-1999": b"half",
        "b/star*.json": b"{}",
        "b/star77.json": b"half",  # os.CreateTemp puts the digits in place of the "*"
        "b/notes2024": b"not ours to judge: not a listed name plus digits",
        ".prewarm-manifest.json": b"{}",
    }
    write_tree(tmp_path, files)
    listed = {"a/model.bin", "a/shard-1", "a/shard-12", "b/star*.json"}
    assert Destination(tmp_path).sweep_s5cmd_leftovers(listed) == 3
    left = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert left == set(files) - {"a/model.bin4026531", "a/shard-1999", "b/star77.json"}


def test_in_flight_bytes_count_the_temporary_files_of_big_files_only(tmp_path):
    from datasets.copier.plan import SourceFile
    from datasets.copier.s3 import InFlight

    big, small = 64 * MiB, 4096
    to_copy = [
        SourceFile("m/weights.bin", big, {}, "m/weights.bin"),
        SourceFile("m/other.bin", big, {}, "m/other.bin"),
        SourceFile("m/config.json", small, {}, "m/config.json"),
        SourceFile("m/shard-1", big, {}, "m/shard-1"),
    ]
    listed = [file.path for file in to_copy] + ["m/shard-12"]  # shard-12: in place from a run before
    write_tree(
        tmp_path,
        {
            "m/weights.bin4026531": os.urandom(3 * MiB),  # s5cmd's temporary file, 3 MiB in
            "m/other.bin77": os.urandom(MiB),
            "m/config.json12": b"x" * 1000,  # a small file: one GET, not looked for
            "m/unrelated.bin55": b"y" * 5000,  # not a temporary file of a file being copied
            "m/shard-12": b"z" * 7000,  # shard-1 plus digits, but a listed file: not shard-1's
        },
    )
    finished: set[str] = set()
    in_flight = InFlight(tmp_path, to_copy, finished, listed)
    assert in_flight() == 4 * MiB
    finished.add("m/weights.bin")  # renamed into place: counted as done elsewhere, not here
    assert in_flight() == MiB
