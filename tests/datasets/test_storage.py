"""Reading datasets without downloading them: S3 against a real `rclone serve s3` on 127.0.0.1,
local folders, and the prewarm file manifest. No database."""

import os
import socket

import pytest

from datasets.storage import (
    FileEntry,
    LocalStorage,
    ManifestStorage,
    S3Storage,
    Storage,
    StorageError,
    clean_path,
)

CONFIG = b'{"architectures": ["ChatGLMModel"], "num_layers": 28}'
WEIGHTS = bytes(range(256)) * 40  # 10,240 bytes


def s3_storage(server, bucket: str, prefix: str = "", *, secret: str | None = None, key: str | None = None):
    return S3Storage(
        endpoint_url=server.endpoint_url,
        bucket=bucket,
        prefix=prefix,
        region="us-east-1",
        access_key=key or server.access_key,
        secret_key=secret or server.secret_key,
        path_style=True,
    )


@pytest.fixture
def s3_tree(s3_server, s3_bucket):
    put = s3_server.put_file
    put(s3_bucket, "top.txt", b"hello")
    put(s3_bucket, "models/README.md", b"# models\n")
    put(s3_bucket, "models/THUDM/chatglm2-6b/config.json", CONFIG)
    put(s3_bucket, "models/THUDM/chatglm2-6b/model-00001-of-00002.safetensors", WEIGHTS)
    put(s3_bucket, "models/THUDM/chatglm2-6b/model-00002-of-00002.safetensors", WEIGHTS[:100])
    put(s3_bucket, "models/tiny/1/model.py", b"pass\n")
    return s3_bucket


# --------------------------------------------------------------------------- S3


def test_s3_lists_folders_and_files_with_sizes(s3_server, s3_tree):
    storage = s3_storage(s3_server, s3_tree)
    assert isinstance(storage, Storage)

    root = storage.list_dir("")
    assert root.folders == ["models"]
    assert root.files == [FileEntry("top.txt", 5)]

    models = storage.list_dir("models")
    assert models.folders == ["THUDM", "tiny"]
    assert models.files == [FileEntry("README.md", 9)]

    model = storage.list_dir("models/THUDM/chatglm2-6b/")  # a trailing slash is the same folder
    assert model.path == "models/THUDM/chatglm2-6b"
    assert model.folders == []
    assert model.files == [
        FileEntry("config.json", len(CONFIG)),
        FileEntry("model-00001-of-00002.safetensors", 10_240),
        FileEntry("model-00002-of-00002.safetensors", 100),
    ]
    assert model.as_dict()["files"][0] == {"name": "config.json", "size": len(CONFIG)}


def test_s3_paths_are_relative_to_the_prefix(s3_server, s3_tree):
    storage = s3_storage(s3_server, s3_tree, prefix="/models/")
    assert storage.list_dir("").folders == ["THUDM", "tiny"]
    assert storage.list_dir("THUDM").folders == ["chatglm2-6b"]
    assert storage.read_bytes("THUDM/chatglm2-6b/config.json") == CONFIG
    storage.check()


def test_s3_listing_follows_pagination(s3_server, s3_bucket):
    # rclone answers at most 1,000 keys per page, like AWS.
    for i in range(1_005):
        s3_server.put_file(s3_bucket, f"many/f{i:04d}.bin", b"x" * (i % 7))
    listing = s3_storage(s3_server, s3_bucket).list_dir("many")
    assert len(listing.files) == 1_005
    assert listing.files[-1] == FileEntry("f1004.bin", 1004 % 7)


def test_s3_ranged_reads(s3_server, s3_tree):
    storage = s3_storage(s3_server, s3_tree, prefix="models")
    path = "THUDM/chatglm2-6b/model-00001-of-00002.safetensors"
    assert storage.read_bytes(path, 0, 8) == WEIGHTS[:8]
    assert storage.read_bytes(path, 300, 17) == WEIGHTS[300:317]
    assert storage.read_bytes(path, 10_000) == WEIGHTS[10_000:]
    assert storage.read_bytes(path, 10_230, 100) == WEIGHTS[10_230:]  # clipped at the end
    assert storage.read_bytes(path, 20_000, 10) == b""  # past the end, as a file read
    assert storage.read_bytes(path, 5, 0) == b""
    assert storage.read_bytes(path) == WEIGHTS


