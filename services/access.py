"""How to call a service: through the gateway (first), with the key header and the extra auth
parameters its policy requires filled in the copy-paste snippets; the in-cluster address is a
secondary line (the NetworkPolicy lets only the gateway's namespace reach it).

Snippets never contain a secret: the key is `$INFERENCE_KEY` (os.environ in Python) and every
extra parameter is shown by name with an environment-variable placeholder, never its value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from services.auth_policy import param_names
from services.models import InferenceService

KEY_VARIABLE = "INFERENCE_KEY"
BEARER_HEADER = "Authorization"


@dataclass(frozen=True)
class Snippet:
    title: str
    language: str
    code: str


@dataclass(frozen=True)
class AuthParam:
    """An extra header or query parameter callers must send, by name only."""

    location: str  # header | query
    name: str

    @property
    def variable(self) -> str:
        """The environment variable the snippets read its value from: X-Team -> X_TEAM."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.name).strip("_").upper() or "AUTH_PARAM"


@dataclass(frozen=True)
class AccessInfo:
    gateway_url: str  # <GATEWAY_PUBLIC_URL>/<service name>: what users call
    health_url: str  # through the gateway
    requires_key: bool
    key_header: str  # "Authorization: Bearer $INFERENCE_KEY", "X-Api-Key: $INFERENCE_KEY" or ""
    params: tuple[AuthParam, ...]
    internal_url: str  # the Service inside the cluster, reachable from the gateway only
    grpc_address: str  # Triton's gRPC port inside the cluster, reachable from the gateway only
    grpc_gateway: str  # host:port of the gateway's gRPC listener for Triton ("" otherwise)
    snippets: tuple[Snippet, ...]


def auth_params_of(service: InferenceService) -> tuple[AuthParam, ...]:
    """Names of the extra parameters of the service's policy ([] when there are none, or when
    they cannot be decrypted: the panel then shows no names rather than failing)."""
    if not service.requires_key or not service.auth_params_encrypted:
        return ()
    return tuple(AuthParam(p["in"], p["name"]) for p in param_names(service.auth_params_encrypted))


def access_info(service: InferenceService) -> AccessInfo:
    host = f"{service.name}.{service.namespace}.svc.{settings.CLUSTER_DOMAIN}"
    internal = f"http://{host}:{service.runtime_info.port('http').port}"
    gateway = f"{settings.GATEWAY_PUBLIC_URL.rstrip('/')}/{service.name}"
    requires_key = service.requires_key
    call = _Call(
        base=gateway,
        header=service.key_header if requires_key else "",
        params=auth_params_of(service),
        model=service.effective_model_name,
    )
    triton = service.runtime == InferenceService.Runtime.TRITON
    grpc_gateway = settings.GATEWAY_PUBLIC_GRPC if triton and settings.GATEWAY_GRPC_PORT else ""
    return AccessInfo(
        gateway_url=gateway,
        health_url=f"{gateway}/v2/health/ready" if triton else f"{gateway}/health",
        requires_key=requires_key,
        key_header=call.key_header_line(),
        params=call.params,
        internal_url=internal,
        grpc_address=f"{host}:{service.runtime_info.port('grpc').port}" if triton else "",
        grpc_gateway=grpc_gateway,
        snippets=_triton_snippets(call, service.name, grpc_gateway) if triton else _openai_snippets(call),
    )


