"""The model-path picker's layout check and the GPU fit estimate, on generated model trees.

No database. The 6B checkpoints are sparse files (see modeltrees.py): real sizes, no disk."""

import math

import pytest

from datasets.inspect import (
    GB,
    GiB,
    InspectError,
    check_layout,
    estimate_fit,
    read_safetensors_header,
)
from datasets.storage import Listing, LocalStorage, ManifestStorage, S3Storage, StorageError
from tests.datasets import modeltrees as trees

CHATGLM = "THUDM/chatglm2-6b"
CHATGLM2_PARAMETERS = 6_243_584_032  # THUDM/chatglm2-6b: 6,243,584,000 + the 32-entry rotary inv_freq


class CountingStorage:
    """Wraps a Storage and counts the bytes read through it."""

    def __init__(self, inner):
        self.inner = inner
        self.bytes_read = 0
        self.reads: list[tuple[str, int, int | None]] = []

    def list_dir(self, path: str = "") -> Listing:
        return self.inner.list_dir(path)

    def read_bytes(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        data = self.inner.read_bytes(path, start, length)
        self.bytes_read += len(data)
        self.reads.append((path, start, length))
        return data

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def check(self) -> None:
        self.inner.check()


@pytest.fixture
def root(tmp_path):
    return tmp_path / "dataset"


@pytest.fixture
def storage(root):
    root.mkdir()
    return LocalStorage(root)


# =========================================================================== layout: vLLM


def test_hugging_face_folder_suits_vllm(root, storage):
    trees.write_tiny_llama(root / "tiny-llama")
    report = check_layout(storage, "tiny-llama", "vllm")
    assert report.ok, report.problems
    assert report.layout == "huggingface"
    assert report.found[0] == "config.json (LlamaForCausalLM, model_type llama)"
    assert report.found[1].startswith("weights: 1 safetensors file(s)")
    assert report.found[2] == "tokenizer: tokenizer.json"


def test_sharded_chatglm2_suits_vllm(root, storage):
    trees.write_chatglm2_6b(root / CHATGLM)
    report = check_layout(storage, CHATGLM, "vllm")
    assert report.ok, report.problems
    assert report.found == [
        "config.json (ChatGLMModel, model_type chatglm)",
        "weights: 7 safetensors file(s), 12.5 GB",
        "tokenizer: tokenizer.model, tokenizer_config.json",
    ]


def test_pytorch_bin_weights_suit_vllm(root, storage):
    trees.write_chatglm2_6b(root / CHATGLM, safetensors=False)
    report = check_layout(storage, CHATGLM, "vllm")
    assert report.ok, report.problems
    assert report.found[1].startswith("weights: 1 PyTorch .bin file(s)")


def test_triton_repository_is_not_a_vllm_model(root, storage):
    trees.write_triton_repository(root / CHATGLM)
    report = check_layout(storage, CHATGLM, "vllm")
    assert not report.ok
    assert report.problems == [
        "THUDM/chatglm2-6b has no config.json: vLLM needs a Hugging Face model folder "
        "(config.json + *.safetensors or *.bin)"
    ]
    assert report.notes == ["This looks like a Triton model repository, which Triton serves."]


def test_config_without_architectures(root, storage):
    trees.write_tiny_llama(root / "m")
    trees.write_json(root / "m" / "config.json", {"model_type": "llama", "hidden_size": 64})
    report = check_layout(storage, "m", "vllm")
    assert not report.ok
    assert report.problems == [
        'm/config.json has no "architectures": vLLM picks the model class from it '
        '(e.g. "architectures": ["LlamaForCausalLM"]).'
    ]


def test_config_that_is_not_json(root, storage):
    trees.write_tiny_llama(root / "m")
    (root / "m" / "config.json").write_text("{not json")
    report = check_layout(storage, "m", "vllm")
    assert not report.ok
    assert report.problems[0].startswith("m/config.json is not valid JSON")


def test_config_without_weights(root, storage):
    trees.write_json(root / "m" / "config.json", trees.TINY_LLAMA_CONFIG)
    report = check_layout(storage, "m", "vllm")
    assert report.problems == [
        "m has config.json but no weights: expected *.safetensors or pytorch_model*.bin."
    ]
    assert report.notes == ["No tokenizer files here: vLLM will need --tokenizer pointing at one."]


def test_missing_shard_is_named(root, storage):
    trees.write_tiny_llama(root / "m", shards=3)
    (root / "m" / "model-00002-of-00003.safetensors").unlink()
    report = check_layout(storage, "m", "vllm")
    assert report.problems == [
        "m is missing 1 of 3 shards listed in model.safetensors.index.json: model-00002-of-00003.safetensors"
    ]


def test_gguf_file_suits_vllm_but_a_gguf_folder_needs_the_file(root, storage):
    trees.write_gguf(root / "gguf" / "qwen2-0_5b-q4_k_m.gguf")
    report = check_layout(storage, "gguf/qwen2-0_5b-q4_k_m.gguf", "vllm")
    assert report.ok and report.layout == "gguf"
    assert report.found == ["GGUF file qwen2-0_5b-q4_k_m.gguf (24 B)"]

    folder = check_layout(storage, "gguf", "vllm")
    assert not folder.ok and folder.layout == "gguf"
    assert folder.problems == [
        "gguf holds GGUF files: pick the .gguf file itself as the model path (gguf/qwen2-0_5b-q4_k_m.gguf)."
    ]
    triton = check_layout(storage, "gguf/qwen2-0_5b-q4_k_m.gguf", "triton")
    assert triton.problems == ["gguf/qwen2-0_5b-q4_k_m.gguf is a GGUF file: Triton does not load GGUF."]


def test_missing_path_and_plain_file(root, storage):
    trees.write_tiny_llama(root / "m")
    assert check_layout(storage, "nope/model", "vllm").problems == [
        "nope/model does not exist in the dataset."
    ]
    assert check_layout(storage, "m/config.json", "vllm").problems == [
        "m/config.json is a file: pick the model folder."
    ]


def test_unknown_runtime(storage):
    with pytest.raises(ValueError, match="Unknown runtime 'tgi'"):
        check_layout(storage, "", "tgi")


def test_root_of_the_dataset_is_named_plainly(root, storage):
    (root / "notes.txt").write_text("x")
    report = check_layout(storage, "", "vllm")
    assert report.problems[0].startswith("The dataset root has no config.json")


# =========================================================================== layout: Triton


def test_triton_repository_suits_triton(root, storage):
    trees.write_triton_repository(root / "model_repository")
    report = check_layout(storage, "model_repository", "triton")
    assert report.ok, report.problems
    assert report.layout == "triton"
    assert report.found == ["Triton model chatglm2-6b (config.pbtxt, versions 1)"]


def test_broken_triton_repository_names_each_folder(root, storage):
    trees.write_broken_triton_repository(root / "repo")
    report = check_layout(storage, "repo", "triton")
    assert not report.ok
    assert report.problems == [
        "repo/no-config has no config.pbtxt: every folder of a Triton repository is a model.",
        "repo/no-version has no version folder (a numbered folder like 1/).",
    ]
    assert report.found == ["Triton model chatglm2-6b (config.pbtxt, versions 1)"]


def test_triton_model_folder_instead_of_repository(root, storage):
    trees.write_triton_repository(root / "repo")
    report = check_layout(storage, "repo/chatglm2-6b", "triton")
    assert report.problems == [
        "repo/chatglm2-6b is a Triton model folder (it has config.pbtxt): "
        "pick the repository that holds it (repo)."
    ]


def test_triton_config_naming_another_model(root, storage):
    trees.write_triton_repository(root / "repo", model="chatglm2-6b")
    (root / "repo" / "chatglm2-6b").rename(root / "repo" / "glm")
    report = check_layout(storage, "repo", "triton")
    assert report.problems == [
        'repo/glm/config.pbtxt names the model "chatglm2-6b": Triton needs it to match the folder "glm".'
    ]


def test_hugging_face_folder_is_not_a_triton_repository(root, storage):
    trees.write_tiny_llama(root / "m")
    report = check_layout(storage, "m", "triton")
    assert report.problems == [
        "m has no model folders: Triton needs a model repository "
        "(<model>/config.pbtxt and a version folder like 1/)"
    ]
    assert report.layout == "huggingface"
    assert report.notes == ["This looks like a Hugging Face model folder, which vLLM serves."]


# =========================================================================== layout: TorchServe


def test_model_store_suits_torchserve(root, storage):
    trees.write_mar_store(root / "store", ("resnet-18", "bert"))
    report = check_layout(storage, "store", "torchserve")
    assert report.ok and report.layout == "torchserve"
    assert report.found == ["2 model archive(s): bert.mar, resnet-18.mar", "config.properties"]


def test_torchserve_needs_mar_files(root, storage):
    trees.write_tiny_llama(root / "m")
    report = check_layout(storage, "m", "torchserve")
    assert report.problems == [
        "m has no .mar files: TorchServe needs a model store (a folder of *.mar archives)"
    ]
    assert report.notes == ["This looks like a Hugging Face model folder, which vLLM serves."]
    store = check_layout(LocalStorage(trees.write_mar_store(root / "store")), "", "vllm")
    assert store.notes == ["This looks like TorchServe archives, which TorchServe serves."]


# =========================================================================== layout: other storages


def test_layout_over_s3(s3_server, s3_bucket):
    bucket = s3_server.bucket_path(s3_bucket)
    trees.write_chatglm2_6b(bucket / "models" / CHATGLM)
    trees.write_broken_triton_repository(bucket / "models" / "repo")
    storage = S3Storage(
        s3_server.endpoint_url,
        s3_bucket,
        "models",
        "us-east-1",
        s3_server.access_key,
        s3_server.secret_key,
        True,
    )
    assert check_layout(storage, CHATGLM, "vllm").ok
    assert check_layout(storage, "repo", "triton").problems == [
        "repo/no-config has no config.pbtxt: every folder of a Triton repository is a model.",
        "repo/no-version has no version folder (a numbered folder like 1/).",
    ]


def test_layout_from_a_prewarm_manifest():
    """NFS datasets the console cannot mount: the listing is checked, file contents are not."""
    manifest = ManifestStorage(
        [
            (f"{CHATGLM}/config.json", 1_300),
            (f"{CHATGLM}/model.safetensors", 12_487_168_064),
            ("repo/chatglm2-6b/config.pbtxt", 900),
            ("repo/chatglm2-6b/1/model.py", 5_000),
        ]
    )
    hf = check_layout(manifest, CHATGLM, "vllm")
    assert hf.ok
    assert hf.notes[0] == f"{CHATGLM}/config.json was not read (the dataset is browsed from its file list)."
    assert check_layout(manifest, "repo", "triton").ok


# =========================================================================== fit estimate


def test_chatglm2_6b_fp16_from_safetensors_headers(root, storage):
    """ChatGLM2-6B in FP16: exact parameter count from the headers, ≈ 12.5 GB of weights.

    The seed (the ChatGLM2 README's table) measured 13.1 GB for FP16 when encoding 2,048 tokens:
    weights plus the PyTorch runtime. Our per-GPU need is 12.49 GB weights + 2.32 GB assumed
    overhead (1 GiB + 10% of the weights) = 14.8 GB: ~13% above the measurement, on the safe side.
    """
    trees.write_chatglm2_6b(root / CHATGLM)
    fit = estimate_fit(storage, CHATGLM, gpu_memory_gib=80, gpu_count=1)
    assert fit.parameters == CHATGLM2_PARAMETERS
    assert fit.parameters_source == "safetensors headers"
    assert fit.dtype == "float16"
    assert fit.weight_bytes == 2 * CHATGLM2_PARAMETERS
    assert fit.weight_gb == pytest.approx(12.5, rel=0.02)
    assert fit.weight_gb == pytest.approx(13.1, rel=0.06)  # the seed's number, which includes the runtime
    assert (fit.weight_bytes + fit.overhead_bytes_per_gpu) / GB == pytest.approx(13.1, rel=0.15)


def test_chatglm2_kv_cache_per_token(root, storage):
    """2 (K and V) x 28 layers x 2 KV groups (multi_query_group_num) x 128 (kv_channels) x 2 B = 28 KiB."""
    trees.write_chatglm2_6b(root / CHATGLM)
    fit = estimate_fit(storage, CHATGLM, gpu_memory_gib=80, gpu_count=1)
    assert fit.kv_bytes_per_token == 2 * 28 * 2 * 128 * 2 == 28 * 1024
    assert fit.max_model_len == 32768  # seq_length from config.json


def test_chatglm2_fits_on_one_80_gib_gpu(root, storage):
    trees.write_chatglm2_6b(root / CHATGLM)
    fit = estimate_fit(storage, CHATGLM, gpu_memory_gib=80, gpu_count=1)
    assert fit.fits and fit.min_gpus == 1
    # 72 GiB usable - 11.63 GiB weights - 1 GiB - 1.16 GiB activations ≈ 58.2 GiB of KV cache.
    assert fit.kv_cache_gib_free == pytest.approx(58.2, abs=0.1)
    assert fit.max_tokens_in_cache == pytest.approx(58.2 * GiB / (28 * 1024), rel=0.002)
    assert fit.message == "fits on 1 × 80 GiB GPU with ~58 GiB for KV cache (~2.2M tokens)"


def test_chatglm2_needs_more_than_one_8_gib_gpu(root, storage):
    trees.write_chatglm2_6b(root / CHATGLM)
    fit = estimate_fit(storage, CHATGLM, gpu_memory_gib=8, gpu_count=1)
    assert not fit.fits
    assert fit.min_gpus is not None and fit.min_gpus >= 2
    # Two 8 GiB GPUs hold 6.2 GB of weights each but not the overhead: tensor parallel 4.
    assert fit.min_gpus == 4
    assert fit.message == "needs at least 4 GPUs of 8 GiB (weights 12.5 GB)"
    assert estimate_fit(storage, CHATGLM, gpu_memory_gib=8, gpu_count=4).fits


def test_chatglm2_on_a_16_gib_gpu_is_short_of_kv_cache_for_32k(root, storage):
    trees.write_chatglm2_6b(root / CHATGLM)
    fit = estimate_fit(storage, CHATGLM, gpu_memory_gib=16, gpu_count=1)
    assert not fit.fits and fit.min_gpus == 2
    assert fit.message.startswith(
        "needs at least 2 GPUs of 16 GiB (weights 12.5 GB; "
        "one 32,768-token sequence needs 0.9 GiB of KV cache"
    )
    assert fit.message.endswith("or lower max_model_len)")
    assert estimate_fit(storage, CHATGLM, gpu_memory_gib=16, gpu_count=1, max_model_len=8192).fits


def test_chatglm2_int8_and_int4(root, storage):
    """INT8 and INT4, next to the seed's measured 8.2 GB and 5.5 GB.

    Only the transformer's linear layers are quantized (5.71 B parameters); the word embeddings
    and output layer (2 x 65024 x 4096 = 0.53 B parameters) stay FP16, as in ChatGLM's own
    quantization and in AWQ/GPTQ. So the weights are not the naive 6.2 GB / 3.1 GB
    (6.24 B x 1 B, x 0.5 B) but:
      INT8: 5.71 GB + 1.07 GB = 6.78 GB; + overhead 1.75 GB = 8.5 GB  (seed 8.2 GB, +4%)
      INT4: 5.71 x 4.16/8 = 2.97 GB + 1.07 GB = 4.03 GB (scales for groups of 128 included);
            + overhead 1.48 GB = 5.5 GB                          (seed 5.5 GB, ±1%)
    """
    trees.write_chatglm2_6b(root / CHATGLM)
    int8 = estimate_fit(storage, CHATGLM, quantization="int8", gpu_memory_gib=80, gpu_count=1)
    int4 = estimate_fit(storage, CHATGLM, quantization="int4", gpu_memory_gib=80, gpu_count=1)
    assert int8.parameters == int4.parameters == CHATGLM2_PARAMETERS
    assert int8.weight_gb == pytest.approx(6.78, rel=0.01)
    assert int4.weight_gb == pytest.approx(4.03, rel=0.01)
    naive_int8, naive_int4 = CHATGLM2_PARAMETERS / GB, CHATGLM2_PARAMETERS / 2 / GB
    assert naive_int8 == pytest.approx(6.2, rel=0.01) and naive_int4 == pytest.approx(3.1, rel=0.01)
    assert naive_int8 < int8.weight_gb < 8.2 and naive_int4 < int4.weight_gb < 5.5
    assert (int8.weight_bytes + int8.overhead_bytes_per_gpu) / GB == pytest.approx(8.2, rel=0.06)
    assert (int4.weight_bytes + int4.overhead_bytes_per_gpu) / GB == pytest.approx(5.5, rel=0.03)
    assert int8.kv_bytes_per_token == int4.kv_bytes_per_token == 28 * 1024  # the KV cache stays FP16
    # INT4 is what fits a single 8 GiB card; FP16 needs four of them.
    assert estimate_fit(storage, CHATGLM, quantization="int4", gpu_memory_gib=8, gpu_count=1).fits
    assert estimate_fit(storage, CHATGLM, quantization="int8", gpu_memory_gib=8, gpu_count=1).min_gpus == 2


def test_the_estimate_reads_only_headers(root, storage):
    trees.write_chatglm2_6b(root / CHATGLM)
    counting = CountingStorage(storage)
    estimate_fit(counting, CHATGLM, gpu_memory_gib=80, gpu_count=1)
    on_disk = sum(f.stat().st_size for f in (root / CHATGLM).iterdir())
    assert on_disk > 12_000_000_000
    assert counting.bytes_read < 100_000  # config.json, the index and seven ~6 kB headers
    assert counting.bytes_read < on_disk / 100_000
    shard_reads = [r for r in counting.reads if r[0].endswith(".safetensors")]
    assert len(shard_reads) == 14  # per shard: the 8-byte length, then the header
    assert all(length is not None and length < 20_000 for _path, _start, length in shard_reads)


def test_the_estimate_over_s3_uses_ranged_reads(s3_server, s3_bucket):
    trees.write_chatglm2_6b(s3_server.bucket_path(s3_bucket) / CHATGLM)  # sparse, served by rclone
    storage = CountingStorage(
        S3Storage(
            s3_server.endpoint_url, s3_bucket, "", None, s3_server.access_key, s3_server.secret_key, True
        )
    )
    fit = estimate_fit(storage, CHATGLM, gpu_memory_gib=24, gpu_count=1)
    assert fit.parameters == CHATGLM2_PARAMETERS
    assert fit.fits and fit.message.startswith("fits on 1 × 24 GiB GPU with ~8 GiB for KV cache")
    assert storage.bytes_read < 100_000


def test_a_header_only_file_reads_like_the_full_file(root, storage):
    """The estimator never reads past the header, so a file cut right after it is enough."""
    folder = root / "tiny"
    trees.write_tiny_llama(folder)
    full = estimate_fit(storage, "tiny", gpu_memory_gib=8, gpu_count=1)
    path = folder / "model.safetensors"
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    with path.open("r+b") as f:
        f.truncate(8 + header_length)
    cut = estimate_fit(storage, "tiny", gpu_memory_gib=8, gpu_count=1)
    assert cut.parameters == full.parameters
    assert cut.weight_bytes == full.weight_bytes


def test_tiny_llama_counts_exactly(root, storage):
    trees.write_tiny_llama(root / "tiny", shards=2)
    fit = estimate_fit(storage, "tiny", gpu_memory_gib=8, gpu_count=1)
    expected = sum(math.prod(shape) for _dtype, shape in trees.tiny_llama_tensors().values())
    assert fit.parameters == expected
    assert fit.dtype == "bfloat16"
    assert fit.weight_bytes == 2 * expected
    # 2 x 2 layers x 2 KV heads x 16 (64 / 4 heads) x 2 B
    assert fit.kv_bytes_per_token == 256
    assert fit.max_model_len == 512
    tensors = read_safetensors_header(storage, "tiny/model-00001-of-00002.safetensors")
    assert tensors[0].name == "model.embed_tokens.weight" and tensors[0].shape == (256, 64)


def test_without_safetensors_the_count_comes_from_config_json(root, storage):
    trees.write_chatglm2_6b(root / CHATGLM, safetensors=False)
    fit = estimate_fit(storage, CHATGLM, gpu_memory_gib=80, gpu_count=1)
    assert fit.parameters_source == "config.json"
    assert fit.parameters == pytest.approx(CHATGLM2_PARAMETERS, rel=0.001)  # biases left out
    assert fit.weight_gb == pytest.approx(12.5, rel=0.01)


def test_dtype_override_and_fp32_checkpoints(root, storage):
    trees.write_tiny_llama(root / "tiny")
    assert estimate_fit(storage, "tiny", dtype="float32", gpu_memory_gib=8).kv_bytes_per_token == 512
    config = dict(trees.TINY_LLAMA_CONFIG, torch_dtype="float32")
    trees.write_json(root / "tiny" / "config.json", config)
    auto = estimate_fit(storage, "tiny", gpu_memory_gib=8)
    assert auto.dtype == "float16"
    assert any("served in float16" in a for a in auto.assumptions)
    with pytest.raises(InspectError, match="Unknown dtype"):
        estimate_fit(storage, "tiny", dtype="int3", gpu_memory_gib=8)
    with pytest.raises(InspectError, match="Unknown quantization"):
        estimate_fit(storage, "tiny", quantization="int3", gpu_memory_gib=8)


def test_prequantized_checkpoint_uses_its_stored_size(root, storage):
    folder = root / "awq"
    config = dict(
        trees.TINY_LLAMA_CONFIG, quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128}
    )
    trees.write_json(folder / "config.json", config)
    stored = trees.write_safetensors(
        folder / "model.safetensors",
        {
            "model.embed_tokens.weight": ("F16", (256, 64)),
            "model.layers.0.mlp.down_proj.qweight": ("I32", (176, 8)),  # 8 int4 values per int32
            "model.layers.0.mlp.down_proj.scales": ("F16", (2, 64)),
        },
    )
    fit = estimate_fit(storage, "awq", gpu_memory_gib=8)
    assert fit.quantization == "awq"
    assert fit.parameters_source == "config.json"  # packed int32 elements are not parameters
    assert fit.weight_bytes == 256 * 64 * 2 + 176 * 8 * 4 + 2 * 64 * 2
    assert fit.weight_bytes < stored


