"""Errors the gateway answers itself, always as `{"error": {"type": ..., "message": ...}}` (the
shape OpenAI clients already parse), never reaching the upstream."""

from __future__ import annotations

import json


class GatewayError(Exception):
    def __init__(
        self, status: int, type_: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or []

    def body(self) -> bytes:
        return json.dumps({"error": {"type": self.type, "message": self.message}}).encode()


def unauthorized(message: str) -> GatewayError:
    return GatewayError(
        401, "authentication_error", message, [(b"www-authenticate", b'Bearer realm="gateway"')]
    )


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, "permission_error", message)


def not_found(message: str) -> GatewayError:
    return GatewayError(404, "not_found_error", message)


def unavailable(message: str) -> GatewayError:
    return GatewayError(503, "service_unavailable", message, [(b"retry-after", b"5")])


def bad_gateway(message: str) -> GatewayError:
    return GatewayError(502, "upstream_error", message)


def gateway_timeout(message: str) -> GatewayError:
    return GatewayError(504, "upstream_timeout", message)
