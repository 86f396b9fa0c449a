"""Telling every gateway process that a key or a service's routing/policy changed.

The gateway caches keys and routes in memory and never reads the database per request. Call
these from the action that made the change: the message goes out after the transaction commits
(`transaction.on_commit`; at once outside a transaction), so a gateway that reloads on receipt
reads the new row, never the old one. Every gateway drops its cached entry within a second.

Transport:
- with REDIS_URL: one PUBLISH on `<prefix>invalidate` (gateway.conf.redis_prefix); each gateway
  process subscribes and, after any reconnect, drops its whole cache (it may have missed
  messages while away);
- the embedded default (no Redis): a line appended to `VAR_DIR/gateway/invalidations.log`, which
  the gateway (one process on the same machine) polls every 0.5 s.

A failed publish is logged and swallowed: the change is committed and the gateway's cache TTL
(60 s, GATEWAY_KEY_TTL_SECONDS) bounds how long it can be missed.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from django.db import transaction

logger = logging.getLogger(__name__)

# The log is replaced by an empty one past this size; the gateway sees the new file and drops
# its whole cache (it cannot tell what it missed), which is cheap and rare.
_LOG_MAX_BYTES = 1 << 20
_client_lock = threading.Lock()
_client: tuple[str, object] | None = None  # (url, redis.Redis): settings may change in tests


def announce_key_changed(*, prefix: str) -> None:
    """A key was created, rotated, revoked, disabled, re-scoped or had its limits changed."""
    _announce({"kind": "key", "prefix": prefix})


def announce_service_changed(*, namespace: str, name: str) -> None:
    """A service's auth policy, phase or endpoint changed, or it was deleted."""
    _announce({"kind": "service", "namespace": namespace, "name": name})


def _announce(message: dict[str, str]) -> None:
    payload = json.dumps(message, sort_keys=True)
    transaction.on_commit(lambda: _send(payload))


def _send(payload: str) -> None:
    from gateway import conf

    try:
        if conf.redis_url():
            _redis().publish(conf.invalidation_channel(), payload)
        else:
            _append_to_log(payload)
    except Exception:
        # The message is about a committed change; failing the caller would not undo it.
        logger.warning("could not announce a gateway cache invalidation", exc_info=True)


def _redis():
    global _client
    from gateway import conf

    url = conf.redis_url()
    with _client_lock:
        if _client is None or _client[0] != url:
            import redis

            _client = (url, redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2))
        return _client[1]


def _append_to_log(payload: str) -> None:
    from gateway import conf

    path = conf.invalidation_log()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size > _LOG_MAX_BYTES:
            fresh = path.with_suffix(".new")
            fresh.write_bytes(b"")
            os.replace(fresh, path)
    except FileNotFoundError:
        pass
    # One write() of a short line with O_APPEND: concurrent writers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, payload.encode() + b"\n")
    finally:
        os.close(fd)
