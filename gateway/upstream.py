"""The gateway's HTTP/1.1 client to model servers: keep-alive connections on asyncio protocols,
responses parsed by httptools (the parser uvicorn runs on the caller's side).

Why not aiohttp's client, which the gateway used first: in bench/gateway.py its request
machinery was most of what the gateway added to a call (a bare ASGI app on uvicorn forwarding
with aiohttp added ~1.1 ms at p50 to a 20 ms call on these machines; forwarding with this
module, ~0.45 ms; a bare TCP relay ~0.3 ms). This does what a reverse proxy needs and nothing
else: no redirects, cookies, decompression, proxies, TLS or retries beyond one.

- Request bodies: bytes go out with the head in one write; an async iterator streams with
  `Content-Length` when the caller gave one, chunked otherwise, waiting whenever the socket's
  buffer is full (so a 100 MB upload holds a few buffers, not 100 MB).
- Responses: status and headers as received, then the body as it arrives (chunked, sized or up
  to the close). Reading pauses while more than HIGH_WATER bytes wait for a slow caller.
- A connection goes back to the pool after a complete response the server did not ask to
  close and that nothing followed; idle ones are dropped after `idle_seconds` (4 s: before
  uvicorn, which vLLM runs, closes them at 5 s, so our reuse rarely races the server's close)
  or when the server closes them. An idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) whose
  body is in memory is sent once more, on a new connection, if a pooled connection turns out to
  be closed before a byte of the answer arrived; a POST is not (the server may have run it).
- Timeouts: connecting (`connect_timeout`) and every wait for the server (`read_timeout`, the
  head and each piece of the body).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
HIGH_WATER = 1024 * 1024  # response bytes waiting for the caller before reading pauses
LOW_WATER = 256 * 1024


class UpstreamError(Exception):
    """The model server could not be reached or did not answer properly."""


class ConnectFailed(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class Disconnected(UpstreamError):
    """The server closed the connection (or sent something that is not HTTP) mid-exchange."""


def parse_endpoint(endpoint: str) -> tuple[str, int, bytes]:
    """`http://host:port[/base]` → (host, port, base path without a trailing slash)."""
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the gateway reaches model servers over plain http, not {endpoint!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/").encode("latin-1")


class Response:
    """One answer, read once. Use as an async context manager: leaving it early (the caller
    hung up) closes the connection instead of returning it half-read to the pool."""

    def __init__(self, connection: _Connection, method: str):
        self._connection = connection
        self._head_only = method == "HEAD"
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []  # as received
        self._head: asyncio.Future = connection.loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._until_close = False  # neither Content-Length nor chunked: the body ends at the close
        self._keep_alive = False  # HTTP/1.1 without `Connection: close` (read with the head)
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future | None = None
        self.got_bytes = False  # whether any byte of the answer arrived (for the one retry)
        self.upload: asyncio.Task | None = None

    # --- read by the gateway ----------------------------------------------------------------
    def header(self, name: bytes) -> bytes:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if self._chunks:
                chunk = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
                self._chunks.clear()
                self._buffered = 0
                connection.resume_reading()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._complete:
                return
            self._waiter = connection.loop.create_future()
            await connection.wait(self._waiter)

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._connection.finish(self)

    # --- fed by the connection --------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._complete or self._error is not None:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
        self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the httptools parser calls its on_* methods."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]):
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self._informational = False  # inside a 1xx answer, which precedes the real one
        self._in_head = False  # between the status line and the end of the headers
        self._reading_paused = False
        self._write_paused = False
        self._drained: asyncio.Future | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: this connection cannot be trusted
            self.close()
            return
        response.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            response._fail(Disconnected(f"the model server sent something that is not HTTP ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(Disconnected("the model server closed the connection"))
        response = self.response
        if response is None:
            return
        if exc is None and response._head.done() and response._until_close:
            response._complete = True  # a clean close ends such a body; a reset cuts it
            response._wake()
        else:
            response._fail(Disconnected("the model server closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        response = self.response
        if response._complete or response._head.done():
            # A second message where one answer was due: the stream is out of step (a body on a
            # 204, more than Content-Length, a hostile server). httptools turns this into a
            # parser error, and data_received closes the connection.
            raise Disconnected("the model server sent more than one answer")
        response.headers = []
        self._in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # not the trailers of a chunked body, which are not forwarded
            self.response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        response = self.response
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._informational = True  # e.g. 103 Early Hints: the real answer follows
            return
        response.status = status
        response._keep_alive = self.parser.should_keep_alive()
        if response._head_only:
            response._complete = True  # a HEAD answer has no body, whatever its headers say
        else:
            sized = chunked = False
            for name, value in response.headers:
                lowered = name.lower()
                if lowered == b"content-length":
                    sized = True
                elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            response._until_close = not sized and not chunked and status not in (204, 304)
        if not response._head.done():
            response._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._informational:
            return
        response = self.response
        response._chunks.append(body)
        response._buffered += len(body)
        if response._buffered > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self.response
        response._complete = True
        response._wake()

    # --- used by the pool and the response --------------------------------------------------
    async def wait(self, future: asyncio.Future):
        """Wait for the server at most read_timeout."""
        timer = self.loop.call_later(self.pool.read_timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def drain(self) -> None:
        if self._write_paused:
            self._drained = self.loop.create_future()
            await self.wait(self._drained)
        if self.closed:
            raise Disconnected("the model server closed the connection")

    def resume_reading(self) -> None:
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def finish(self, response: Response) -> None:
        """The exchange is over: keep the connection for the next call if it is clean."""
        upload = response.upload
        reusable = (
            response._complete
            and response._error is None
            and not response._head_only
            and not response._until_close
            and (upload is None or upload.done())
            and response._keep_alive
            and not self.closed
        )
        if upload is not None:
            if not upload.done():
                upload.cancel()
            elif not upload.cancelled():
                upload.exception()  # seen: an upload cut short by the answer is not an error
        self.response = None
        if reusable:
            self.resume_reading()
            self.pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(UpstreamTimeout("the model server did not answer in time"))


class UpstreamPool:
    def __init__(self, *, connect_timeout: float, read_timeout: float, idle_seconds: float = 4.0):
        self.loop = asyncio.get_running_loop()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_seconds = idle_seconds
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(
        self,
        *,
        method: str,
        host: str,
        port: int,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] | None,
        content_length: int | None = None,
    ) -> Response:
        """Send one request and return once the answer's status and headers are in. `headers`
        must not hold Host, Content-Length or Transfer-Encoding: the framing is set here."""
        head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), target, _host_header(host, port))]
        head.extend(b"%s: %s\r\n" % pair for pair in headers)
        streamed = body is not None and not isinstance(body, bytes)
        if streamed:
            head.append(
                b"content-length: %d\r\n" % content_length
                if content_length is not None
                else b"transfer-encoding: chunked\r\n"
            )
        elif body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            head.append(b"content-length: %d\r\n" % len(body or b""))
        head.append(b"\r\n")
        message = b"".join(head)

        key = (host, port)
        for attempt in (1, 2):
            connection, reused = (self._acquire(key) if attempt == 1 else None), True
            if connection is None:
                connection, reused = await self._connect(key), False
            response = Response(connection, method)
            connection.response = response
            try:
                if streamed:
                    connection.transport.write(message)
                    response.upload = self.loop.create_task(
                        _upload(connection, body, chunked=content_length is None)
                    )
                    await _head_or_failed_upload(connection, response)
                else:
                    connection.transport.write(message + body if body else message)
                    await connection.wait(response._head)
                return response
            except Disconnected:
                connection.finish(response)
                if streamed or not reused or response.got_bytes or attempt == 2 or method not in _IDEMPOTENT:
                    raise
            except BaseException:
                connection.finish(response)
                raise
        raise AssertionError("unreachable")

    def _acquire(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        if now - idle[0].idle_since > self.idle_seconds:
            idle.pop(0).close()  # the oldest: one expired connection dropped per call
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            if connection.closed or connection.transport.is_closing():
                continue
            if now - connection.idle_since > self.idle_seconds:
                connection.close()
                continue
            return connection
        return None

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        try:
            _transport, connection = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Connection(self, key), key[0], key[1]),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout("the model server did not accept a connection in time") from None
        except OSError as exc:
            raise ConnectFailed(str(exc)) from None
        return connection

    def release(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, []).append(connection)

    def forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


@functools.lru_cache(maxsize=1024)
def _host_header(host: str, port: int) -> bytes:
    host = f"[{host}]" if ":" in host else host
    return (host if port == 80 else f"{host}:{port}").encode("idna")


async def _upload(connection: _Connection, body: AsyncIterator[bytes], *, chunked: bool) -> None:
    write = connection.transport.write
    async for piece in body:
        if not piece:
            continue
        write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        await connection.drain()
    if chunked:
        write(b"0\r\n\r\n")


async def _head_or_failed_upload(connection: _Connection, response: Response) -> None:
    """Wait for the answer's head while the body goes up. The server may answer before it has
    read everything (a 413, say); the caller may hang up mid-upload, and then the upload's own
    error is the one to report. The read timeout starts once the body is up: until then the
    upload's own waits are timed."""
    upload, head = response.upload, response._head
    await asyncio.wait((head, upload), return_when=asyncio.FIRST_COMPLETED)
    if not head.done():
        if upload.exception() is not None:
            raise upload.exception()
        await connection.wait(head)
    head.result()
