"""Token strings: generation, the keyed hash stored at rest, parsing.

Two kinds that never stand in for each other: management tokens (`ick_`, the REST API) and
inference keys (`iek_`, the gateway in front of the models). Each kind has its own HMAC key, so
a digest of one kind never matches a token of the other.
"""

import functools
import hashlib
import hmac
import secrets

from django.conf import settings

TOKEN_PREFIX = "ick_"
INFERENCE_KEY_PREFIX = "iek_"
_PREFIX_LENGTH = 12  # hex characters that find the row


@functools.lru_cache(maxsize=8)
def _derived_key(kind: bytes, secret: str) -> bytes:
    # A key of its own, derived from SECRET_KEY, so digests are useless without it.
    return hashlib.sha256(b"inference-console " + kind + b"\0" + secret.encode()).digest()


def token_digest(token: str) -> str:
    key = _derived_key(b"api-token", settings.SECRET_KEY)
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def inference_key_digest(key: str) -> str:
    # Once per call through the gateway: the derivation is cached (per SECRET_KEY).
    derived = _derived_key(b"inference-key", settings.SECRET_KEY)
    return hmac.new(derived, key.encode(), hashlib.sha256).hexdigest()


def _new(kind_prefix: str) -> tuple[str, str]:
    prefix = secrets.token_hex(_PREFIX_LENGTH // 2)
    return f"{kind_prefix}{prefix}_{secrets.token_urlsafe(32)}", prefix


def _prefix_of(token: str, kind_prefix: str) -> str | None:
    if not token.startswith(kind_prefix):
        return None
    prefix, sep, _secret = token[len(kind_prefix) :].partition("_")
    return prefix if sep and len(prefix) == _PREFIX_LENGTH else None


def new_token() -> tuple[str, str]:
    """Return (plaintext token, prefix). The prefix finds the row; the digest proves the token."""
    return _new(TOKEN_PREFIX)


def token_prefix(token: str) -> str | None:
    return _prefix_of(token, TOKEN_PREFIX)


def new_inference_key() -> tuple[str, str]:
    """Return (plaintext key, prefix) for the gateway."""
    return _new(INFERENCE_KEY_PREFIX)


def inference_key_prefix(key: str) -> str | None:
    return _prefix_of(key, INFERENCE_KEY_PREFIX)
