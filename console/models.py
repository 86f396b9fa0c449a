from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One create/update/delete/rotate/revoke done through the console or the API: who, when,
    what changed and from where. Written by the action that made the change, in its transaction."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=32, help_text="create, update, delete, rotate, revoke, ...")
    object_type = models.CharField(max_length=64, help_text="e.g. service, inference_key, queue.")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    changes = models.JSONField(default=dict, blank=True, help_text="field: [before, after]; never secrets.")
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    via = models.CharField(max_length=16, blank=True, help_text="web, api, admin, system.")

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.object_type} {self.object_repr}"
