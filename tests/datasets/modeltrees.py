"""Small generated model trees for the layout check and the fit estimate.

Safetensors files are written valid: the 8-byte little-endian header length, the JSON header,
then a data section of exactly the declared length. The data is all zeros and written with
`truncate`, so a 12.5 GB ChatGLM2-6B checkpoint is a sparse file that takes a few kilobytes of
disk (ext4, xfs, tmpfs). The estimator only reads the headers, so the sizes can be real.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I32": 4}

Spec = tuple[str, tuple[int, ...]]  # (safetensors dtype, shape)


def write_safetensors(path: Path, tensors: dict[str, Spec], metadata: dict[str, str] | None = None) -> int:
    """Write a valid safetensors file (zero data); returns its size in bytes."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_SIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)  # zeros, sparse: no disk used for the "weights"
    return 8 + len(raw) + offset


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


# --------------------------------------------------------------------------- ChatGLM2-6B

CHATGLM2_CONFIG = {
    "_name_or_path": "THUDM/chatglm2-6b",
    "model_type": "chatglm",
    "architectures": ["ChatGLMModel"],
    "add_bias_linear": False,
    "add_qkv_bias": True,
    "ffn_hidden_size": 13696,
    "hidden_size": 4096,
    "kv_channels": 128,
    "layernorm_epsilon": 1e-05,
    "multi_query_attention": True,
    "multi_query_group_num": 2,
    "num_attention_heads": 32,
    "num_layers": 28,
    "padded_vocab_size": 65024,
    "rmsnorm": True,
    "seq_length": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}


