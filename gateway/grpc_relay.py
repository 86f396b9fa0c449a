"""gRPC through the gateway (Triton's port 8001): the same routes, keys, policies, limits and
usage as HTTP, on a port of its own (GATEWAY_GRPC_PORT, default 8002), served by grpcio's
asyncio server on the gateway's event loop and sharing its caches.

gRPC has no URL path to carry the service, so the caller names it in metadata,
`x-inference-service: <service>[.<namespace>]`, beside the key in the policy's header
(`authorization: Bearer iek_...`) and the policy's extra parameters (query parameters too,
as metadata of the same name). Every method is relayed as opaque bytes by a generic handler:
no protos are compiled in, and unary and streaming calls are relayed alike (on the wire a
unary call is a stream of one message). Deadlines, metadata, status codes and details pass
through both ways; the key, the extra parameters and `x-inference-service` stay here.
Refusals are gRPC statuses: UNAUTHENTICATED (401), PERMISSION_DENIED (403), NOT_FOUND,
RESOURCE_EXHAUSTED with `retry-after` in the trailing metadata (429), UNAVAILABLE (502/503),
UNIMPLEMENTED for a runtime without gRPC (vLLM).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlencode

import grpc

from gateway import access
from gateway.errors import GatewayError, not_found, unavailable

if TYPE_CHECKING:
    from gateway.app import Gateway

logger = logging.getLogger(__name__)

SERVICE_METADATA = "x-inference-service"

_CODE_OF_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# For usage: the HTTP status a gRPC status stands for (as grpc-gateway maps them).
_STATUS_OF_CODE = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Set by gRPC (or HTTP) itself on each hop, or the gateway's own: never copied across.
_OWN_METADATA = frozenset(
    {
        SERVICE_METADATA,
        "user-agent",
        "te",
        "content-type",
        "x-forwarded-for",
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)
MAX_CHANNELS = 256  # upstream channels kept open; the least recently opened goes first


class GrpcRelay(grpc.GenericRpcHandler):
    def __init__(self, gateway: Gateway):
        self._gateway = gateway
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task] = set()

    def service(self, handler_call_details) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        async def relay(requests: AsyncIterator[bytes], context) -> None:
            await self._relay(method, requests, context)

        # No (de)serializers: messages stay bytes. A coroutine writing with context.write, not
        # an async generator: a caller's cancel then always lands in _relay's own code.
        return grpc.stream_stream_rpc_method_handler(relay)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def _relay(self, method: str, requests, context) -> None:
        gateway = self._gateway
        started = time.perf_counter()
        route = key = None
        try:
            metadata = list(context.invocation_metadata() or ())
            headers = {
                name.encode("latin-1"): value if isinstance(value, bytes) else value.encode("latin-1")
                for name, value in metadata
            }
            ref = headers.get(SERVICE_METADATA.encode(), b"").decode("latin-1").strip()
            if not ref:
                raise GatewayError(
                    400,
                    "invalid_request_error",
                    f"Name the service in the {SERVICE_METADATA} metadata: <service>[.<namespace>].",
                )
            name, _, namespace = ref.partition(".")
            route = await gateway.cached(gateway.routes, (namespace or gateway.namespace, name))
            if route is None:
                raise not_found(f"No service named {name} in namespace {namespace or gateway.namespace}.")
            access.check_network(route, _peer_address(context.peer()))
            if route.requires_key:
                presented = access.presented_key(route, headers)
                record = await gateway.cached(gateway.keys, access.key_prefix(presented))
                key = access.check_key(record, presented, route)
            access.check_params(route, headers, _params_as_query(route, headers))
            if route.upstream is None:
                raise unavailable(
                    f"Service {route.name} is {route.phase}: no replica is ready to take calls."
                )
            if route.grpc_target is None:
                raise GatewayError(
                    501,
                    "not_implemented",
                    f"{route.name} runs {route.runtime}, which serves no gRPC here; call it over HTTP.",
                )
            if key is not None and key.limited:
                await gateway.limit(key)
        except GatewayError as error:
            if route is not None and (key is not None or not route.requires_key) and error.status >= 429:
                gateway.meter_call(route, key, error.status, started)
            trailing = tuple((n.decode(), v.decode()) for n, v in error.headers if n != b"www-authenticate")
            await context.abort(
                _CODE_OF_STATUS.get(error.status, grpc.StatusCode.UNKNOWN), error.message, trailing
            )
            return

        forwarded = [
            (name, value)
            for name, value in metadata
            if name not in _OWN_METADATA
            and not name.startswith((":", "grpc-"))
            and name.encode() not in route.strip_headers
        ]
        forwarded.append(("x-forwarded-for", (_peer_address(context.peer()) or ("unknown",))[0]))
        call = self._channel(route.grpc_target).stream_stream(method)(
            requests, metadata=forwarded, timeout=context.time_remaining()
        )
        status = 500  # until the call ends one way or another
        try:
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(tuple(initial))
            async for message in call:
                await context.write(message)
            trailing = await call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            status = 200
        except grpc.aio.AioRpcError as error:
            status = _STATUS_OF_CODE.get(error.code(), 500)
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                gateway.routes.invalidate((route.namespace, route.name))
                self._drop_channel(route.grpc_target)
            context.set_trailing_metadata(tuple(error.trailing_metadata() or ()))
            context.set_code(error.code())
            context.set_details(error.details() or "")
        except asyncio.CancelledError:
            status = 499  # the caller went away
            raise
        finally:
            if not call.done():
                call.cancel()  # stop the model's work too
            gateway.meter_call(route, key, status, started)

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            if len(self._channels) >= MAX_CHANNELS:
                self._drop_channel(next(iter(self._channels)))
            channel = self._channels[target] = grpc.aio.insecure_channel(target)
        return channel

    def _drop_channel(self, target: str) -> None:
        """Forget a channel (its endpoint is gone, or too many are open); calls still on it end."""
        channel = self._channels.pop(target, None)
        if channel is not None:
            task = asyncio.get_running_loop().create_task(channel.close(grace=30))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


def _peer_address(peer: str | None) -> tuple[str, int] | None:
    """grpc's `ipv4:10.0.0.1:5000` / `ipv6:[::1]:5000` → (address, port)."""
    if not peer or ":" not in peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = unquote(rest).rpartition(":")  # grpcio writes ipv6:%5B::1%5D:5000
    return host.strip("[]").partition("%")[0], int(port) if port.isdigit() else 0


def _params_as_query(route, headers: dict[bytes, bytes]) -> bytes:
    """The policy's query parameters, which gRPC callers send as metadata of the same name."""
    pairs = [
        (param.name, headers[param.name.lower().encode()].decode("latin-1"))
        for param in route.params
        if param.where == "query" and param.name.lower().encode() in headers
    ]
    return urlencode(pairs).encode() if pairs else b""


async def start_server(gateway: Gateway, bind: str) -> tuple[grpc.aio.Server, GrpcRelay]:
    """Serve gRPC on `bind` (host:port). SO_REUSEPORT (grpc's default on Linux) lets every
    worker process of `run_gateway --workers N` bind the same port."""
    relay = GrpcRelay(gateway)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers([relay])
    if server.add_insecure_port(bind) == 0:
        raise OSError(f"gRPC: cannot listen on {bind}")
    await server.start()
    return server, relay
