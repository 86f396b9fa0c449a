"""The service page's playground: one call to the service through the gateway, made by the
console server-side with the key the user pasted.

The key and the extra auth parameters' values live only in this request: they are not stored,
not put in the session, not logged and not echoed back (the view is also marked with
sensitive_post_parameters, so error reports leave them out).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings

from services.access import BEARER_HEADER, auth_params_of
from services.auth_policy import is_header_value
from services.models import InferenceService

MAX_PROMPT_CHARS = 4000
MAX_BODY_CHARS = 64_000
MAX_TOKENS = 256
CONNECT_TIMEOUT_SECONDS = 60  # urllib's one timeout covers connect and every read
MAX_RESPONSE_BYTES = 1_000_000
# Straight to the gateway: an HTTP(S)_PROXY in the console's environment is not for this call.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _header_value(value: str) -> None:
    if not is_header_value(value):
        raise forms.ValidationError("Printable ASCII only, without spaces at either end.")


class PlaygroundForm(forms.Form):
    """Key, prompt (vLLM) or JSON body (Triton), and one field per extra auth parameter."""

    key = forms.CharField(
        label="Inference key",
        required=False,
        max_length=512,
        strip=True,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )
    prompt = forms.CharField(
        label="Prompt", required=False, max_length=MAX_PROMPT_CHARS, widget=forms.Textarea
    )
    body = forms.CharField(
        label="Request body (JSON)", required=False, max_length=MAX_BODY_CHARS, widget=forms.Textarea
    )

    def __init__(self, *args: Any, service: InferenceService, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.service = service
        self.triton = service.runtime == InferenceService.Runtime.TRITON
        self.param_fields: list[tuple[str, str, str]] = []  # (field name, location, parameter name)
        for i, param in enumerate(auth_params_of(service)):
            name = f"param_{i}"
            self.fields[name] = forms.CharField(
                label=f"{param.name} ({param.location})",
                max_length=512,
                required=True,
                validators=[_header_value] if param.location == "header" else [],
            )
            self.param_fields.append((name, param.location, param.name))
        if self.triton:
            del self.fields["prompt"]
            if not self.is_bound:
                self.initial["body"] = json.dumps(default_triton_body(), indent=2)
        else:
            del self.fields["body"]

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if self.service.requires_key and not key:
            raise forms.ValidationError("Paste an inference key for this service.")
        if key and not is_header_value(key):
            raise forms.ValidationError(
                "That is not a key: keys are one line of printable ASCII (iek_…). Paste it again."
            )
        return key

    def clean_prompt(self) -> str:
        prompt = self.cleaned_data["prompt"]
        if not prompt.strip():
            raise forms.ValidationError("Type a prompt.")
        return prompt

    def clean_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.cleaned_data["body"])
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise forms.ValidationError('Give a KServe v2 request: a JSON object with an "inputs" list.')
        return body


def default_triton_body() -> dict[str, Any]:
    return {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@dataclass
class PlaygroundResult:
    ok: bool
    status: int | None = None
    url: str = ""  # without the query string: it may carry auth parameters
    answer: str = ""  # the assembled text (vLLM) or the pretty-printed response (Triton)
    error: str = ""
    chunks: int = 0
    first_chunk_ms: float | None = None
    total_ms: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)


def call_gateway(*, service: InferenceService, form: PlaygroundForm) -> PlaygroundResult:
    """Send the form's request to the service through the gateway and read the answer."""
    data = form.cleaned_data
    base = f"{settings.GATEWAY_PUBLIC_URL.rstrip('/')}/{service.name}"
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if data["key"]:
        header = service.key_header
        bearer = header.lower() == BEARER_HEADER.lower()
        headers[header] = f"Bearer {data['key']}" if bearer else data["key"]
    query = {}
    for field_name, location, name in form.param_fields:
        if location == "query":
            query[name] = data[field_name]
        else:
            headers[name] = data[field_name]
    if form.triton:
        path, payload = f"/v2/models/{service.effective_model_name}/infer", data["body"]
    else:
        path = "/v1/chat/completions"
        payload = {
            "model": service.effective_model_name,
            "messages": [{"role": "user", "content": data["prompt"]}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    url = base + path + (f"?{urlencode(query)}" if query else "")
    # The URL is the console's own setting (http or https), never user input.
    request = urllib.request.Request(  # noqa: S310
        url, data=json.dumps(payload).encode(), headers=headers, method="POST"
    )
    result = PlaygroundResult(ok=False, url=base + path)
    started = time.monotonic()
    try:
        with _OPENER.open(request, timeout=CONNECT_TIMEOUT_SECONDS) as response:
            result.status = response.status
            if response.headers.get_content_type() == "text/event-stream":
                _read_stream(response, result, started)
            else:
                _read_json(response.read(MAX_RESPONSE_BYTES), result)
            result.ok = True
    except urllib.error.HTTPError as exc:
        result.status = exc.code
        result.error = _error_text(exc.read(MAX_RESPONSE_BYTES)) or exc.reason
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        result.error = f"The gateway at {settings.GATEWAY_PUBLIC_URL} did not answer: {reason}"
    result.total_ms = (time.monotonic() - started) * 1000
    return result


def _read_stream(response: Any, result: PlaygroundResult, started: float) -> None:
    """Assemble an OpenAI SSE stream: text from the deltas, usage from the final chunk."""
    pieces = []
    for raw in response:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            break
        if result.first_chunk_ms is None:
            result.first_chunk_ms = (time.monotonic() - started) * 1000
        result.chunks += 1
        try:
            chunk = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(chunk, dict):
            continue
        if isinstance(chunk.get("usage"), dict):
            result.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                pieces.append(_text_of(choice.get("delta")) or _text_of(choice))
    result.answer = "".join(pieces)


def _read_json(body: bytes, result: PlaygroundResult) -> None:
    try:
        data = json.loads(body)
    except ValueError:
        result.answer = body.decode("utf-8", errors="replace")
        return
    choices = data.get("choices") if isinstance(data, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):  # an OpenAI answer
        result.answer = _text_of(choices[0].get("message")) or _text_of(choices[0])
        usage = data.get("usage")
        result.usage = usage if isinstance(usage, dict) else {}
    else:
        result.answer = json.dumps(data, indent=2)


def _text_of(part: object) -> str:
    """The text of a message, delta or choice: its `content`, else its `text`."""
    if not isinstance(part, dict):
        return ""
    text = part.get("content") or part.get("text") or ""
    return text if isinstance(text, str) else str(text)


def _error_text(body: bytes) -> str:
    """The message of a JSON error body ({"error": {"message"}}, {"error": "..."} or {"message"})."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")[:500]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error or data.get("message") or data.get("detail") or data)
    return str(data)
