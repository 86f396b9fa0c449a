from django.contrib import admin

from datasets.models import Dataset, DatasetEvent


class DatasetEventInline(admin.TabularInline):
    model = DatasetEvent
    extra = 0
    readonly_fields = ("created_at", "message")


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "phase", "owner", "created_at")
    list_filter = ("kind", "phase")
    inlines = [DatasetEventInline]
