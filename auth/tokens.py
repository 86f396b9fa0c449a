"""Token strings: generation, the keyed hash stored at rest, parsing."""

import hashlib
import hmac
import secrets

from django.conf import settings

TOKEN_PREFIX = "ick_"


def _hmac_key() -> bytes:
    # A key of its own, derived from SECRET_KEY, so token digests are useless without it.
    return hashlib.sha256(b"inference-console api-token\0" + settings.SECRET_KEY.encode()).digest()


def token_digest(token: str) -> str:
    return hmac.new(_hmac_key(), token.encode(), hashlib.sha256).hexdigest()


def new_token() -> tuple[str, str]:
    """Return (plaintext token, prefix). The prefix finds the row; the digest proves the token."""
    prefix = secrets.token_hex(6)
    return f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def token_prefix(token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    prefix, sep, _secret = token[len(TOKEN_PREFIX) :].partition("_")
    return prefix if sep and len(prefix) == 12 else None
