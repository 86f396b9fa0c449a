from django.contrib import admin

from console.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "actor_name", "action", "object_type", "object_repr", "remote_addr", "via")
    list_filter = ("action", "object_type", "via")
    search_fields = ("actor_name", "object_repr", "object_id")

    # The audit log is a record: read it, never edit it.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