def chatglm2_tensors(config: dict = CHATGLM2_CONFIG, dtype: str = "F16") -> dict[str, Spec]:
    """The tensors of THUDM/chatglm2-6b, with its names and shapes (6,243,584,032 parameters)."""
    hidden, ffn = config["hidden_size"], config["ffn_hidden_size"]
    vocab, layers = config["padded_vocab_size"], config["num_layers"]
    qkv = config["num_attention_heads"] * config["kv_channels"] + 2 * (
        config["multi_query_group_num"] * config["kv_channels"]
    )
    tensors: dict[str, Spec] = {
        "transformer.embedding.word_embeddings.weight": (dtype, (vocab, hidden)),
        "transformer.rotary_pos_emb.inv_freq": (dtype, (config["kv_channels"] // 4,)),
    }
    for i in range(layers):
        p = f"transformer.encoder.layers.{i}."
        tensors[p + "input_layernorm.weight"] = (dtype, (hidden,))
        tensors[p + "self_attention.query_key_value.weight"] = (dtype, (qkv, hidden))
        tensors[p + "self_attention.query_key_value.bias"] = (dtype, (qkv,))
        tensors[p + "self_attention.dense.weight"] = (dtype, (hidden, hidden))
        tensors[p + "post_attention_layernorm.weight"] = (dtype, (hidden,))
        tensors[p + "mlp.dense_h_to_4h.weight"] = (dtype, (2 * ffn, hidden))  # SwiGLU: gate + up
        tensors[p + "mlp.dense_4h_to_h.weight"] = (dtype, (hidden, ffn))
    tensors["transformer.encoder.final_layernorm.weight"] = (dtype, (hidden,))
    tensors["transformer.output_layer.weight"] = (dtype, (vocab, hidden))
    return tensors


def write_sharded(folder: Path, tensors: dict[str, Spec], shards: int) -> dict[str, int]:
    """Split tensors over `shards` files with a model.safetensors.index.json; returns file sizes."""
    names = list(tensors)
    per = math.ceil(len(names) / shards)
    weight_map: dict[str, str] = {}
    sizes: dict[str, int] = {}
    total = 0
    for i in range(shards):
        part = {n: tensors[n] for n in names[i * per : (i + 1) * per]}
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        sizes[file] = write_safetensors(folder / file, part)
        weight_map.update(dict.fromkeys(part, file))
        total += sum(math.prod(s) * DTYPE_SIZE[d] for d, s in part.values())
    write_json(
        folder / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )
    return sizes


def write_chatglm2_6b(folder: Path, *, shards: int = 7, safetensors: bool = True) -> Path:
    """THUDM/chatglm2-6b as a Hugging Face folder: config.json, tokenizer, 12.5 GB of sparse
    safetensors shards (or, with safetensors=False, a small stand-in pytorch_model.bin)."""
    write_json(folder / "config.json", CHATGLM2_CONFIG)
    write_json(folder / "tokenizer_config.json", {"tokenizer_class": "ChatGLMTokenizer"})
    (folder / "tokenizer.model").write_bytes(b"\x0a\x00sentencepiece stand-in")
    if safetensors:
        write_sharded(folder, chatglm2_tensors(), shards)
    else:
        (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 stand-in")
    return folder


# --------------------------------------------------------------------------- a tiny Llama

TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def tiny_llama_tensors(config: dict = TINY_LLAMA_CONFIG) -> dict[str, Spec]:
    h, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * h // config["num_attention_heads"]
    tensors: dict[str, Spec] = {"model.embed_tokens.weight": ("BF16", (v, h))}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, shape in (
            ("self_attn.q_proj.weight", (h, h)),
            ("self_attn.k_proj.weight", (kv, h)),
            ("self_attn.v_proj.weight", (kv, h)),
            ("self_attn.o_proj.weight", (h, h)),
            ("mlp.gate_proj.weight", (f, h)),
            ("mlp.up_proj.weight", (f, h)),
            ("mlp.down_proj.weight", (h, f)),
            ("input_layernorm.weight", (h,)),
            ("post_attention_layernorm.weight", (h,)),
        ):
            tensors[p + name] = ("BF16", shape)
    tensors["model.norm.weight"] = ("BF16", (h,))
    tensors["lm_head.weight"] = ("BF16", (v, h))
    return tensors


def write_tiny_llama(folder: Path, *, shards: int = 1) -> Path:
    write_json(folder / "config.json", TINY_LLAMA_CONFIG)
    write_json(folder / "tokenizer.json", {"version": "1.0", "model": {"type": "BPE"}})
    write_json(folder / "generation_config.json", {"do_sample": False})
    if shards == 1:
        write_safetensors(folder / "model.safetensors", tiny_llama_tensors())
    else:
        write_sharded(folder, tiny_llama_tensors(), shards)
    return folder


# --------------------------------------------------------------------------- Triton, TorchServe, GGUF

CHATGLM2_PBTXT = """name: "chatglm2-6b"
backend: "python"
max_batch_size: 0
input [
  { name: "prompt" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "history" data_type: TYPE_STRING dims: [ -1 ] }
]
output [
  { name: "response" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "history" data_type: TYPE_STRING dims: [ -1 ] }
]
parameters: {
  key: "EXECUTION_ENV_PATH",
  value: {string_value: "$$TRITON_MODEL_DIRECTORY/../python-3-8.tar.gz"}
}
instance_group [ { count: 1 kind: KIND_GPU gpus: [ 0 ] } ]
"""

MODEL_PY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        return []
"""


def write_triton_repository(repo: Path, model: str = "chatglm2-6b") -> Path:
    """The seed's layout: model_repository/<model>/{config.pbtxt, 1/model.py} and a shared
    conda-pack environment at the repository root."""
    (repo / model / "1").mkdir(parents=True, exist_ok=True)
    (repo / model / "config.pbtxt").write_text(CHATGLM2_PBTXT.replace('"chatglm2-6b"', f'"{model}"', 1))
    (repo / model / "1" / "model.py").write_text(MODEL_PY)
    (repo / "python-3-8.tar.gz").write_bytes(b"\x1f\x8b stand-in")
    return repo


def write_broken_triton_repository(repo: Path) -> Path:
    """One good model, one without a version folder, one without config.pbtxt."""
    write_triton_repository(repo, "chatglm2-6b")
    (repo / "no-version").mkdir(parents=True)
    (repo / "no-version" / "config.pbtxt").write_text('name: "no-version"\nbackend: "python"\n')
    (repo / "no-config" / "1").mkdir(parents=True)
    (repo / "no-config" / "1" / "model.py").write_text(MODEL_PY)
    return repo


def write_mar_store(store: Path, names: tuple[str, ...] = ("resnet-18",)) -> Path:
    """A TorchServe model store: real (tiny) .mar zip archives with a MANIFEST."""
    store.mkdir(parents=True, exist_ok=True)
    for name in names:
        with zipfile.ZipFile(store / f"{name}.mar", "w") as mar:
            manifest = {
                "model": {"modelName": name, "handler": "image_classifier"},
                "archiverVersion": "0.9.0",
            }
            mar.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
    (store / "config.properties").write_text("inference_address=http://0.0.0.0:8080\n")
    return store


def write_gguf(path: Path) -> Path:
    """A minimal GGUF v3 file: magic, version, zero tensors, zero metadata entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    return path
