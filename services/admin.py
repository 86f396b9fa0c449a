from django.contrib import admin

from services.models import InferenceService, ServiceEvent


class ServiceEventInline(admin.TabularInline):
    model = ServiceEvent
    extra = 0
    readonly_fields = ("created_at", "kind", "phase", "reason", "message", "actor")
    can_delete = False


@admin.register(InferenceService)
class InferenceServiceAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "namespace",
        "phase",
        "reason",
        "runtime",
        "queue",
        "gpu_count",
        "replicas",
        "owner",
    )
    list_filter = ("phase", "runtime", "queue")
    search_fields = ("name", "model_path")
    readonly_fields = (
        "uid", "phase", "reason", "message", "ready_replicas", "applied_revision", "applied_at",
        "observed", "observed_at", "phase_changed_at", "created_at", "updated_at",
    )  # fmt: skip
    inlines = [ServiceEventInline]


@admin.register(ServiceEvent)
class ServiceEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "service", "kind", "phase", "reason", "actor")
    list_filter = ("kind", "phase")
