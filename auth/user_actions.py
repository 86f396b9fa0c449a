"""Activating and deactivating a console user: the only write to `is_active` the console makes.

A deactivated user's API tokens are refused on their next request (auth.authentication reads the
user every time), but each gateway caches an inference key together with its owner's state for
up to GATEWAY_KEY_TTL_SECONDS. So the change is announced for every live key of the user: the
gateways reload them within a second, and the keys are refused from then on.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from auth import invalidation
from auth.models import InferenceKey
from console.audit import AuditContext, audit_record

USER_OBJECT_TYPE = "user"


@transaction.atomic
def user_set_active(*, user: AbstractBaseUser, active: bool, context: AuditContext) -> bool:
    """True if this call changed the user, False if it already was so (idempotent)."""
    changed = get_user_model().objects.filter(pk=user.pk, is_active=not active).update(is_active=active)
    if not changed:
        return False
    user.is_active = active
    audit_record(
        context=context,
        action="activate" if active else "deactivate",
        obj=user,
        object_type=USER_OBJECT_TYPE,
        changes={"is_active": [not active, active]},
    )
    live = InferenceKey.objects.filter(user=user, revoked_at__isnull=True)
    for prefix in live.values_list("prefix", flat=True):
        invalidation.announce_key_changed(prefix=prefix)  # sent after commit
    return True
