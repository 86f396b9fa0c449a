from django.contrib import admin

from queues.models import Queue


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ("name", "gpu_quota", "cpu_quota", "memory_quota_gib", "created_at")
    search_fields = ("name",)
