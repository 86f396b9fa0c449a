"""The gateway's side of auth/invalidation.py: drop cached keys and routes when told to.

Redis: a subscription on `<prefix>invalidate`; every (re)subscribe drops the whole cache, since
messages sent while disconnected are lost. Embedded default: poll the invalidation log's size
every 0.5 s and read what was appended; a replaced or truncated log drops the whole cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

Handler = Callable[[dict], None]


async def follow_redis(
    redis, channel: str, handle: Handler, clear: Callable[[], None], ready: asyncio.Event
) -> None:
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            clear()
            ready.set()
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is not None and message.get("type") == "message":
                    _dispatch(message["data"], handle)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("invalidation subscription lost; resubscribing", exc_info=True)
            await asyncio.sleep(0.5)
        finally:
            try:
                await pubsub.aclose()
            except Exception:  # already broken; nothing to release
                logger.debug("closing a broken pubsub", exc_info=True)


async def follow_log(path: Path, poll_seconds: float, handle: Handler, clear: Callable[[], None]) -> None:
    identity, offset, partial = _identity(path), _size(path), b""
    while True:
        await asyncio.sleep(poll_seconds)
        try:
            current, size = _identity(path), _size(path)
            if current != identity or size < offset:
                clear()  # replaced or truncated: whatever was in between is unknown
                identity, offset, partial = current, 0, b""
            if size > offset:
                with open(path, "rb") as log:
                    log.seek(offset)
                    data = log.read(size - offset)
                offset += len(data)
                *lines, partial = (partial + data).split(b"\n")
                for line in lines:
                    _dispatch(line, handle)
        except Exception:
            logger.warning("could not read the invalidation log %s", path, exc_info=True)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _dispatch(raw: bytes | str, handle: Handler) -> None:
    try:
        message = json.loads(raw)
    except ValueError:
        logger.warning("ignoring a malformed invalidation message")
        return
    if isinstance(message, dict):
        handle(message)
