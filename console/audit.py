"""The audit log: one row per change, written by the action that made it, in its transaction.

Actions call `audit_record`; views pass who and from where as an `AuditContext` (built from the
request by `audit_context`). Values that are secrets never go in: pass only what a reader of the
log may see (`changes` of a credential field should say "changed", not the value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from django.http import HttpRequest

from console.models import AuditEvent


@dataclass(frozen=True)
class AuditContext:
    actor: AbstractBaseUser | None
    remote_addr: str | None = None
    via: str = ""  # web, api, admin, system


SYSTEM = AuditContext(actor=None, via="system")


def audit_context(request: HttpRequest, *, via: str) -> AuditContext:
    """Who and from where. REMOTE_ADDR only: X-Forwarded-For is the caller's to forge unless a
    trusted proxy sets it, and the console does not know its proxies."""
    user = request.user if request.user.is_authenticated else None
    return AuditContext(actor=user, remote_addr=request.META.get("REMOTE_ADDR") or None, via=via)


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [before, after]} for the fields whose value differs."""
    return {
        k: [before.get(k), after.get(k)]
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    }


def audit_record(
    *,
    context: AuditContext,
    action: str,
    obj: models.Model,
    object_type: str,
    changes: dict[str, list[Any]] | None = None,
) -> AuditEvent:
    actor = context.actor
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "system",
        action=action,
        object_type=object_type,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        changes=changes or {},
        remote_addr=context.remote_addr,
        via=context.via,
    )
