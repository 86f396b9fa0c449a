"""Encryption at rest for credentials the console must hand to the cluster (dataset keys,
hub tokens). Fernet (AES-128-CBC + HMAC-SHA256) with a key derived from CREDENTIALS_KEY, or
from SECRET_KEY when that is not set; rotating the key means re-entering the credentials."""

import base64
import json
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


class CredentialsUnreadable(Exception):
    """The stored credentials were encrypted with another key."""


@cache
def _fernet(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"inference-console credentials").derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def _current() -> Fernet:
    return _fernet(settings.CREDENTIALS_KEY or settings.SECRET_KEY)


def encrypt_json(data: dict[str, str]) -> str:
    return _current().encrypt(json.dumps(data, sort_keys=True).encode()).decode() if data else ""


def decrypt_json(token: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        return json.loads(_current().decrypt(token.encode()))
    except InvalidToken:
        raise CredentialsUnreadable(
            "Stored credentials cannot be decrypted with the current key; enter them again."
        ) from None
