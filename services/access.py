"""How to reach a service from inside the cluster: URLs and copy-paste snippets."""

from dataclasses import dataclass

from django.conf import settings

from services.models import InferenceService


@dataclass(frozen=True)
class Snippet:
    title: str
    language: str
    code: str


@dataclass(frozen=True)
class AccessInfo:
    internal_url: str
    health_url: str
    grpc_address: str
    snippets: tuple[Snippet, ...]


def access_info(service: InferenceService) -> AccessInfo:
    host = f"{service.name}.{service.namespace}.svc.{settings.CLUSTER_DOMAIN}"
    base = f"http://{host}:8000"
    model = service.effective_model_name
    if service.runtime == InferenceService.Runtime.TRITON:
        return AccessInfo(
            internal_url=base,
            health_url=f"{base}/v2/health/ready",
            grpc_address=f"{host}:8001",
            snippets=_triton_snippets(base, host, model),
        )
    return AccessInfo(
        internal_url=base, health_url=f"{base}/health", grpc_address="", snippets=_vllm_snippets(base, model)
    )


def _vllm_snippets(base: str, model: str) -> tuple[Snippet, ...]:
    curl = (
        f"curl {base}/v1/chat/completions \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"""  -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'"""
    )
    python = (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base}/v1", api_key="EMPTY")\n'
        "reply = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)"
    )
    return (
        Snippet("curl: chat completion", "bash", curl),
        Snippet("Python (OpenAI SDK)", "python", python),
        Snippet("curl: list models", "bash", f"curl {base}/v1/models"),
    )


def _triton_snippets(base: str, host: str, model: str) -> tuple[Snippet, ...]:
    curl = (
        f"curl {base}/v2/models/{model}/infer \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        """  -d '{"inputs": [{"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": ["Hello"]}]}'"""
    )
    python = (
        "import tritonclient.grpc as grpcclient\n\n"
        f'client = grpcclient.InferenceServerClient(url="{host}:8001")\n'
        f'print(client.is_model_ready("{model}"))'
    )
    return (
        Snippet("curl: infer (KServe v2)", "bash", curl),
        Snippet("curl: model metadata", "bash", f"curl {base}/v2/models/{model}"),
        Snippet("Python (Triton gRPC client)", "python", python),
    )
