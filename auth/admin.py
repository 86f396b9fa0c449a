from django.contrib import admin

from auth.actions import api_token_revoke
from auth.key_actions import inference_key_revoke
from auth.models import ApiToken, InferenceKey, UsageHour
from console.audit import audit_context


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    # No digest in the admin: it is useless to read and not worth exposing.
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    exclude = ("digest",)

    actions = ("revoke_tokens",)

    def has_add_permission(self, request) -> bool:
        return False  # tokens are created in the UI or by create_api_token, which show them once

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # changes go through auth.actions, which write the audit row

    @admin.action(description="Revoke selected tokens", permissions=["view"])
    def revoke_tokens(self, request, queryset) -> None:
        context = audit_context(request, via="admin")
        revoked = sum(api_token_revoke(token=token, context=context) for token in queryset)
        self.message_user(request, f"Revoked {revoked} token(s).")


@admin.register(InferenceKey)
class InferenceKeyAdmin(admin.ModelAdmin):
    """Read-only here: every change goes through auth.key_actions (audit row, gateway told);
    the API keys pages and /api/v1/keys/ edit keys, and this list can revoke them."""

    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("revoked_at", "disabled_at")
    search_fields = ("name", "prefix", "user__username")
    exclude = ("digest",)
    actions = ("revoke_keys",)

    def has_add_permission(self, request) -> bool:
        return False  # keys are created in the console or the API, which show them once

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the audit trail and usage rows keep pointing at the key

    @admin.action(description="Revoke selected keys", permissions=["view"])
    def revoke_keys(self, request, queryset) -> None:
        context = audit_context(request, via="admin")
        revoked = sum(inference_key_revoke(key=key, context=context) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).")


@admin.register(UsageHour)
class UsageHourAdmin(admin.ModelAdmin):
    list_display = ("hour", "service", "key", "requests", "errors_4xx", "errors_5xx", "prompt_tokens")
    list_filter = ("hour",)

    def has_add_permission(self, request) -> bool:
        return False  # rolled up from the gateway's metering
