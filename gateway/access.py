"""Who may call: the service's allowed networks, the key (from cache), its scope and state, and
the policy's extra parameters. Pure functions over cached records: no I/O here."""

from __future__ import annotations

import hmac
import ipaddress
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote_plus

from auth.tokens import inference_key_digest, inference_key_prefix
from gateway.errors import forbidden, unauthorized
from gateway.selectors import KeyRecord, RouteRecord


def check_network(route: RouteRecord, client: tuple[str, int] | None) -> None:
    if not route.networks:
        return
    try:
        address = ipaddress.ip_address(client[0]) if client else None
    except ValueError:
        address = None
    if address is None or not any(address in network for network in route.networks):
        raise forbidden(
            f"Calls to {route.name} are not allowed from {client[0] if client else 'this address'}."
        )


def presented_key(route: RouteRecord, headers: dict[bytes, bytes]) -> str:
    """The key from the header the policy names; 401 when it is missing."""
    raw = headers.get(route.key_header.encode())
    if route.key_header == "authorization":
        if raw is None:
            raise unauthorized(f"Missing API key: {route.name} needs `Authorization: Bearer <key>`.")
        scheme, _, value = raw.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("Malformed Authorization header: send `Authorization: Bearer <key>`.")
        return value.strip()
    if raw is None or not raw.strip():
        raise unauthorized(f"Missing API key: {route.name} needs the key in the {route.key_header} header.")
    return raw.decode("latin-1").strip()


def key_prefix(key: str) -> str:
    prefix = inference_key_prefix(key)
    if prefix is None:
        raise unauthorized("Malformed API key: inference keys look like iek_<prefix>_<secret>.")
    return prefix


def check_key(record: KeyRecord | None, key: str, route: RouteRecord, now: float | None = None) -> KeyRecord:
    if record is None or not hmac.compare_digest(record.digest, inference_key_digest(key)):
        raise unauthorized("Invalid API key.")
    if record.revoked:
        raise unauthorized("This API key was revoked.")
    if record.disabled:
        raise unauthorized(
            "This API key was disabled after going unused; ask its owner to enable or replace it."
        )
    if not record.owner_active:
        raise unauthorized("The owner of this API key is deactivated.")
    now = time.time() if now is None else now
    if record.expires_at is not None and now >= record.expires_at:
        when = datetime.fromtimestamp(record.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise unauthorized(f"This API key expired at {when}.")
    if route.service_id not in record.service_ids:
        raise forbidden(f"This API key is not allowed to call {route.name}.")
    return record


def check_params(route: RouteRecord, headers: dict[bytes, bytes], query: bytes) -> None:
    if not route.params:
        return
    query_values: dict[str, list[str]] | None = None
    for param in route.params:
        if param.where == "query":
            if query_values is None:
                query_values = {}
                for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                    query_values.setdefault(name, []).append(value)
            values = query_values.get(param.name, [])
            sent = values[-1] if values else None
            label = f"query parameter {param.name}"
        else:
            raw = headers.get(param.name.encode())
            sent = raw.decode("latin-1") if raw is not None else None
            label = f"header {param.name}"
        if sent is None:
            raise forbidden(f"Missing required {label}.")
        if not hmac.compare_digest(sent.encode(), param.value.encode()):
            raise forbidden(f"Wrong value for the required {label}.")


def stripped_query(route: RouteRecord, query: bytes) -> bytes:
    names = route.query_names
    if not names or not query:
        return query
    kept = [
        part
        for part in query.split(b"&")
        if part and unquote_plus(part.split(b"=", 1)[0].decode("latin-1")) not in names
    ]
    return b"&".join(kept)
