"""What is at a model path: does its layout suit the runtime, and will it fit on the GPUs?

Both checks run live in the service form, so they read as little as possible: folder listings,
`config.json`, index files and the JSON headers of safetensors files (two small ranged reads per
file). Weights are never downloaded. No Django here.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from datasets.storage import Listing, Storage, StorageError, clean_path, join

RUNTIMES = {"vllm": "vLLM", "triton": "Triton", "torchserve": "TorchServe"}
GiB = 1024**3
GB = 1000**3

HF_NEEDS = "vLLM needs a Hugging Face model folder (config.json + *.safetensors or *.bin)"
TRITON_NEEDS = "Triton needs a model repository (<model>/config.pbtxt and a version folder like 1/)"
TORCHSERVE_NEEDS = "TorchServe needs a model store (a folder of *.mar archives)"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "special_tokens_map.json",
)
MAX_JSON_BYTES = 16 * 1024 * 1024  # config.json / index files; anything bigger is not one
MAX_TRITON_MODELS = 100  # listing calls per check stay bounded on a huge folder


class InspectError(ValueError):
    """The model path cannot be estimated (no config.json, a field missing, a broken header)."""


def _label(path: str) -> str:
    return path or "The dataset root"


# =========================================================================== layout check


@dataclass
class LayoutReport:
    ok: bool
    layout: str  # huggingface | triton | torchserve | gguf | unknown
    found: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # hints that do not block the service

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_layout(storage: Storage, path: str, runtime: str) -> LayoutReport:
    """Check that `path` holds what `runtime` loads, naming exactly what is missing.

    vLLM: a Hugging Face folder, or a single .gguf file. Triton: a model repository (the path
    the server gets as --model-repository). TorchServe: a model store holding .mar archives."""
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}.")
    path = clean_path(path)
    try:
        listing = storage.list_dir(path)
    except StorageError as exc:
        if exc.reason not in ("NotFound", "NotAFolder"):
            raise
        return _check_single_file(storage, path, runtime)

    if runtime == "vllm":
        report = _check_for_vllm(storage, path, listing)
    elif runtime == "triton":
        report = _check_triton_repository(storage, path, listing)
    else:
        report = _check_model_store(path, listing)
    if not report.ok:
        report.notes.extend(_hints(storage, path, listing, runtime))
    return report


def _check_single_file(storage: Storage, path: str, runtime: str) -> LayoutReport:
    """A file was picked instead of a folder: only a .gguf file for vLLM makes sense."""
    size = None
    if path:
        try:
            size = storage.list_dir(posixpath.dirname(path)).size_of(posixpath.basename(path))
        except StorageError as exc:
            if exc.reason not in ("NotFound", "NotAFolder"):
                raise
    name = posixpath.basename(path)
    if size is None:
        return LayoutReport(False, "unknown", problems=[f"{_label(path)} does not exist in the dataset."])
    if name.endswith(".gguf"):
        if runtime == "vllm":
            found = [f"GGUF file {name} ({_gb(size)})"]
            notes = ["vLLM takes the tokenizer from the GGUF file unless --tokenizer names one."]
            return LayoutReport(True, "gguf", found=found, notes=notes)
        return LayoutReport(
            False, "gguf", problems=[f"{path} is a GGUF file: {RUNTIMES[runtime]} does not load GGUF."]
        )
    return LayoutReport(False, "unknown", problems=[f"{path} is a file: pick the model folder."])


# --------------------------------------------------------------------------- vLLM


def _check_for_vllm(storage: Storage, path: str, listing: Listing) -> LayoutReport:
    names = listing.file_names()
    if "config.json" in names:
        return _check_huggingface(storage, path, listing)
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    if ggufs:
        # vLLM tells GGUF from Hugging Face by the model path being a file.
        picks = ", ".join(join(path, n) for n in ggufs[:3])
        return LayoutReport(
            False,
            "gguf",
            found=[f"{len(ggufs)} GGUF file(s): {', '.join(ggufs[:3])}"],
            problems=[
                f"{_label(path)} holds GGUF files: pick the .gguf file itself as the model path ({picks})."
            ],
        )
    return LayoutReport(False, _detect(listing), problems=[f"{_label(path)} has no config.json: {HF_NEEDS}"])


def _check_huggingface(storage: Storage, path: str, listing: Listing) -> LayoutReport:
    report = LayoutReport(True, "huggingface")
    names = listing.file_names()
    config_path = join(path, "config.json")
    config = _read_json_or_problem(storage, config_path, listing.size_of("config.json"), report)
    if config is not None:
        architectures = config.get("architectures")
        if (
            isinstance(architectures, list)
            and architectures
            and all(isinstance(a, str) for a in architectures)
        ):
            model_type = f", model_type {config['model_type']}" if config.get("model_type") else ""
            report.found.append(f"config.json ({', '.join(architectures)}{model_type})")
        else:
            report.problems.append(
                f'{config_path} has no "architectures": vLLM picks the model class from it '
                '(e.g. "architectures": ["LlamaForCausalLM"]).'
            )

    safetensors = sorted(n for n in names if n.endswith(".safetensors"))
    bins = sorted(n for n in names if re.fullmatch(r"pytorch_model.*\.bin", n))
    for index_name, shards in (
        ("model.safetensors.index.json", safetensors),
        ("pytorch_model.bin.index.json", bins),
    ):
        if index_name in names:
            index = _read_json_or_problem(
                storage, join(path, index_name), listing.size_of(index_name), report
            )
            listed = set((index or {}).get("weight_map", {}).values())
            missing = sorted(listed - set(shards))
            if missing:
                shown = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
                report.problems.append(
                    f"{_label(path)} is missing {len(missing)} of {len(listed)} shards listed in "
                    f"{index_name}: {shown}"
                )
    if safetensors:
        size = sum(listing.size_of(n) or 0 for n in safetensors)
        report.found.append(f"weights: {len(safetensors)} safetensors file(s), {_gb(size)}")
    elif bins:
        size = sum(listing.size_of(n) or 0 for n in bins)
        report.found.append(f"weights: {len(bins)} PyTorch .bin file(s), {_gb(size)}")
    else:
        report.problems.append(
            f"{_label(path)} has config.json but no weights: expected *.safetensors or pytorch_model*.bin."
        )

    tokenizer = [n for n in TOKENIZER_FILES if n in names] + sorted(
        n for n in names if n.endswith(".tiktoken")
    )
    if tokenizer:
        report.found.append(f"tokenizer: {', '.join(tokenizer)}")
    else:
        report.notes.append("No tokenizer files here: vLLM will need --tokenizer pointing at one.")
    report.ok = not report.problems
    return report


# --------------------------------------------------------------------------- Triton


def _check_triton_repository(storage: Storage, path: str, listing: Listing) -> LayoutReport:
    report = LayoutReport(True, "triton")
    if "config.pbtxt" in listing.file_names():
        # The service passes the path as --model-repository: one level too deep here.
        parent = posixpath.dirname(path) or "the dataset root"
        report.ok = False
        report.problems.append(
            f"{_label(path)} is a Triton model folder (it has config.pbtxt): "
            f"pick the repository that holds it ({parent})."
        )
        return report
    models = [f for f in listing.folders if not f.startswith(".")]
    if not models:
        report.ok = False
        report.layout = _detect(listing)
        report.problems.append(f"{_label(path)} has no model folders: {TRITON_NEEDS}")
        return report
    if len(models) > MAX_TRITON_MODELS:
        report.notes.append(
            f"Only the first {MAX_TRITON_MODELS} of {len(models)} model folders were checked."
        )
    for model in models[:MAX_TRITON_MODELS]:
        model_path = join(path, model)
        sub = storage.list_dir(model_path)
        # Triton loads every folder of the repository as a model, so each one must be complete.
        versions = sorted((v for v in sub.folders if v.isdigit()), key=int)
        has_config = "config.pbtxt" in sub.file_names()
        if not has_config:
            report.problems.append(
                f"{model_path} has no config.pbtxt: every folder of a Triton repository is a model."
            )
        if not versions:
            report.problems.append(f"{model_path} has no version folder (a numbered folder like 1/).")
        if has_config:
            _check_pbtxt_name(storage, model_path, model, report)
        if has_config and versions:
            report.found.append(f"Triton model {model} (config.pbtxt, versions {', '.join(versions)})")
    report.ok = not report.problems
    return report


def _check_pbtxt_name(storage: Storage, model_path: str, model: str, report: LayoutReport) -> None:
    """Triton refuses a model whose config names it differently from its folder."""
    try:
        text = storage.read_bytes(join(model_path, "config.pbtxt"), 0, 64 * 1024).decode("utf-8", "replace")
    except StorageError as exc:
        if exc.reason == "NotReadable":
            return  # browsing from a manifest: the listing is all we have
        raise
    match = re.search(r'^\s*name\s*:\s*"([^"]*)"', text, re.MULTILINE)
    if match and match.group(1) != model:
        report.problems.append(
            f'{model_path}/config.pbtxt names the model "{match.group(1)}": '
            f'Triton needs it to match the folder "{model}".'
        )


# --------------------------------------------------------------------------- TorchServe


def _check_model_store(path: str, listing: Listing) -> LayoutReport:
    mars = sorted(n for n in listing.file_names() if n.endswith(".mar"))
    if not mars:
        return LayoutReport(
            False, _detect(listing), problems=[f"{_label(path)} has no .mar files: {TORCHSERVE_NEEDS}"]
        )
    shown = ", ".join(mars[:5]) + (", …" if len(mars) > 5 else "")
    found = [f"{len(mars)} model archive(s): {shown}"]
    if "config.properties" in listing.file_names():
        found.append("config.properties")
    return LayoutReport(True, "torchserve", found=found)


# --------------------------------------------------------------------------- shared


def _detect(listing: Listing) -> str:
    """The layout the folder looks like, from its listing alone (no extra reads)."""
    names = listing.file_names()
    if "config.json" in names:
        return "huggingface"
    if "config.pbtxt" in names:
        return "triton"
    if any(n.endswith(".gguf") for n in names):
        return "gguf"
    if any(n.endswith(".mar") for n in names):
        return "torchserve"
    return "unknown"


def _hints(storage: Storage, path: str, listing: Listing, runtime: str) -> list[str]:
    """Say what the folder is when it is not what the runtime needs (only on the failure path)."""
    layout = _detect(listing)
    if layout == "unknown" and runtime != "triton":
        # A Triton repository shows only in its sub-folders: peek at a few.
        for folder in listing.folders[:10]:
            if "config.pbtxt" in storage.list_dir(join(path, folder)).file_names():
                return ["This looks like a Triton model repository, which Triton serves."]
    suits = {"huggingface": "vllm", "gguf": "vllm", "triton": "triton", "torchserve": "torchserve"}.get(
        layout
    )
    if suits and suits != runtime:
        kind = {
            "huggingface": "a Hugging Face model folder",
            "gguf": "GGUF files",
            "triton": "a Triton model folder",
            "torchserve": "TorchServe archives",
        }[layout]
        return [f"This looks like {kind}, which {RUNTIMES[suits]} serves."]
    return []


def _read_json_or_problem(storage: Storage, path: str, size: int | None, report: LayoutReport) -> dict | None:
    try:
        return _read_json(storage, path, size)
    except StorageError as exc:
        if exc.reason != "NotReadable":
            raise
        report.notes.append(f"{path} was not read (the dataset is browsed from its file list).")
    except InspectError as exc:
        report.problems.append(str(exc))
    return None


def _read_json(storage: Storage, path: str, size: int | None = None) -> dict:
    if size is not None and size > MAX_JSON_BYTES:
        raise InspectError(f"{path} is {_gb(size)}: too big to be a JSON config.")
    data = storage.read_bytes(path, 0, MAX_JSON_BYTES + 1)
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InspectError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise InspectError(f"{path} is not a JSON object.")
    return value


def _gb(size: int) -> str:
    if size >= GB / 10:
        return f"{size / GB:.1f} GB"
    if size >= 1000**2:
        return f"{size / 1000**2:.1f} MB"
    if size >= 1000:
        return f"{size / 1000:.1f} kB"
    return f"{size} B"


# =========================================================================== GPU fit estimate

# Share of GPU memory the server may use (vLLM's --gpu-memory-utilization default).
GPU_MEMORY_UTILIZATION = 0.90
# Per GPU, beside weights and KV cache: CUDA context, cuBLAS/NCCL workspaces and CUDA graphs
# (~1 GiB), plus activations at the profiling peak, taken as 10% of the GPU's weight share.
RUNTIME_OVERHEAD_BYTES = 1 * GiB
ACTIVATION_SHARE = 0.10
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8, 16, 32, 64)

DTYPE_BYTES = {
    "float16": 2,
    "half": 2,
    "fp16": 2,
    "bfloat16": 2,
    "bf16": 2,
    "float32": 4,
    "float": 4,
    "fp32": 4,
}
# Weight bits per quantized matrix element. Int4 schemes (AWQ/GPTQ) store a 16-bit scale and a
# 4-bit zero point per group of 128 weights: +20/128 bit. Int8/FP8 scales are per channel or
# per tensor: negligible.
QUANTIZATION_BITS = {
    "int8": 8.0,
    "fp8": 8.0,
    "int4": 4.0 + 20 / 128,
    "awq": 4.0 + 20 / 128,
    "gptq": 4.0 + 20 / 128,
}
# Tensors quantizers leave in 16 bit: embeddings and the LM head (and every 1-D tensor).
_UNQUANTIZED = re.compile(r"embed|lm_head|output_layer|wte|wpe|word_embeddings", re.IGNORECASE)
SAFETENSORS_HEADER_LIMIT = 100 * 1000 * 1000  # the format's own limit


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def stays_16bit(self) -> bool:
        return len(self.shape) < 2 or bool(_UNQUANTIZED.search(self.name))


@dataclass(frozen=True)
class ModelShape:
    """The numbers the estimate needs, under the names the common config.json families use."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    ffn: int
    gated_mlp: bool
    experts: int
    tied_embeddings: bool
    max_positions: int | None
    torch_dtype: str | None
    quantization_config: dict | None
    mla_kv_dim: int | None  # DeepSeek-style latent attention caches one compressed vector

    @classmethod
    def from_config(cls, config: dict, where: str = "config.json") -> ModelShape:
        # Multimodal configs keep the language model's numbers under text_config.
        text = config.get("text_config")
        cfg = {**text, **config} if isinstance(text, dict) else config

        def pick(*names: str, required: bool = True) -> Any:
            for name in names:
                if isinstance(cfg.get(name), int | float) and not isinstance(cfg.get(name), bool):
                    return int(cfg[name])
            if required:
                raise InspectError(f"{where} has none of {', '.join(names)}: cannot estimate the model size.")
            return None

        layers = pick("num_hidden_layers", "num_layers", "n_layer", "n_layers")
        hidden = pick("hidden_size", "d_model", "n_embd", "dim")
        heads = pick("num_attention_heads", "n_head", "n_heads", "num_heads")
        if cfg.get("multi_query_attention") and "multi_query_group_num" in cfg:  # ChatGLM
            kv_heads = int(cfg["multi_query_group_num"])
        elif cfg.get("multi_query") is True:  # Falcon-7B style
            kv_heads = 1
        else:
            kv_heads = pick("num_key_value_heads", "num_kv_heads", "n_head_kv", required=False) or heads
        head_dim = pick("head_dim", "kv_channels", required=False) or hidden // heads
        vocab = pick("padded_vocab_size", "vocab_size", "n_vocab")
        ffn = pick("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim", required=False) or 4 * hidden
        act = str(
            cfg.get("hidden_act") or cfg.get("hidden_activation") or cfg.get("activation_function") or ""
        )
        gated = act in ("silu", "swiglu", "swish") or cfg.get("model_type") in (
            "chatglm",
            "gemma",
            "gemma2",
            "gemma3",
        )
        experts = pick("num_local_experts", "num_experts", "n_routed_experts", required=False) or 1
        dtype = cfg.get("torch_dtype") or cfg.get("dtype")
        quant = cfg.get("quantization_config")
        mla = None
        if cfg.get("kv_lora_rank"):
            mla = int(cfg["kv_lora_rank"]) + int(cfg.get("qk_rope_head_dim") or 0)
        return cls(
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            vocab=vocab,
            ffn=ffn,
            gated_mlp=gated,
            experts=experts,
            # PretrainedConfig ties by default; Llama-style configs say false explicitly.
            tied_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            max_positions=pick(
                "max_position_embeddings", "seq_length", "n_positions", "max_sequence_length", required=False
            ),
            torch_dtype=str(dtype) if dtype else None,
            quantization_config=quant if isinstance(quant, dict) else None,
            mla_kv_dim=mla,
        )

    def parameter_split(self) -> tuple[int, int]:
        """(quantizable, 16-bit) parameter counts estimated from the shape alone (biases ignored)."""
        attention = (
            self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        )
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.ffn * self.experts
        router = self.hidden * self.experts if self.experts > 1 else 0
        matrices = self.layers * (attention + mlp + router)
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        norms = (2 * self.layers + 1) * self.hidden
        return matrices, embeddings + norms

    def kv_bytes_per_token(self, kv_dtype_bytes: int, tensor_parallel: int = 1) -> int:
        """K and V for every layer. Tensor parallelism splits the KV heads; with more GPUs than
        KV heads each GPU keeps a replica of one head. Latent attention (MLA) is not split."""
        if self.mla_kv_dim:
            return self.layers * self.mla_kv_dim * kv_dtype_bytes
        heads_per_gpu = max(1, math.ceil(self.kv_heads / tensor_parallel))
        return 2 * self.layers * heads_per_gpu * self.head_dim * kv_dtype_bytes


