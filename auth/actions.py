"""Management-API tokens: create, revoke, record use. Inference keys are in auth.key_actions."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from auth.models import ApiToken
from auth.tokens import new_token, token_digest
from console.audit import SYSTEM, AuditContext, audit_record

TOKEN_OBJECT_TYPE = "api_token"


@transaction.atomic
def api_token_create(
    *, user: AbstractBaseUser, name: str, context: AuditContext = SYSTEM
) -> tuple[ApiToken, str]:
    """Create a token; the plaintext is returned once and never stored."""
    plaintext, prefix = new_token()
    token = ApiToken.objects.create(user=user, name=name, prefix=prefix, digest=token_digest(plaintext))
    audit_record(
        context=context,
        action="create",
        obj=token,
        object_type=TOKEN_OBJECT_TYPE,
        changes={"name": [None, name], "user": [None, user.get_username()], "prefix": [None, prefix]},
    )
    return token, plaintext


@transaction.atomic
def api_token_revoke(*, token: ApiToken, context: AuditContext = SYSTEM) -> bool:
    """Revoke a token; True if this call revoked it (a second revoke changes nothing)."""
    now = timezone.now()
    revoked = ApiToken.objects.filter(id=token.id, revoked_at__isnull=True).update(revoked_at=now)
    if revoked:
        audit_record(
            context=context,
            action="revoke",
            obj=token,
            object_type=TOKEN_OBJECT_TYPE,
            changes={"revoked_at": [None, now.isoformat()]},
        )
    return bool(revoked)


def api_token_touch(*, token: ApiToken) -> None:
    """Record use, at most once a minute per token (no write on every request)."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(id=token.id).update(last_used_at=now)
