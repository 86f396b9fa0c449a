from deploy.runtimes.base import Flag, Port, Probe, Runtime

_VALUE_FLAGS = (
    "--dtype", "--max-model-len", "--gpu-memory-utilization", "--max-num-seqs",
    "--max-num-batched-tokens", "--quantization", "--kv-cache-dtype", "--block-size",
    "--swap-space", "--cpu-offload-gb", "--seed", "--revision", "--tokenizer",
    "--tokenizer-mode", "--tokenizer-revision", "--chat-template", "--load-format",
    "--max-logprobs", "--max-seq-len-to-capture", "--rope-scaling", "--rope-theta",
    "--pipeline-parallel-size", "--distributed-executor-backend", "--max-lora-rank",
    "--max-loras", "--lora-modules", "--limit-mm-per-prompt", "--uvicorn-log-level",
    "--tool-call-parser", "--reasoning-parser", "--generation-config", "--override-generation-config",
    "--hf-overrides", "--compilation-config", "--speculative-config", "--max-parallel-loading-workers",
    "--scheduling-policy", "--long-prefill-token-threshold", "--max-num-partial-prefills",
    "--response-role", "--chat-template-content-format", "--mm-processor-kwargs",
)
_SWITCH_FLAGS = (
    "--trust-remote-code", "--enforce-eager", "--enable-prefix-caching", "--no-enable-prefix-caching",
    "--enable-chunked-prefill", "--no-enable-chunked-prefill", "--enable-lora",
    "--disable-log-requests", "--disable-log-stats", "--enable-auto-tool-choice",
    "--disable-custom-all-reduce", "--enable-expert-parallel", "--disable-sliding-window",
    "--disable-frontend-multiprocessing", "--enable-prompt-tokens-details", "--enable-log-requests",
)

VLLM = Runtime(
    name="vllm",
    label="vLLM",
    default_image="vllm/vllm-openai:v0.11.0",
    ports=(Port("http", 8000),),
    # /health answers as soon as the engine is up; /v1/models once the model is served.
    startup_probe=Probe(path="/health", period_seconds=10, failure_threshold=180),
    readiness_probe=Probe(path="/v1/models", period_seconds=10, failure_threshold=3),
    model_mount_path="/models",
    description="OpenAI-compatible server for LLMs (/v1/chat/completions, /v1/completions, /v1/embeddings).",
    flags=tuple(Flag(f) for f in _VALUE_FLAGS) + tuple(Flag(f, takes_value=False) for f in _SWITCH_FLAGS),
    managed_flags=(
        "--model", "--port", "--host", "--served-model-name", "--tensor-parallel-size",
        "--api-key", "--download-dir",
    ),
    layouts=("huggingface",),
)
