"""A mock OpenAI + Triton v2 model server on 127.0.0.1, in a thread: what the gateway forwards to.

It records every request it receives (method, path, query, headers) so tests can say the
upstream saw nothing, and streams with controlled timing so tests can check the gateway does not
buffer. Also used by bench/gateway.py (fixed latency via `latency`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class MockUpstream:
    latency: float = 0.0  # seconds before every answer (the benchmark's fixed 20 ms)
    chunk_gap: float = 0.2  # seconds between SSE chunks
    chunks: int = 5
    record: bool = True
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- handlers ---------------------------------------------------------------------------
    def _note(self, request: web.Request) -> None:
        if self.record:
            self.seen.append(Seen(request.method, request.path, request.query_string, dict(request.headers)))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        body = await request.json()
        if self.latency:
            await asyncio.sleep(self.latency)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "model": body.get("model", "mock"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fake answer"}}],
                    "usage": USAGE,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        gap = float(request.headers.get("x-mock-gap", self.chunk_gap))
        for i in range(int(request.headers.get("x-mock-chunks", self.chunks))):
            if i:
                await asyncio.sleep(gap)
            chunk = {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}],
                "usage": None,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if include_usage:
            final = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
            await response.write(f"data: {json.dumps(final)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model"}]})

    async def infer(self, request: web.Request) -> web.Response:
        self._note(request)
        body = await request.json()
        if self.latency:
            await asyncio.sleep(self.latency)
        name = request.match_info["model"]
        inputs = body.get("inputs", [])
        return web.json_response(
            {
                "model_name": name,
                "outputs": [
                    {
                        "name": "OUTPUT0",
                        "datatype": "FP32",
                        "shape": i.get("shape", [1]),
                        "data": i.get("data", []),
                    }
                    for i in inputs
                ],
            }
        )

    async def ready(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.Response(status=200)

    async def echo_size(self, request: web.Request) -> web.Response:
        """Reads the body as it streams and answers how many bytes arrived."""
        self._note(request)
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        return web.json_response({"bytes": total})

    async def fixed(self, request: web.Request) -> web.Response:
        """The benchmark's plain endpoint: fixed latency, small JSON."""
        if self.latency:
            await asyncio.sleep(self.latency)
        return web.json_response({"ok": True, "usage": USAGE})

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> MockUpstream:
        app = web.Application(client_max_size=0)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v2/models/{model}/infer", self.infer)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_post("/echo/size", self.echo_size)
        app.router.add_route("*", "/fixed", self.fixed)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        started = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.SockSite(self._runner, sock).start())
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="mock-upstream")
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the mock upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def free_port() -> int:
    """A port nothing listens on (bound, then released): the 'upstream down' address."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