def test_gpu_count_must_split_the_attention_heads(root, storage):
    trees.write_chatglm2_6b(root / CHATGLM)
    fit = estimate_fit(storage, CHATGLM, gpu_memory_gib=80, gpu_count=3)
    assert not fit.fits
    assert fit.message == "32 attention heads do not split over 3 GPUs: use 1, 2, 4, 8, 16"
    two = estimate_fit(storage, CHATGLM, gpu_memory_gib=80, gpu_count=2)
    assert two.fits and two.message.endswith("; 1 would do")


def test_estimate_needs_config_json_and_readable_files(root, storage):
    trees.write_triton_repository(root / "repo")
    with pytest.raises(InspectError, match=r"repo has no config\.json"):
        estimate_fit(storage, "repo", gpu_memory_gib=80)
    manifest = ManifestStorage([("m/config.json", 100), ("m/model.safetensors", 10_000)])
    with pytest.raises(StorageError) as error:
        estimate_fit(manifest, "m", gpu_memory_gib=80)
    assert error.value.reason == "NotReadable"


def test_corrupt_safetensors_header(root, storage):
    trees.write_tiny_llama(root / "tiny")
    (root / "tiny" / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(InspectError, match="header length"):
        estimate_fit(storage, "tiny", gpu_memory_gib=8)
