from deploy.runtimes.base import Flag, Port, Probe, Runtime

_VALUE_FLAGS = (
    "--log-verbose", "--log-format", "--model-control-mode", "--load-model", "--backend-config",
    "--pinned-memory-pool-byte-size", "--cuda-memory-pool-byte-size", "--repository-poll-secs",
    "--id", "--buffer-manager-thread-count", "--model-load-thread-count", "--exit-timeout-secs",
    "--rate-limit", "--response-cache-byte-size", "--cache-config", "--min-supported-compute-capability",
    "--backend-directory", "--repoagent-directory", "--model-load-retry-count", "--metrics-interval-ms",
    "--http-thread-count", "--grpc-infer-allocation-pool-size",
    "--strict-readiness", "--exit-on-error", "--strict-model-config", "--disable-auto-complete-config",
    "--allow-gpu-metrics", "--allow-cpu-metrics", "--log-info", "--log-warning", "--log-error",
)

TRITON = Runtime(
    name="triton",
    label="Triton Inference Server",
    default_image="nvcr.io/nvidia/tritonserver:25.01-py3",
    ports=(Port("http", 8000), Port("grpc", 8001, app_protocol="grpc"), Port("metrics", 8002)),
    # No liveness probe: Triton can spend many minutes loading a repository, and a
    # liveness probe would kill it in the middle. Startup + readiness only.
    startup_probe=Probe(path="/v2/health/live", period_seconds=10, failure_threshold=180),
    readiness_probe=Probe(path="/v2/health/ready", period_seconds=10, failure_threshold=3),
    model_mount_path="/models",
    description="KServe v2 protocol over HTTP (8000) and gRPC (8001), Prometheus metrics on 8002.",
    flags=tuple(Flag(f) for f in _VALUE_FLAGS),
    managed_flags=(
        "--model-repository", "--model-store", "--http-port", "--grpc-port", "--metrics-port",
        "--allow-http", "--allow-grpc", "--allow-metrics",
    ),
    layouts=("triton",),
)