@dataclass(frozen=True)
class _Call:
    """What every snippet needs: where, which headers and query parameters, which model."""

    base: str
    header: str  # "" when no key is needed
    params: tuple[AuthParam, ...]
    model: str

    @property
    def bearer(self) -> bool:
        return self.header.lower() == BEARER_HEADER.lower()

    def key_header_line(self) -> str:
        if not self.header:
            return ""
        value = f"Bearer ${KEY_VARIABLE}" if self.bearer else f"${KEY_VARIABLE}"
        return f"{self.header}: {value}"

    @property
    def header_params(self) -> list[AuthParam]:
        return [p for p in self.params if p.location == "header"]

    @property
    def query_params(self) -> list[AuthParam]:
        return [p for p in self.params if p.location == "query"]

    def url(self, path: str, *, for_shell: bool) -> str:
        """The URL with the query parameters; shell placeholders ($X) or Python's f-string ({X})."""
        if not self.query_params:
            return f"{self.base}{path}"
        query = "&".join(
            f"{p.name}=${p.variable}" if for_shell else f"{p.name}={{os.environ['{p.variable}']}}"
            for p in self.query_params
        )
        return f"{self.base}{path}?{query}"

    def curl(self, path: str, body: dict | None = None) -> str:
        lines = [f'curl "{self.url(path, for_shell=True)}"']
        if self.header:
            lines.append(f'-H "{self.key_header_line()}"')
        lines += [f'-H "{p.name}: ${p.variable}"' for p in self.header_params]
        if body is not None:
            lines.append("-H 'Content-Type: application/json'")
            lines.append(f"-d '{json.dumps(body)}'")
        return " \\\n  ".join(lines)

    def _key_entry(self, header: str) -> list[str]:
        """`"<header>": <the key from os.environ>` as a dict entry, or nothing without a key."""
        if not self.header:
            return []
        key = (
            f"f\"Bearer {{os.environ['{KEY_VARIABLE}']}}\""
            if self.bearer
            else f'os.environ["{KEY_VARIABLE}"]'
        )
        return [f'"{header}": {key}']

    def python_headers(self) -> str:
        """A `headers = {...}` dict literal with os.environ lookups, one entry per line."""
        entries = self._key_entry(self.header)
        entries += [f'"{p.name}": os.environ["{p.variable}"]' for p in self.header_params]
        return _dict_literal(entries)

    def grpc_metadata(self, service: str) -> str:
        """The headers as gRPC metadata (lower-case names, as gRPC requires): the service's name
        for the gateway's router, the key, and the extra parameters, query ones included."""
        entries = [f'"x-inference-service": "{service}"', *self._key_entry(self.header.lower())]
        entries += [f'"{p.name.lower()}": os.environ["{p.variable}"]' for p in self.params]
        return _dict_literal(entries)

    def python_query(self) -> str:
        entries = [f'"{p.name}": os.environ["{p.variable}"]' for p in self.query_params]
        return "{" + ", ".join(entries) + "}"

    def sdk_options(self) -> str:
        """api_key, default_headers and default_query for the OpenAI SDK and LangChain."""
        if self.header and self.bearer:
            options = [f'api_key=os.environ["{KEY_VARIABLE}"]']
        else:
            # The SDK insists on an api_key; the gateway reads the key from the custom header.
            options = ['api_key="unused"']
        headers = []
        if self.header and not self.bearer:
            headers.append(f'"{self.header}": os.environ["{KEY_VARIABLE}"]')
        headers += [f'"{p.name}": os.environ["{p.variable}"]' for p in self.header_params]
        if headers:
            options.append("default_headers={" + ", ".join(headers) + "}")
        if self.query_params:
            options.append(f"default_query={self.python_query()}")
        return "".join(f"    {option},\n" for option in options)


def _dict_literal(entries: list[str]) -> str:
    if not entries:
        return "{}"
    return "{\n" + "".join(f"    {entry},\n" for entry in entries) + "}"


