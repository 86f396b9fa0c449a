"""Every client or API failure becomes a ClusterError the callers act on.

TransientClusterError: worth retrying (the API server is unreachable or overloaded, a conflict,
a namespace still terminating). PermanentClusterError: retrying will not help; it carries the
API server's own message, which the console shows to the user.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import urllib3
from kubernetes.client.exceptions import ApiException

from deploy.clusters.base import ClusterError, PermanentClusterError, TransientClusterError

# Kubernetes 1.20's server-side apply answers 500 to objects it cannot type-check (numeric
# quantities, Service ports without protocol, unknown fields): sending it again will not help.
TYPED_PATCH_FAILURE = "failed to create typed patch object"


def api_message(exc: ApiException) -> str:
    """The API server's own words: the `message` of the Status body, else whatever it sent."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if body:
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
        return str(body).strip()[:500]
    if exc.reason:
        return str(exc.reason).strip()
    return f"HTTP {exc.status}"


def _status_causes(exc: ApiException) -> set[str]:
    """The `details.causes[].reason` values of a Status body."""
    try:
        status = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return set()
    if not isinstance(status, dict):
        return set()
    causes = (status.get("details") or {}).get("causes") or []
    return {str(cause.get("reason", "")) for cause in causes if isinstance(cause, dict)}


def translate_error(exc: BaseException, context: str) -> ClusterError:
    """Map a client failure to the ClusterError the callers retry on (or not)."""
    if isinstance(exc, ClusterError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or 0
        message = f"{context}: {api_message(exc)}"
        if status == 0:
            # Raised by the client itself for TLS failures: a bad CA will not fix itself.
            if "CERTIFICATE_VERIFY_FAILED" in message:
                return PermanentClusterError(message)
            return TransientClusterError(message)
        if status == 500 and TYPED_PATCH_FAILURE in message:
            return PermanentClusterError(message)
        if status in (409, 429) or 500 <= status <= 504:
            return TransientClusterError(message)
        if status == 403 and "NamespaceTerminating" in _status_causes(exc):
            # The namespace is being deleted; applying again once it is gone will work.
            return TransientClusterError(message)
        return PermanentClusterError(message)
    # urllib3 errors (MaxRetryError, ProtocolError, timeouts) and socket errors.
    return TransientClusterError(f"{context}: cannot reach the Kubernetes API server ({exc})")


@contextmanager
def api_errors(context: str) -> Iterator[None]:
    """Turn client exceptions raised inside the block into ClusterErrors; bugs pass through."""
    try:
        yield
    except ClusterError:
        raise
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate_error(exc, context) from exc
