from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from auth.key_rules import LIMIT_FIELDS, expiry_problem, key_state, limit_problem


class ApiToken(models.Model):
    """A management-API token: `Authorization: Bearer ick_<prefix>_<secret>`.

    Stored as its prefix (to find the row) and an HMAC of the whole token (to check it);
    the plaintext is shown once when the token is created and never kept.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. ci-pipeline.")
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class InferenceKey(models.Model):
    """A key for calling models through the gateway: `Authorization: Bearer iek_<prefix>_<secret>`
    (or the raw key in the header the service's auth policy names).

    Scoped to one or more services. Stored like `ApiToken` (prefix + HMAC, with an HMAC key of
    its own); management tokens never work at the gateway, inference keys never work on the API.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="inference_keys",
        help_text="Whose key it is: their usage and their limits.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who created it (an admin may create keys for anyone).",
    )
    name = models.CharField(max_length=100, help_text="What the key is for, e.g. chat-frontend.")
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    services = models.ManyToManyField(
        "services.InferenceService",
        related_name="inference_keys",
        help_text="The services the key may call.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="After this the gateway refuses the key. Empty: never."
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when the key went unused longer than the setting allows."
    )
    replaced_by = models.OneToOneField(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="replaces",
        help_text="The key this one was rotated to; this one works until its grace period ends.",
    )
    rpm_limit = models.PositiveIntegerField(
        "Requests per minute", null=True, blank=True, help_text="Empty: no limit."
    )
    tpm_limit = models.PositiveIntegerField(
        "Tokens per minute", null=True, blank=True, help_text="Empty: no limit."
    )
    daily_token_budget = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Tokens per day (UTC). Empty: no budget."
    )
    monthly_token_budget = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Tokens per calendar month (UTC). Empty: no budget."
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def clean(self) -> None:
        """Rules about one key, shared by the form and the serializer (via the actions). The expiry
        must be in the future when the key is created; `inference_key_update` checks it again
        only when it changes (an expired key may still be renamed)."""
        errors = {}
        problem = expiry_problem(self.expires_at, now=timezone.now()) if self._state.adding else None
        if problem:
            errors["expires_at"] = problem
        for field in LIMIT_FIELDS:
            problem = limit_problem(getattr(self, field))
            if problem:
                errors[field] = problem
        if errors:
            raise ValidationError(errors)

    @property
    def state(self) -> str:
        """active, expired, revoked, disabled or rotated (see auth.key_rules)."""
        return key_state(
            revoked_at=self.revoked_at,
            disabled_at=self.disabled_at,
            expires_at=self.expires_at,
            replaced_by_id=self.replaced_by_id,
            now=timezone.now(),
        )


class UsageHour(models.Model):
    """What went through the gateway in one hour for one key and service, rolled up from the
    gateway's Redis stream by a Celery task. `key` is empty for services with no auth."""

    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    key = models.ForeignKey(
        InferenceKey, on_delete=models.CASCADE, null=True, blank=True, related_name="usage"
    )
    service = models.ForeignKey("services.InferenceService", on_delete=models.CASCADE, related_name="usage")
    requests = models.PositiveBigIntegerField(default=0)
    errors_4xx = models.PositiveBigIntegerField(default=0)
    errors_5xx = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    latency_ms_total = models.PositiveBigIntegerField(default=0, help_text="Sum, for the mean.")

    class Meta:
        ordering = ["-hour"]
        constraints = [
            models.UniqueConstraint(fields=["hour", "key", "service"], name="usage_hour_key_service"),
            models.UniqueConstraint(
                fields=["hour", "service"],
                condition=models.Q(key__isnull=True),
                name="usage_hour_service_nokey",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.service_id}/{self.key_id or '-'}"