def _openai_snippets(call: _Call) -> tuple[Snippet, ...]:
    chat = {"model": call.model, "messages": [{"role": "user", "content": "Hello"}]}
    query = f"\n    params={call.python_query()}," if call.query_params else ""
    requests_code = (
        "import os\n\nimport requests\n\n"
        f"headers = {call.python_headers()}\n"
        "response = requests.post(\n"
        f'    "{call.base}/v1/chat/completions",\n'
        f"    headers=headers,{query}\n"
        f"    json={json.dumps(chat)},\n"
        "    timeout=60,\n"
        ")\n"
        "response.raise_for_status()\n"
        'print(response.json()["choices"][0]["message"]["content"])'
    )
    openai_code = (
        "import os\n\nfrom openai import OpenAI\n\n"
        "client = OpenAI(\n"
        f'    base_url="{call.base}/v1",\n'
        f"{call.sdk_options()}"
        ")\n"
        "stream = client.chat.completions.create(\n"
        f'    model="{call.model}",\n'
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        "    stream=True,\n"
        ")\n"
        "for chunk in stream:\n"
        '    print(chunk.choices[0].delta.content or "", end="", flush=True)'
    )
    langchain_code = (
        "import os\n\nfrom langchain_openai import ChatOpenAI\n\n"
        "llm = ChatOpenAI(\n"
        f'    model="{call.model}",\n'
        f'    base_url="{call.base}/v1",\n'
        f"{call.sdk_options()}"
        ")\n"
        'print(llm.invoke("Hello").content)'
    )
    return (
        Snippet("curl: chat completion", "bash", call.curl("/v1/chat/completions", chat)),
        Snippet("Python (requests)", "python", requests_code),
        Snippet("Python (OpenAI SDK, streaming)", "python", openai_code),
        Snippet("Python (LangChain)", "python", langchain_code),
        Snippet("curl: list models", "bash", call.curl("/v1/models")),
    )


def _triton_snippets(call: _Call, service: str, grpc_gateway: str) -> tuple[Snippet, ...]:
    infer = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    query = f"\n    params={call.python_query()}," if call.query_params else ""
    requests_code = (
        "import os\n\nimport requests\n\n"
        f"headers = {call.python_headers()}\n"
        "response = requests.post(\n"
        f'    "{call.base}/v2/models/{call.model}/infer",\n'
        f"    headers=headers,{query}\n"
        f"    json={json.dumps(infer)},\n"
        "    timeout=60,\n"
        ")\n"
        "response.raise_for_status()\n"
        'print(response.json()["outputs"])'
    )
    parts = urlsplit(call.base)
    # tritonclient takes host:port/path without the scheme, and ssl=True for https.
    target = f"{parts.netloc}{parts.path}"
    ssl = ", ssl=True" if parts.scheme == "https" else ""
    query_arg = f", query_params={call.python_query()}" if call.query_params else ""
    triton_code = (
        "import os\n\nimport numpy as np\nimport tritonclient.http as httpclient\n\n"
        f'client = httpclient.InferenceServerClient(url="{target}"{ssl})\n'
        f"headers = {call.python_headers()}\n"
        'inputs = [httpclient.InferInput("INPUT0", [1, 4], "FP32")]\n'
        "inputs[0].set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))\n"
        f'result = client.infer("{call.model}", inputs, headers=headers{query_arg})\n'
        'print(result.as_numpy("OUTPUT0"))'
    )
    snippets = [
        Snippet("curl: infer (KServe v2)", "bash", call.curl(f"/v2/models/{call.model}/infer", infer)),
        Snippet("Python (requests)", "python", requests_code),
        Snippet("Python (Triton HTTP client)", "python", triton_code),
    ]
    if grpc_gateway:
        grpc_code = (
            "import os\n\nimport numpy as np\nimport tritonclient.grpc as grpcclient\n\n"
            f'client = grpcclient.InferenceServerClient(url="{grpc_gateway}")\n'
            f"metadata = {call.grpc_metadata(service)}\n"
            'inputs = [grpcclient.InferInput("INPUT0", [1, 4], "FP32")]\n'
            "inputs[0].set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))\n"
            f'result = client.infer("{call.model}", inputs, headers=metadata)\n'
            'print(result.as_numpy("OUTPUT0"))'
        )
        snippets.append(Snippet("Python (Triton gRPC client)", "python", grpc_code))
    snippets.append(Snippet("curl: model metadata", "bash", call.curl(f"/v2/models/{call.model}")))
    return tuple(snippets)