def test_s3_ranged_read_of_a_huge_object_reads_only_the_range(s3_server, s3_bucket):
    huge = s3_server.bucket_path(s3_bucket) / "big" / "weights.bin"
    huge.parent.mkdir()
    with huge.open("wb") as f:
        f.write(b"HEAD")
        f.seek(3 * 1024**3 - 4)
        f.write(b"TAIL")  # a 3 GiB sparse file: served by rclone, never downloaded here
    storage = s3_storage(s3_server, s3_bucket)
    assert storage.list_dir("big").files == [FileEntry("weights.bin", 3 * 1024**3)]
    assert storage.read_bytes("big/weights.bin", 0, 4) == b"HEAD"
    assert storage.read_bytes("big/weights.bin", 3 * 1024**3 - 4, 4) == b"TAIL"


def test_s3_exists_and_missing_paths(s3_server, s3_tree):
    storage = s3_storage(s3_server, s3_tree)
    assert storage.exists("")
    assert storage.exists("top.txt")
    assert storage.exists("models/THUDM")  # a folder is a common prefix
    assert not storage.exists("models/THUD")
    assert not storage.exists("nope.txt")
    with pytest.raises(StorageError) as missing_folder:
        storage.list_dir("models/nothing-here")
    assert missing_folder.value.reason == "NotFound"
    with pytest.raises(StorageError) as missing_file:
        storage.read_bytes("models/nope.json")
    assert missing_file.value.reason == "NotFound"
    assert "models/nope.json" in str(missing_file.value)


def test_s3_refuses_paths_climbing_out_of_the_prefix(s3_server, s3_tree):
    storage = s3_storage(s3_server, s3_tree, prefix="models/THUDM")
    for bad in ("../top.txt", "chatglm2-6b/../../top.txt"):
        with pytest.raises(StorageError) as error:
            storage.read_bytes(bad)
        assert error.value.reason == "InvalidPath"


def test_s3_check_accepts_a_readable_prefix(s3_server, s3_tree):
    s3_storage(s3_server, s3_tree).check()
    s3_storage(s3_server, s3_tree, prefix="models/THUDM").check()


def test_s3_wrong_secret_is_access_denied_and_never_echoes_the_secret(s3_server, s3_tree):
    secret = "wrong-" + "s3cr3t" * 5
    storage = s3_storage(s3_server, s3_tree, secret=secret)
    for call in (storage.check, lambda: storage.list_dir(""), lambda: storage.read_bytes("top.txt", 0, 2)):
        with pytest.raises(StorageError) as error:
            call()
        assert error.value.reason == "AccessDenied"
        assert str(error.value).startswith("The S3 credentials were refused (AccessDenied)")
        assert secret not in str(error.value)
        assert s3_server.secret_key not in str(error.value)
    with pytest.raises(StorageError) as head:
        storage.exists("top.txt")  # HEAD answers a bare 403
    assert head.value.reason == "AccessDenied"


def test_s3_unknown_access_key(s3_server, s3_tree):
    with pytest.raises(StorageError) as error:
        s3_storage(s3_server, s3_tree, key="nobody").check()
    assert error.value.reason == "InvalidAccessKeyId"
    assert str(error.value).startswith("The S3 credentials were refused (InvalidAccessKeyId)")


def test_s3_missing_bucket(s3_server):
    with pytest.raises(StorageError) as error:
        s3_storage(s3_server, "no-such-bucket").check()
    assert error.value.reason == "NoSuchBucket"
    assert "'no-such-bucket' does not exist" in str(error.value)


def test_s3_empty_prefix_and_empty_bucket(s3_server, s3_tree, s3_bucket):
    with pytest.raises(StorageError) as prefix:
        s3_storage(s3_server, s3_tree, prefix="models/thudm").check()  # keys are case-sensitive
    assert prefix.value.reason == "EmptyPrefix"
    assert "models/thudm/" in str(prefix.value)
    # The prefix names a file, not a folder: nothing lives under it either.
    with pytest.raises(StorageError) as file_prefix:
        s3_storage(s3_server, s3_tree, prefix="top.txt").check()
    assert file_prefix.value.reason == "EmptyPrefix"


def test_s3_empty_bucket(s3_server, s3_bucket):
    with pytest.raises(StorageError) as error:
        s3_storage(s3_server, s3_bucket).check()
    assert error.value.reason == "EmptyBucket"


def test_s3_unreachable_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    storage = S3Storage(f"http://127.0.0.1:{port}", "bucket", "", "us-east-1", "key", "secret-value", True)
    with pytest.raises(StorageError) as error:
        storage.check()
    assert error.value.reason == "Unreachable"
    assert f"127.0.0.1:{port}" in str(error.value)
    assert "secret-value" not in str(error.value)


# --------------------------------------------------------------------------- local folders


