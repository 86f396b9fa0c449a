"""The gateway's knobs. Read from Django settings when set there, else from the environment, so
tests can override them with pytest-django's `settings` fixture and child processes with env."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from console.env import env_float, env_int, env_str


def _setting(name: str, default):
    value = getattr(settings, name, None)
    if value is not None:
        return value
    if isinstance(default, float):
        return env_float(name, default)
    if isinstance(default, int):
        return env_int(name, default)
    return env_str(name, default)


def redis_url() -> str:
    return settings.REDIS_URL or ""


def redis_prefix() -> str:
    """Namespace of every Redis key and channel the gateway uses (tests give each run its own)."""
    return _setting("GATEWAY_REDIS_PREFIX", "gw:")


def invalidation_channel() -> str:
    return redis_prefix() + "invalidate"


def usage_stream() -> str:
    return redis_prefix() + "usage"


def invalidation_log() -> Path:
    """The embedded default's stand-in for pub/sub: an append-only file the gateway polls."""
    return Path(settings.VAR_DIR) / "gateway" / "invalidations.log"


def key_ttl() -> float:
    # A safety net only: changes are pushed. Bounds how stale an entry gets if a message is lost.
    return _setting("GATEWAY_KEY_TTL_SECONDS", 60.0)


def negative_ttl() -> float:
    # Unknown keys and services are remembered briefly, so a flood of bad keys stays off the DB.
    return _setting("GATEWAY_NEGATIVE_TTL_SECONDS", 5.0)


def route_ttl() -> float:
    return _setting("GATEWAY_ROUTE_TTL_SECONDS", 30.0)


def unavailable_route_ttl() -> float:
    # A service that is not Running yet is looked at again soon: it is probably starting.
    return _setting("GATEWAY_UNAVAILABLE_ROUTE_TTL_SECONDS", 2.0)


def poll_seconds() -> float:
    """Without Redis: how often the gateway looks at the invalidation log."""
    return _setting("GATEWAY_POLL_SECONDS", 0.5)


def meter_flush_seconds() -> float:
    """How often metering records are sent to Redis (one pipeline for the whole batch), and how
    often each gateway adds its limit counts to Redis and reads the totals back."""
    return _setting("GATEWAY_METER_FLUSH_SECONDS", 0.05)


def local_usage_flush_seconds() -> float:
    """Without Redis: how often the gateway writes its in-memory usage totals to the database."""
    return _setting("GATEWAY_LOCAL_USAGE_FLUSH_SECONDS", 5.0)


def connect_timeout() -> float:
    return _setting("GATEWAY_CONNECT_TIMEOUT_SECONDS", 5.0)


def read_timeout() -> float:
    """Longest silence from the upstream, before the response starts or between chunks."""
    return _setting("GATEWAY_READ_TIMEOUT_SECONDS", 300.0)


def workers() -> int:
    return _setting("GATEWAY_WORKERS", 1)


def stream_maxlen() -> int:
    """The usage stream is trimmed to about this many entries even if no roll-up runs."""
    return _setting("GATEWAY_USAGE_STREAM_MAXLEN", 1_000_000)


def forwarded_allow_ips() -> str:
    """Front proxies (comma-separated addresses) whose X-Forwarded-For is believed for the source
    network check. Empty (the default): the TCP peer is the caller, so nobody can claim another
    address with a header."""
    return _setting("GATEWAY_FORWARDED_ALLOW_IPS", "")


def grpc_bind() -> str:
    """host:port of the gateway's gRPC listener ("" when GATEWAY_GRPC_PORT is 0). run_gateway
    sets GATEWAY_GRPC_BIND from its --host and --grpc-port for its worker processes."""
    bind = env_str("GATEWAY_GRPC_BIND", "")
    if bind:
        return bind
    port = _setting("GATEWAY_GRPC_PORT", 8002)
    return f"{settings.GATEWAY_HOST}:{port}" if port else ""
