"""Telling every gateway process that a key or a service's routing/policy changed.

The gateway caches keys and routes in memory and never reads the database per request; the
console calls these after the change commits (`transaction.on_commit`) so every gateway drops
its cached entry within a second. The gateway side lives in `gateway/`.

(Stub: the gateway work fills in the transport.)
"""


def announce_key_changed(*, prefix: str) -> None:
    """A key was created, rotated, revoked, disabled, re-scoped or had its limits changed."""


def announce_service_changed(*, namespace: str, name: str) -> None:
    """A service's auth policy, phase or endpoint changed, or it was deleted."""
