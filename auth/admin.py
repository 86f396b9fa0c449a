from django.contrib import admin

from auth.models import ApiToken, InferenceKey, UsageHour


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    # No digest in the admin: it is useless to read and not worth exposing.
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    exclude = ("digest",)

    def has_add_permission(self, request) -> bool:
        return False  # tokens are created in the UI or by create_api_token, which show them once


@admin.register(InferenceKey)
class InferenceKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("revoked_at", "disabled_at")
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "created_at", "last_used_at", "replaced_by")
    exclude = ("digest",)

    def has_add_permission(self, request) -> bool:
        return False  # keys are created in the console or the API, which show them once


@admin.register(UsageHour)
class UsageHourAdmin(admin.ModelAdmin):
    list_display = ("hour", "service", "key", "requests", "errors_4xx", "errors_5xx", "prompt_tokens")
    list_filter = ("hour",)

    def has_add_permission(self, request) -> bool:
        return False  # rolled up from the gateway's metering