@dataclass
class FitEstimate:
    parameters: int
    parameters_source: str  # "safetensors headers" or "config.json"
    dtype: str
    quantization: str | None
    weight_bytes: int
    kv_bytes_per_token: int  # whole model, all GPUs together
    overhead_bytes_per_gpu: int
    max_model_len: int
    gpu_memory_gib: float
    gpu_count: int
    fits: bool
    min_gpus: int | None  # smallest tensor-parallel size that fits; None: not even 64
    kv_cache_gib_free: float  # across all requested GPUs
    max_tokens_in_cache: int
    message: str
    assumptions: list[str] = field(default_factory=list)

    @property
    def weight_gb(self) -> float:
        return self.weight_bytes / GB

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weight_gb": round(self.weight_gb, 2)}


def read_safetensors_header(storage: Storage, path: str, size: int | None = None) -> list[Tensor]:
    """Tensors declared by one safetensors file, from two ranged reads: the 8-byte little-endian
    header length, then the JSON header. The data section is never touched, so a file truncated
    right after its header reads the same as the full file."""
    head = storage.read_bytes(path, 0, 8)
    if len(head) < 8:
        raise InspectError(f"{path} is not a safetensors file (shorter than its header length).")
    (length,) = struct.unpack("<Q", head)
    if length > SAFETENSORS_HEADER_LIMIT or (size is not None and 8 + length > size):
        raise InspectError(f"{path} is not a safetensors file (header length {length} is impossible).")
    raw = storage.read_bytes(path, 8, length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InspectError(f"{path} has a corrupt safetensors header.") from None
    tensors = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = spec["data_offsets"]
            tensors.append(
                Tensor(name, str(spec["dtype"]), tuple(int(d) for d in spec["shape"]), int(end - begin))
            )
        except (KeyError, TypeError, ValueError):
            raise InspectError(f"{path} has a corrupt safetensors header (tensor {name}).") from None
    return tensors


def estimate_fit(
    storage: Storage,
    path: str,
    *,
    dtype: str = "auto",
    quantization: str | None = None,
    gpu_memory_gib: float,
    gpu_count: int = 1,
    max_model_len: int | None = None,
) -> FitEstimate:
    """Estimate whether the model at `path` fits on `gpu_count` GPUs of `gpu_memory_gib` each,
    served with tensor parallelism the way vLLM does it.

    Weights: the exact bytes from safetensors headers when there are any (parameter counts from
    element counts), else counted from config.json. Per GPU the server may use 90% of memory;
    from that come the GPU's share of the weights, ~1 GiB runtime overhead and activations
    (10% of the weight share); the rest is KV cache, which must hold at least one
    `max_model_len`-token sequence or vLLM refuses to start."""
    path = clean_path(path)
    listing = storage.list_dir(path)
    if "config.json" not in listing.file_names():
        raise InspectError(f"{_label(path)} has no config.json: the fit estimate needs it.")
    config_path = join(path, "config.json")
    shape = ModelShape.from_config(
        _read_json(storage, config_path, listing.size_of("config.json")), config_path
    )
    assumptions: list[str] = []

    tensors = _checkpoint_tensors(storage, path, listing)
    prequantized = _prequantized(shape)
    compute_dtype = _compute_dtype(dtype, shape, assumptions)
    dtype_bytes = DTYPE_BYTES[compute_dtype]
    if quantization and quantization.lower() not in QUANTIZATION_BITS:
        known = ", ".join(QUANTIZATION_BITS)
        raise InspectError(f"Unknown quantization {quantization!r}: the estimate knows {known}.")
    quant = prequantized or (quantization.lower() if quantization else None)

    if tensors and not prequantized:
        parameters = sum(t.elements for t in tensors)
        keep = sum(t.elements for t in tensors if t.stays_16bit)
        source = "safetensors headers"
    else:
        quantizable, keep = shape.parameter_split()
        parameters = quantizable + keep
        source = "config.json"
    if prequantized and tensors:
        # The checkpoint is stored quantized: its bytes on disk are what the GPU holds.
        weight_bytes = sum(t.nbytes for t in tensors)
        assumptions.append(f"Weights are stored {prequantized}-quantized: their stored size is used.")
    elif quant:
        bits = _prequantized_bits(shape) if prequantized else QUANTIZATION_BITS[quant]
        weight_bytes = int((parameters - keep) * bits / 8 + keep * dtype_bytes)
        assumptions.append(
            f"{quant}: {bits:.2f} bits per weight in linear layers (scales included); "
            f"embeddings, LM head and norms stay {compute_dtype}."
        )
    else:
        weight_bytes = parameters * dtype_bytes

    kv_dtype_bytes = dtype_bytes  # the KV cache is kept in the compute dtype by default
    max_len = max_model_len or shape.max_positions or 2048
    if not max_model_len and not shape.max_positions:
        assumptions.append("config.json gives no context length: 2048 tokens assumed.")

    def plan(gpus: int) -> tuple[bool, float, int]:
        """(fits, KV bytes free per GPU, tokens that fit) for tensor parallelism over `gpus`."""
        budget = gpu_memory_gib * GiB * GPU_MEMORY_UTILIZATION
        share = weight_bytes / gpus
        free = budget - share - _overhead(share)
        tokens = int(free // shape.kv_bytes_per_token(kv_dtype_bytes, gpus)) if free > 0 else 0
        return tokens >= max_len, free, tokens

    sizes = [n for n in TENSOR_PARALLEL_SIZES if shape.heads % n == 0]
    min_gpus = next((n for n in sizes if plan(n)[0]), None)
    splittable = shape.heads % gpu_count == 0
    fits, free, tokens = plan(gpu_count)
    fits = fits and splittable
    assumptions.append(
        f"Per GPU: {GPU_MEMORY_UTILIZATION:.0%} of memory usable, ~1 GiB runtime overhead plus "
        f"{ACTIVATION_SHARE:.0%} of the weight share for activations; KV cache in {compute_dtype}."
    )

    kv_gib_free = max(free, 0) * gpu_count / GiB
    weights = f"weights {weight_bytes / GB:.1f} GB"
    plural = "s" if gpu_count > 1 else ""
    if not splittable:
        options = ", ".join(str(n) for n in sizes[:5])
        message = f"{shape.heads} attention heads do not split over {gpu_count} GPUs: use {options}"
    elif fits:
        message = (
            f"fits on {gpu_count} × {gpu_memory_gib:.0f} GiB GPU{plural} with ~{kv_gib_free:.0f} GiB "
            f"for KV cache (~{_tokens(tokens)} tokens)"
        )
        if min_gpus and min_gpus < gpu_count:
            message += f"; {min_gpus} would do"
    elif min_gpus:
        message = f"needs at least {min_gpus} GPUs of {gpu_memory_gib:.0f} GiB ({weights})"
        if free > 0:  # the weights fit, one full-length sequence of KV cache does not
            need = max_len * shape.kv_bytes_per_token(kv_dtype_bytes, gpu_count) / GiB
            message = (
                f"needs at least {min_gpus} GPUs of {gpu_memory_gib:.0f} GiB ({weights}; one "
                f"{max_len:,}-token sequence needs {need:.1f} GiB of KV cache per GPU, {free / GiB:.1f} GiB "
                "is left: or lower max_model_len)"
            )
    else:
        message = (
            f"does not fit on up to {TENSOR_PARALLEL_SIZES[-1]} GPUs of {gpu_memory_gib:.0f} GiB ({weights})"
        )

    return FitEstimate(
        parameters=parameters,
        parameters_source=source,
        dtype=compute_dtype,
        quantization=quant,
        weight_bytes=weight_bytes,
        kv_bytes_per_token=shape.kv_bytes_per_token(kv_dtype_bytes),
        overhead_bytes_per_gpu=int(_overhead(weight_bytes / gpu_count)),
        max_model_len=max_len,
        gpu_memory_gib=gpu_memory_gib,
        gpu_count=gpu_count,
        fits=fits,
        min_gpus=min_gpus,
        kv_cache_gib_free=round(kv_gib_free, 2),
        max_tokens_in_cache=tokens,
        message=message,
        assumptions=assumptions,
    )


def _overhead(weight_share: float) -> float:
    return RUNTIME_OVERHEAD_BYTES + ACTIVATION_SHARE * weight_share


def _checkpoint_tensors(storage: Storage, path: str, listing: Listing) -> list[Tensor]:
    names = listing.file_names()
    files = sorted(n for n in names if n.endswith(".safetensors"))
    if "model.safetensors.index.json" in names:
        # Only the shards the index lists: a folder may also hold e.g. consolidated copies.
        index_path = join(path, "model.safetensors.index.json")
        index = _read_json(storage, index_path, listing.size_of("model.safetensors.index.json"))
        listed = set(index.get("weight_map", {}).values())
        files = [f for f in files if f in listed] or files
    tensors: list[Tensor] = []
    for name in files:
        tensors.extend(read_safetensors_header(storage, join(path, name), listing.size_of(name)))
    return tensors


def _prequantized(shape: ModelShape) -> str | None:
    if not shape.quantization_config:
        return None
    method = str(shape.quantization_config.get("quant_method") or "quantized").lower()
    return method


def _prequantized_bits(shape: ModelShape) -> float:
    """Bits per weight of a checkpoint stored quantized but not readable as safetensors."""
    config = shape.quantization_config or {}
    bits = config.get("bits") or config.get("w_bit") or config.get("weight_bits")
    if isinstance(bits, int | float) and bits > 0:
        return float(bits) + (20 / 128 if bits <= 4 else 0)
    method = str(config.get("quant_method", "")).lower()
    if method == "fp8" or config.get("load_in_8bit"):
        return 8.0
    return QUANTIZATION_BITS["int4"]


def _compute_dtype(dtype: str, shape: ModelShape, assumptions: list[str]) -> str:
    dtype = (dtype or "auto").lower()
    if dtype != "auto":
        if dtype not in DTYPE_BYTES:
            raise InspectError(f"Unknown dtype {dtype!r}: expected auto, float16, bfloat16 or float32.")
        return dtype
    stored = (shape.torch_dtype or "").removeprefix("torch.").lower()
    if stored in ("float16", "bfloat16"):
        return stored
    # vLLM's "auto" serves FP32 (or unspecified) checkpoints in 16 bit.
    assumptions.append(f"config.json says {stored or 'no torch_dtype'}: served in float16 (vLLM's auto).")
    return "float16"


def _tokens(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 1000:
        return f"{count / 1000:.0f}k"
    return str(count)
