"""Forwarding one request to the upstream and streaming the answer back.

The request body streams from the client to the upstream as it arrives (uvicorn's flow control
and gateway.upstream's waits on a full socket keep a 100 MB upload to a few buffers); the
response streams back chunk by chunk as the upstream writes it (SSE included), while
gateway.usage reads token counts from the passing bytes. Hop-by-hop headers, the key and the
policy's extra parameters never reach the upstream.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gateway.errors import bad_gateway, gateway_timeout
from gateway.upstream import ConnectFailed, Disconnected, UpstreamPool, UpstreamTimeout
from gateway.usage import UsageScanner

logger = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"expect",
        b"proxy-connection",
        b"content-length",  # the framing is the upstream client's to set
    }
)
_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-connection",
    }
)


def connection_listed(headers) -> frozenset[bytes]:
    """Headers a `Connection:` header names are for this hop only (RFC 9110 7.6.1)."""
    listed = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(part.strip().lower() for part in value.split(b",") if part.strip())
    return frozenset(listed)


class ClientGone(Exception):
    """The caller hung up while we were still sending it something."""


@dataclass(slots=True)
class Outcome:
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False


def upstream_headers(scope: dict, strip: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    headers = []
    forwarded_for = None
    this_hop = connection_listed(scope["headers"])
    for name, value in scope["headers"]:
        if name in HOP_BY_HOP or name in strip or name in this_hop:
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value
            continue
        headers.append((name, value))
    client = scope.get("client")
    if client:
        address = client[0].encode("latin-1")
        headers.append((b"x-forwarded-for", forwarded_for + b", " + address if forwarded_for else address))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
    return headers


def _body_framing(scope: dict) -> tuple[bool, int | None]:
    """(whether the request has a body, its Content-Length if the caller gave one)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return True, None
            return length > 0, length
        if name == b"transfer-encoding":
            return True, None
    return False, None


async def forward(
    *,
    pool: UpstreamPool,
    scope: dict,
    receive,
    send,
    upstream: tuple[str, int, bytes],
    target: bytes,
    strip_headers: frozenset[bytes],
    extra_response_headers: list[tuple[bytes, bytes]],
    count_tokens: bool,
    on_connect_error,
) -> Outcome:
    """`upstream` is (host, port, base path); `target` the path and query after it."""
    data = None
    has_body, length = _body_framing(scope)
    if has_body:
        # The first piece decides: a body that arrived whole (most API calls) goes as bytes in
        # one write; anything longer streams piece by piece as the client sends it.
        first = await receive()
        if first["type"] == "http.disconnect":
            return Outcome(499)
        data = first.get("body", b"")
        if first.get("more_body", False):
            data = _rest_of_body(data, receive)

    host, port, base = upstream
    try:
        response = await pool.request(
            method=scope["method"],
            host=host,
            port=port,
            target=base + target,
            headers=upstream_headers(scope, strip_headers),
            body=data,
            content_length=length,
        )
    except ClientGone:
        return Outcome(499)
    except ConnectFailed as exc:
        on_connect_error()
        raise bad_gateway(f"Could not connect to the model server: {exc}.") from None
    except UpstreamTimeout:
        raise gateway_timeout("The model server did not answer in time.") from None
    except Disconnected as exc:
        raise bad_gateway(f"The model server closed the connection without an answer ({exc}).") from None

    async with response:
        this_hop = connection_listed(response.headers)
        headers = [
            (lowered, value)
            for name, value in response.headers
            if (lowered := name.lower()) not in _RESPONSE_DROP and lowered not in this_hop
        ]
        headers.extend(extra_response_headers)
        content_type = response.header(b"content-type")
        scanner = UsageScanner(content_type) if count_tokens else None
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        watcher = None
        if content_type.startswith(b"text/event-stream"):
            # A stream may run for minutes: stop reading it as soon as the caller hangs up.
            watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            async for chunk in response.chunks():
                if watcher is not None and watcher.done():
                    raise ClientGone()
                if scanner is not None:
                    scanner.feed(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientGone:
            return _outcome(499, scanner)
        except (UpstreamTimeout, Disconnected) as exc:
            # Too late for an error status: cut the connection so the caller sees a truncated body.
            logger.warning("upstream %s:%s failed mid-response: %s", host, port, exc)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        return _outcome(response.status, scanner)


async def _rest_of_body(first: bytes, receive):
    if first:
        yield first
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        if chunk:
            yield chunk


def _outcome(status: int, scanner: UsageScanner | None) -> Outcome:
    if scanner is None:
        return Outcome(status)
    scanner.finish()
    return Outcome(
        status, scanner.prompt_tokens, scanner.completion_tokens, not scanner.exact and scanner.total > 0
    )


async def _wait_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
