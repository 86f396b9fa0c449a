"""`python deploy/clusters/simulated/standin.py --runtime vllm --model NAME --url-file PATH`:
the stand-in model server behind a Running pod of the simulated cluster.

It speaks the runtime's HTTP protocol with clearly fake output, so the gateway, the access
panel's snippets and the playground work end to end with no GPU:

- vllm: the OpenAI API as vLLM serves it: /health, /v1/models, /v1/chat/completions and
  /v1/completions (with `stream: true` as server-sent events, and a final usage chunk when
  `stream_options.include_usage` is set), /v1/embeddings;
- triton: KServe v2 as Triton serves it: /v2, /v2/health/ready|live, /v2/models/<m>,
  /v2/models/<m>/ready, /v2/models/<m>[/versions/<v>]/infer, whose outputs echo the inputs
  (names OUTPUT<i>, same shape, datatype and data), also for tritonclient's binary tensors.

It listens on 127.0.0.1 on a free port and writes its URL to --url-file once it accepts
connections (the file is how the console finds it). It exits when that file disappears, so a
stand-in whose state folder was removed never lingers. Standard library only: it is started by
path (deploy/clusters/simulated/standins.py) without Django.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAKE_PREFIX = "[simulated {model}]"
EMBEDDING_SIZE = 16
ORPHAN_CHECK_SECONDS = 1.0
MAX_BODY_BYTES = 64 * 1024 * 1024
# Triton's datatypes as struct formats (little-endian), for the binary tensor extension.
BINARY_FORMATS = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def count_tokens(text: str) -> int:
    """A word is a token here: the stand-in has no tokenizer, and the numbers only need to add up."""
    return len(text.split())


def fake_reply(model: str, prompt: str, max_tokens: int | None) -> list[str]:
    """The reply as a list of tokens (words with their leading space)."""
    said = " ".join(prompt.split()[:24]) or "nothing"
    words = f"{FAKE_PREFIX.format(model=model)} This is a stand-in, not a model. You said: {said}".split()
    if max_tokens is not None:
        words = words[: max(0, max_tokens)]
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def fake_embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((byte - 127.5) / 127.5, 6) for byte in digest[:EMBEDDING_SIZE]]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "simulated-standin/1"
    runtime = "vllm"
    models: tuple[str, ...] = ()
    chunk_delay = 0.0
    started = int(time.time())

    # --- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body() if method == "POST" else b""
            if self.runtime == "triton":
                self._triton(method, path, body)
            else:
                self._openai(method, path, body)
        except BadRequest as exc:
            self._error(exc.status, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()  # a proxy that streams the request body sends it so
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise BadRequest("request body too large", 413)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                self.close_connection = True
                raise BadRequest("request body too large", 413)
            body += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after each chunk

    def _json_body(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return data

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        if self.runtime == "triton":
            self._send(status, {"error": message})
            return
        kind = "NotFoundError" if status == 404 else "BadRequestError"
        self._send(
            status, {"object": "error", "message": message, "type": kind, "param": None, "code": status}
        )

    def _stream(self, events: list[dict[str, Any]]) -> None:
        """Server-sent events, one chunk per event, as vLLM streams them."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in [*(f"data: {json.dumps(e)}\n\n" for e in events), "data: [DONE]\n\n"]:
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            if self.chunk_delay:
                time.sleep(self.chunk_delay)  # paces the stream like a model generating tokens
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # --- OpenAI (vLLM) ------------------------------------------------------------------------

    def _openai(self, method: str, path: str, body: bytes) -> None:
        if method == "GET" and path == "/health":
            self._send(200)
        elif method == "GET" and path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": self.started, "owned_by": "vllm", "root": m}
                for m in self.models
            ]
            self._send(200, {"object": "list", "data": data})
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            self._completion(self._json_body(body), chat=path.endswith("chat/completions"))
        elif method == "POST" and path == "/v1/embeddings":
            self._embeddings(self._json_body(body))
        else:
            raise BadRequest(f"{method} {path} is not served", 404)

    def _model_of(self, request: dict[str, Any]) -> str:
        model = request.get("model") or self.models[0]
        if model not in self.models:
            raise BadRequest(f"The model `{model}` does not exist.", 404)
        return str(model)

    def _completion(self, request: dict[str, Any], *, chat: bool) -> None:
        model = self._model_of(request)
        if chat:
            messages = request.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest("messages: a non-empty list of messages is required")
            texts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
            prompt = texts[-1] if texts else ""
            prompt_tokens = sum(count_tokens(t) for t in texts)
        else:
            prompt = request.get("prompt")
            if isinstance(prompt, list):
                prompt = " ".join(str(p) for p in prompt)
            if not isinstance(prompt, str):
                raise BadRequest("prompt: a string is required")
            prompt_tokens = count_tokens(prompt)
        limit = request.get("max_tokens", request.get("max_completion_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise BadRequest("max_tokens must be a positive integer")
        tokens = fake_reply(model, prompt, limit)
        finish = "length" if limit is not None and len(tokens) >= limit else "stop"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        kind = "chat.completion" if chat else "text_completion"
        base = {"id": ident, "created": int(time.time()), "model": model}
        if not request.get("stream"):
            text = "".join(tokens)
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            self._send(200, {**base, "object": kind, "choices": [choice], "usage": usage})
            return
        chunk_kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, finish_reason: str | None, first: bool = False) -> dict[str, Any]:
            entry: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
                if piece is not None:
                    delta["content"] = piece
                entry["delta"] = delta
            else:
                entry["text"] = piece or ""
            return {**base, "object": chunk_kind, "choices": [entry]}

        events = [chunk(None, None, first=True)] if chat else []
        events += [chunk(piece, None) for piece in tokens]
        events.append(chunk("" if not chat else None, finish))
        if (request.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "object": chunk_kind, "choices": [], "usage": usage})
        self._stream(events)

    def _embeddings(self, request: dict[str, Any]) -> None:
        model = self._model_of(request)
        inputs = request.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            raise BadRequest("input: a string or a non-empty list of strings is required")
        tokens = sum(count_tokens(i) for i in inputs)
        data = [
            {"object": "embedding", "index": i, "embedding": fake_embedding(t)} for i, t in enumerate(inputs)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._send(200, {"object": "list", "model": model, "data": data, "usage": usage})

    # --- KServe v2 (Triton) -------------------------------------------------------------------

    def _triton(self, method: str, path: str, body: bytes) -> None:
        if method == "GET" and path in ("/v2/health/ready", "/v2/health/live"):
            self._send(200)
            return
        if method == "GET" and path == "/v2":
            self._send(200, {"name": "triton", "version": "simulated", "extensions": ["binary_tensor_data"]})
            return
        match = re.fullmatch(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?", path)
        if not match:
            raise BadRequest(f"{method} {path} is not served", 404)
        model, version, action = match.groups()
        if model not in self.models or version not in (None, "1"):
            raise BadRequest(f"Request for unknown model: '{model}' is not found", 404)
        if method == "GET" and action is None:
            tensor = {"name": "INPUT0", "datatype": "BYTES", "shape": [-1, -1]}
            self._send(
                200,
                {
                    "name": model,
                    "versions": ["1"],
                    "platform": "simulated (echoes its inputs)",
                    "inputs": [tensor],
                    "outputs": [{**tensor, "name": "OUTPUT0"}],
                },
            )
        elif method == "GET" and action == "/ready":
            self._send(200)
        elif method == "POST" and action == "/infer":
            self._infer(model, body)
        else:
            raise BadRequest(f"{method} {path} is not served", 404)

    def _infer(self, model: str, body: bytes) -> None:
        header_length = self.headers.get("Inference-Header-Content-Length")
        raw = b""
        if header_length is not None:
            split = int(header_length)
            body, raw = body[:split], body[split:]
        request = self._json_body(body)
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("inputs: a non-empty list of tensors is required")
        outputs = []
        for i, tensor in enumerate(inputs):
            if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= tensor.keys():
                raise BadRequest(f"inputs[{i}] needs a name, a shape and a datatype")
            shape = tensor["shape"]
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise BadRequest(f"inputs[{i}].shape must be a list of non-negative integers")
            size = ((tensor.get("parameters") or {}).get("binary_data_size")) if header_length else None
            if size is not None:
                data, raw = _decode_binary(tensor["datatype"], raw[:size]), raw[size:]
            elif "data" in tensor:
                data = tensor["data"]
            else:
                raise BadRequest(f"inputs[{i}] has no data")
            outputs.append(
                {"name": f"OUTPUT{i}", "datatype": tensor["datatype"], "shape": shape, "data": _flat(data)}
            )
        reply = {"model_name": model, "model_version": "1", "outputs": outputs}
        if "id" in request:
            reply["id"] = request["id"]
        self._send(200, reply)


def _flat(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [item for part in data for item in _flat(part)]
    return [data]


def _decode_binary(datatype: str, raw: bytes) -> list[Any]:
    """Tensor bytes from tritonclient's binary extension as JSON values."""
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then the bytes
        values, offset = [], 0
        while offset + 4 <= len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            values.append(raw[offset + 4 : offset + 4 + length].decode(errors="replace"))
            offset += 4 + length
        return values
    fmt = BINARY_FORMATS.get(datatype)
    if fmt is None:
        raise BadRequest(f"datatype {datatype} is not supported by the stand-in")
    count = len(raw) // struct.calcsize(fmt)
    return list(struct.unpack(f"<{count}{fmt}", raw[: count * struct.calcsize(fmt)]))


def _exit_when_gone(url_file: Path, server: ThreadingHTTPServer) -> None:
    while url_file.exists():
        time.sleep(ORPHAN_CHECK_SECONDS)
    server.shutdown()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=("vllm", "triton"), required=True)
    parser.add_argument("--model", action="append", required=True, help="a served model name (repeatable)")
    parser.add_argument("--url-file", required=True, type=Path)
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between streamed chunks")
    args = parser.parse_args(argv)
    handler = type(
        "StandinHandler",
        (Handler,),
        {"runtime": args.runtime, "models": tuple(args.model), "chunk_delay": args.chunk_delay},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    partial = args.url_file.with_name(args.url_file.name + ".partial")
    partial.write_text(f"http://{host}:{port}")
    os.replace(partial, args.url_file)  # readers see the whole URL or nothing
    print(f"{args.runtime} stand-in for {', '.join(args.model)} on http://{host}:{port}", flush=True)
    threading.Thread(target=_exit_when_gone, args=(args.url_file, server), daemon=True).start()
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