@pytest.fixture
def local_tree(tmp_path):
    root = tmp_path / "dataset"
    (root / "THUDM" / "chatglm2-6b").mkdir(parents=True)
    (root / "THUDM" / "chatglm2-6b" / "config.json").write_bytes(CONFIG)
    (root / "THUDM" / "chatglm2-6b" / "model.safetensors").write_bytes(WEIGHTS)
    (root / "README.md").write_text("hi")
    outside = tmp_path / "secrets"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")
    # Symlinks: one staying inside the dataset, two leaving it.
    (root / "latest").symlink_to(root / "THUDM" / "chatglm2-6b", target_is_directory=True)
    (root / "leak").symlink_to(outside, target_is_directory=True)
    (root / "passwd").symlink_to(outside / "passwd")
    return root


def test_local_lists_reads_and_checks(local_tree):
    storage = LocalStorage(local_tree)
    assert isinstance(storage, Storage)
    root = storage.list_dir("")
    assert root.folders == ["THUDM", "latest"]  # the escaping symlinks are not part of the dataset
    assert root.files == [FileEntry("README.md", 2)]
    assert storage.list_dir("THUDM/chatglm2-6b").files == [
        FileEntry("config.json", len(CONFIG)),
        FileEntry("model.safetensors", 10_240),
    ]
    assert storage.read_bytes("THUDM/chatglm2-6b/model.safetensors", 300, 17) == WEIGHTS[300:317]
    assert storage.read_bytes("latest/config.json") == CONFIG  # symlinks inside are fine
    assert storage.exists("THUDM/chatglm2-6b/config.json")
    assert not storage.exists("THUDM/nope")
    storage.check()


def test_local_refuses_dot_dot(local_tree):
    storage = LocalStorage(local_tree)
    for call in (
        lambda: storage.read_bytes("../secrets/passwd"),
        lambda: storage.list_dir(".."),
        lambda: storage.exists("THUDM/../../secrets"),
    ):
        with pytest.raises(StorageError) as error:
            call()
        assert error.value.reason == "InvalidPath"


def test_local_refuses_symlinks_out_of_the_root(local_tree):
    storage = LocalStorage(local_tree)
    for call in (
        lambda: storage.read_bytes("passwd"),
        lambda: storage.read_bytes("leak/passwd"),
        lambda: storage.list_dir("leak"),
    ):
        with pytest.raises(StorageError) as error:
            call()
        assert error.value.reason == "InvalidPath"
        assert "outside the dataset" in str(error.value)


def test_local_missing_and_empty_folders(tmp_path):
    with pytest.raises(StorageError) as missing:
        LocalStorage(tmp_path / "nope").check()
    assert missing.value.reason == "NotFound"
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError) as empty:
        LocalStorage(tmp_path / "empty").check()
    assert empty.value.reason == "EmptyPrefix"
    (tmp_path / "empty" / "file").write_text("x")
    with pytest.raises(StorageError) as not_folder:
        LocalStorage(tmp_path / "empty").list_dir("file")
    assert not_folder.value.reason == "NotAFolder"


# --------------------------------------------------------------------------- prewarm manifest


def test_manifest_lists_from_the_reported_files():
    storage = ManifestStorage(
        [
            ("THUDM/chatglm2-6b/config.json", 1_234),
            ("THUDM/chatglm2-6b/model-00001-of-00002.safetensors", 9_000_000_000),
            ("/THUDM/chatglm2-6b/model-00002-of-00002.safetensors", 3_000_000_000),
            ("README.md", 10),
        ]
    )
    assert isinstance(storage, Storage)
    root = storage.list_dir("")
    assert root.folders == ["THUDM"]
    assert root.files == [FileEntry("README.md", 10)]
    assert storage.list_dir("THUDM").folders == ["chatglm2-6b"]
    assert storage.list_dir("THUDM/chatglm2-6b").files[1] == FileEntry(
        "model-00001-of-00002.safetensors", 9_000_000_000
    )
    assert storage.exists("THUDM") and storage.exists("THUDM/chatglm2-6b/config.json")
    assert not storage.exists("THUDM/other")
    storage.check()
    with pytest.raises(StorageError) as missing:
        storage.list_dir("THUDM/other")
    assert missing.value.reason == "NotFound"


def test_manifest_files_are_not_readable():
    storage = ManifestStorage([("m/config.json", 10)])
    with pytest.raises(StorageError) as error:
        storage.read_bytes("m/config.json", 0, 8)
    assert error.value.reason == "NotReadable"
    assert "not readable from the console" in str(error.value)


def test_empty_manifest_asks_for_a_prewarm():
    with pytest.raises(StorageError) as error:
        ManifestStorage([]).check()
    assert error.value.reason == "EmptyManifest"


def test_clean_path():
    assert clean_path("/a//b/./c/") == "a/b/c"
    assert clean_path("") == ""
    assert clean_path(os.sep.join(["a", "b"])) == "a/b"
    with pytest.raises(StorageError):
        clean_path("a/../../b")
