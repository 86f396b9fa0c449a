"""The gateway's ASGI application: route, check, limit, forward, meter.

Per request it touches only memory (routes and keys are cached, see gateway.cache) plus, for a
key with limits, one Redis round trip; usage goes out in batches (gateway.metering).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError

from gateway import access, conf, invalidation, metering, selectors
from gateway.cache import LoadingCache
from gateway.errors import GatewayError, not_found, unavailable
from gateway.limits import LocalLimiter, RedisLimiter
from gateway.proxy import forward
from gateway.routing import split_path
from gateway.upstream import UpstreamPool

logger = logging.getLogger(__name__)

_JSON = [(b"content-type", b"application/json")]
# Paths whose responses carry OpenAI `usage`: the only ones worth scanning for tokens.
_OPENAI_PATHS = (b"/v1/chat/completions", b"/v1/completions", b"/v1/embeddings", b"/v1/responses")


class Gateway:
    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gateway-db")
        self.routes: LoadingCache[selectors.RouteRecord] = LoadingCache(
            load=lambda ref: selectors.load_route(namespace=ref[0], name=ref[1]),
            executor=self.executor,
            ttl=_route_ttl,
        )
        self.keys: LoadingCache[selectors.KeyRecord] = LoadingCache(
            load=selectors.load_key,
            executor=self.executor,
            ttl=lambda record: conf.negative_ttl() if record is None else conf.key_ttl(),
        )
        self.namespace = settings.SERVICE_NAMESPACE
        self.pool: UpstreamPool | None = None
        self.redis = None
        self.limiter = None
        self.meter = None
        self.grpc_server = None
        self.grpc_relay = None
        self._tasks: list[asyncio.Task] = []
        self.subscribed = asyncio.Event()

    # --- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    logger.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        self.pool = UpstreamPool(connect_timeout=conf.connect_timeout(), read_timeout=conf.read_timeout())
        if conf.redis_url():
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # A bounded pool: concurrent requests queue for a connection instead of opening one each.
            # No automatic retries: redis-py would re-send a pipeline whose reply was lost (a
            # usage batch counted twice); the meter keeps a failed batch for its next flush.
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                conf.redis_url(),
                max_connections=32,
                timeout=5,
                socket_connect_timeout=2,
                socket_timeout=5,
                retry=Retry(NoBackoff(), 0),
            )
            self.redis = redis.asyncio.Redis(connection_pool=pool)
            self.limiter = RedisLimiter(
                self.redis, conf.redis_prefix(), sync_seconds=conf.meter_flush_seconds()
            )
            self.meter = metering.RedisMeter(
                self.redis,
                stream=conf.usage_stream(),
                maxlen=conf.stream_maxlen(),
                limiter=self.limiter,
                flush_seconds=conf.meter_flush_seconds(),
            )
            follow = invalidation.follow_redis(
                self.redis, conf.invalidation_channel(), self.on_invalidation, self.clear, self.subscribed
            )
        else:
            self.limiter = LocalLimiter()
            self.meter = metering.LocalMeter(
                executor=self.executor, limiter=self.limiter, flush_seconds=conf.local_usage_flush_seconds()
            )
            follow = invalidation.follow_log(
                conf.invalidation_log(), conf.poll_seconds(), self.on_invalidation, self.clear
            )
            self.subscribed.set()
        self._tasks = [
            asyncio.ensure_future(follow),
            asyncio.ensure_future(self.meter.run()),
            asyncio.ensure_future(self.limiter.run()),
        ]
        # Serve only once invalidations can reach us: otherwise a revocation could be missed.
        await asyncio.wait_for(self.subscribed.wait(), timeout=10)
        if conf.grpc_bind():
            from gateway.grpc_relay import start_server

            self.grpc_server, self.grpc_relay = await start_server(self, conf.grpc_bind())
        # Django and the imports leave ~100k long-lived objects: freeze them out of the garbage
        # collector's sight, or every full collection walks them (7 % of a profile under load).
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=5)
            await self.grpc_relay.close()
        for task in self._tasks:
            task.cancel()
        try:
            await self.meter.flush()
            await self.limiter.flush()
        except Exception:
            logger.warning("usage records or limit counts lost at shutdown", exc_info=True)
        self.pool.close()
        if self.redis is not None:
            await self.redis.aclose()
        self.executor.shutdown(wait=False)

    def on_invalidation(self, message: dict) -> None:
        if message.get("kind") == "key":
            self.keys.invalidate(message.get("prefix"))
        elif message.get("kind") == "service":
            self.routes.invalidate((message.get("namespace"), message.get("name")))
        else:
            self.clear()

    def clear(self) -> None:
        self.keys.clear()
        self.routes.clear()

    # --- one request --------------------------------------------------------------------------
    async def handle(self, scope, receive, send) -> None:
        started = time.perf_counter()
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if raw_path.startswith(b"/-/"):
            await self.own_endpoint(raw_path, send)
            return
        route = None
        key = None
        response_started = False

        async def send_upstream_response(message: dict) -> None:
            nonlocal response_started
            response_started = True
            await send(message)

        try:
            ref, path = split_path(raw_path, self.namespace)
            route = await self.cached(self.routes, ref)
            if route is None:
                raise not_found(f"No service named {ref[1]} in namespace {ref[0]}.")
            headers = dict(scope["headers"]) if route.requires_key or route.params else None
            access.check_network(route, scope.get("client"))
            if route.requires_key:
                presented = access.presented_key(route, headers)
                record = await self.cached(self.keys, access.key_prefix(presented))
                key = access.check_key(record, presented, route)
            query = scope.get("query_string", b"")
            access.check_params(route, headers, query)
            if route.upstream is None:
                raise unavailable(
                    f"Service {route.name} is {route.phase}: no replica is ready to take calls."
                )
            limit_headers = await self.limit(key) if key is not None and key.limited else []
            query = access.stripped_query(route, query)
            outcome = await forward(
                pool=self.pool,
                scope=scope,
                receive=receive,
                send=send_upstream_response,
                upstream=route.upstream,
                target=path + b"?" + query if query else path,
                strip_headers=route.strip_headers,
                extra_response_headers=limit_headers,
                count_tokens=path.startswith(_OPENAI_PATHS),
                on_connect_error=lambda: self.routes.invalidate(ref),
            )
        except GatewayError as error:
            await send(
                {"type": "http.response.start", "status": error.status, "headers": _JSON + error.headers}
            )
            await send({"type": "http.response.body", "body": error.body()})
            # Only calls that got past the key checks count as usage: refusals of unknown
            # callers belong to nobody.
            if route is not None and (key is not None or not route.requires_key) and error.status >= 429:
                self.meter_call(route, key, error.status, started)
            return
        except Exception:
            if not response_started:
                logger.exception("gateway error")
                error = GatewayError(500, "gateway_error", "The gateway failed on this call; it is logged.")
                await send({"type": "http.response.start", "status": 500, "headers": _JSON})
                await send({"type": "http.response.body", "body": error.body()})
                return
            raise  # mid-response: uvicorn cuts the connection, the caller sees a truncated body
        self.meter_call(route, key, outcome.status, started, outcome)

    async def cached(self, cache: LoadingCache, name):
        try:
            return await cache.get(name)
        except DatabaseError:
            # A miss needed the database and it is down: cached keys and routes keep working.
            logger.warning("gateway cannot read the database", exc_info=True)
            raise unavailable("The gateway cannot check this call right now; try again shortly.") from None

    async def limit(self, key: selectors.KeyRecord) -> list[tuple[bytes, bytes]]:
        try:
            return (await self.limiter.check(key)).headers
        except GatewayError:
            raise
        except Exception:
            # Redis is down: serve without limits rather than fail every call (logged, so it is
            # noticed); keys, scope and policy are still checked from the cache.
            logger.warning("rate limits unavailable, letting the call through", exc_info=True)
            return []

    def meter_call(self, route, key, status: int, started: float, outcome=None) -> None:
        self.meter.record(
            metering.Record(
                at_ms=int(time.time() * 1000),
                key_id=key.id if key is not None else None,
                service_id=route.service_id,
                status=status,
                latency_ms=int((time.perf_counter() - started) * 1000),
                prompt_tokens=outcome.prompt_tokens if outcome else 0,
                completion_tokens=outcome.completion_tokens if outcome else 0,
                estimated=outcome.estimated if outcome else False,
            )
        )

    async def own_endpoint(self, raw_path: bytes, send) -> None:
        if raw_path in (b"/-/health", b"/-/ready"):
            status, body = 200, b'{"status": "ok"}'
        else:
            status, body = 404, not_found("Unknown gateway endpoint.").body()
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": body})


def _route_ttl(route: selectors.RouteRecord | None) -> float:
    if route is None:
        return conf.negative_ttl()
    return conf.route_ttl() if route.endpoint else conf.unavailable_route_ttl()
