"""Read-only views of the simulated cluster's state (it is changed only through the adapter)."""

from django.contrib import admin
from django.http import HttpRequest

from deploy.models import SimulatedObject, SimulatedPod


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(SimulatedObject)
class SimulatedObjectAdmin(ReadOnlyAdmin):
    list_display = ("kind", "namespace", "name", "service", "generation", "updated_at")
    list_filter = ("kind", "namespace")
    search_fields = ("name", "service")


@admin.register(SimulatedPod)
class SimulatedPodAdmin(ReadOnlyAdmin):
    list_display = ("name", "namespace", "service", "node", "image", "created_at", "scheduled_at")
    list_filter = ("namespace", "node")
    search_fields = ("name", "service", "deployment")
