from django.contrib import admin

from queues.models import FlavorQuota, PriorityClass, Queue, ResourceFlavor, Team


class FlavorQuotaInline(admin.TabularInline):
    model = FlavorQuota
    extra = 0


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ("name", "cohort", "strategy", "created_at")
    search_fields = ("name",)
    inlines = [FlavorQuotaInline]


@admin.register(ResourceFlavor)
class ResourceFlavorAdmin(admin.ModelAdmin):
    list_display = ("name", "node_labels", "created_at")
    search_fields = ("name",)


@admin.register(PriorityClass)
class PriorityClassAdmin(admin.ModelAdmin):
    list_display = ("name", "value", "description")


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "max_gpus", "max_services")
    filter_horizontal = ("members", "queues")
