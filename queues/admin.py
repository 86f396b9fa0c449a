from django.contrib import admin

from queues.actions import reapply_queues
from queues.models import FlavorQuota, PriorityClass, Queue, QueueUsageSample, ResourceFlavor, Team
from queues.selectors import queues_depending_on


class FlavorQuotaInline(admin.TabularInline):
    model = FlavorQuota
    extra = 0


class ReapplyingAdmin(admin.ModelAdmin):
    """Changes made here reach the cluster like the console's own: the Kueue objects of the
    queues that depend on the object are re-applied after commit (save_related runs inside the
    admin's transaction, after the many-to-many fields are saved)."""

    def affected_queues(self, obj):
        return Queue.objects.all()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        reapply_queues(self.affected_queues(form.instance))

    def delete_model(self, request, obj):
        queues = list(self.affected_queues(obj).values_list("id", flat=True))
        super().delete_model(request, obj)
        reapply_queues(Queue.objects.filter(id__in=queues))


@admin.register(Queue)
class QueueAdmin(ReapplyingAdmin):
    list_display = ("name", "cohort", "strategy", "kueue_state", "created_at")
    search_fields = ("name",)
    inlines = [FlavorQuotaInline]

    def affected_queues(self, obj):
        return Queue.objects.filter(id=obj.id)


@admin.register(ResourceFlavor)
class ResourceFlavorAdmin(ReapplyingAdmin):
    list_display = ("name", "node_labels", "node_taints", "created_at")
    search_fields = ("name",)

    def affected_queues(self, obj):
        return queues_depending_on(flavor=obj)


@admin.register(PriorityClass)
class PriorityClassAdmin(ReapplyingAdmin):
    list_display = ("name", "value", "description")


@admin.register(Team)
class TeamAdmin(ReapplyingAdmin):
    """A team's namespace and queues decide where the LocalQueues are: every queue is re-applied."""

    list_display = ("name", "namespace", "max_gpus", "max_services")
    filter_horizontal = ("members", "queues")


@admin.register(QueueUsageSample)
class QueueUsageSampleAdmin(admin.ModelAdmin):
    list_display = ("queue", "flavor", "at", "gpus_used", "gpus_quota", "services_running", "services_queued")
    list_filter = ("queue",)
    date_hierarchy = "at"
