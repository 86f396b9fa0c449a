"""`/<service>/<path>` to a service and the path to forward. `<service>` is the name of a service in
SERVICE_NAMESPACE, or `<name>.<namespace>` for another namespace (service names have no dots,
so the two forms cannot collide)."""

from __future__ import annotations

from gateway.errors import not_found


def split_path(raw_path: bytes, default_namespace: str) -> tuple[tuple[str, str], bytes]:
    """Return ((namespace, name), path to forward). 404 when no service is named."""
    head, _slash, rest = raw_path[1:].partition(b"/")
    if not head:
        raise not_found(
            "Name a service: /<service>/v1/chat/completions, /<service>/v2/models/<model>/infer, ..."
        )
    ref = head.decode("latin-1")
    name, _, namespace = ref.partition(".")
    return (namespace or default_namespace, name), b"/" + rest
