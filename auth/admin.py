from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from auth.actions import api_token_revoke
from auth.key_actions import inference_key_revoke
from auth.models import ApiToken, InferenceKey, UsageHour
from auth.user_actions import user_set_active
from console.audit import audit_context

User = get_user_model()


class ConsoleUserAdmin(UserAdmin):
    """Django's user admin, except that activating or deactivating goes through
    auth.user_actions (audit row; the gateways stop accepting the user's keys at once)."""

    actions = ("deactivate_users", "activate_users")

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and obj.pk == request.user.pk:
            return (*fields, "is_active")  # nobody locks themselves out
        return fields

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Every field but is_active is saved here (a form loaded before someone else deactivated
        # the user must not write it back); is_active only by the action.
        obj.save(
            update_fields=[
                f.name for f in obj._meta.concrete_fields if not f.primary_key and f.name != "is_active"
            ]
        )
        if "is_active" in form.changed_data:
            user_set_active(user=obj, active=obj.is_active, context=audit_context(request, via="admin"))

    @admin.action(description="Deactivate selected users (their keys stop working)", permissions=["change"])
    def deactivate_users(self, request, queryset) -> None:
        self._set_active(request, queryset, active=False)

    @admin.action(description="Activate selected users", permissions=["change"])
    def activate_users(self, request, queryset) -> None:
        self._set_active(request, queryset, active=True)

    def _set_active(self, request, queryset, *, active: bool) -> None:
        if not active and queryset.filter(pk=request.user.pk).exists():
            self.message_user(request, "You cannot deactivate yourself.", level="error")
            return
        context = audit_context(request, via="admin")
        changed = sum(user_set_active(user=user, active=active, context=context) for user in queryset)
        self.message_user(request, f"{'Activated' if active else 'Deactivated'} {changed} user(s).")


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, ConsoleUserAdmin)


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
